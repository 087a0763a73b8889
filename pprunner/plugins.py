"""Builds the plugin manager and the registry of backends and serializers.

Plugins are named by entry points in the ``pprunner`` group, a module
(``pkg.plugin``) or an object in one (``pkg.plugin:instance``), loaded as
every entry-point host does; the built-in ones are declared in pprunner's
own ``pyproject.toml`` exactly like a third party's, so both take the same
path. The core's own implementations (:mod:`pprunner.defaults`) are no
plugin: they are always registered. Switches, read from the environment
when the manager is built:

``PPRUNNER_DISABLE_PLUGIN_AUTOLOAD=1``
    load only pprunner's own plugins, no third-party ones;
``PPRUNNER_DISABLED_PLUGINS=name,name``
    block these entry-point names; naming the core is a :class:`PluginError`
    (as pytest refuses ``-p no:`` for its essential plugins), since nothing
    would spawn workers or run tasks without it;
``PPRUNNER_TRACE_PLUGINS=1``
    print every hook call and result to stderr.

A plugin that fails to import is recorded, with its error, instead of
stopping everything: ``pprunner plugins`` shows it, and asking for a backend
or serializer it would have provided names the failure.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import pluggy

from . import defaults, hookspecs
from .backend import Backend
from .config import Config
from .errors import PluginError
from .serializer import Serializer

if TYPE_CHECKING:
    import argparse

    from .invocation import Invocation
    from .jobs import Call

#: a new job, pulled or pushed
Job = TypeVar("Job", "Invocation", "Call")

ENTRY_POINT_GROUP = "pprunner"
OWN_DISTRIBUTION = "pprunner"
#: the name the core's own implementations are registered under
CORE = "pprunner.defaults"


def install_extra(extra: str) -> str:
    """The command that installs one of pprunner's extras into this environment, for
    the messages that name a missing library.

    pprunner is installed from a clone, not from a package index, so ``pip
    install 'pprunner[extra]'`` would fail: the command names the clone pprunner
    runs from (an editable install, a checkout on ``sys.path``), or else the
    folder it was installed from (PEP 610's ``direct_url.json``).
    """
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        return f"pip install -e '{root}[{extra}]'"
    return f"pip install '{_installed_from() or OWN_DISTRIBUTION}[{extra}]'"


def _installed_from() -> str | None:
    """The local folder or archive pprunner was installed from, if it was."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        origin = importlib.metadata.distribution(OWN_DISTRIBUTION).read_text("direct_url.json")
        url = urllib.parse.urlparse(json.loads(origin or "{}").get("url", ""))
        if url.scheme == "file":
            return urllib.parse.unquote(url.path)
    return None


@attrs.frozen
class PluginFailure:
    name: str
    distribution: str
    error: str


@attrs.define
class Registry:
    """What the loaded plugins provide, by name, with who provided it."""

    backends: dict[str, Callable[[str], Backend]] = attrs.Factory(dict)
    backend_owners: dict[str, str] = attrs.Factory(dict)
    serializers: dict[str, Serializer] = attrs.Factory(dict)
    serializer_owners: dict[str, str] = attrs.Factory(dict)
    failures: list[PluginFailure] = attrs.Factory(list)

    def add_backend(self, plugin: str, scheme: str, factory: Callable[[str], Backend]) -> None:
        _refuse_duplicate("backend scheme", scheme, plugin, self.backend_owners)
        self.backends[scheme] = factory
        self.backend_owners[scheme] = plugin

    def add_serializer(self, plugin: str, serializer: Serializer) -> None:
        _refuse_duplicate("serializer", serializer.name, plugin, self.serializer_owners)
        self.serializers[serializer.name] = serializer
        self.serializer_owners[serializer.name] = plugin

    def backend_for(self, url: str, *, create: bool = True) -> Backend:
        """A backend for ``url``; ``create=False``: one that refuses to create a
        store that does not exist yet (:attr:`Backend.create`)."""
        scheme = url.partition(":")[0].lower()
        if "://" not in url or scheme not in self.backends:
            raise PluginError(
                f"unknown backend {url!r}: no plugin provides the {scheme!r} scheme; "
                f"known schemes: {', '.join(sorted(self.backends)) or 'none'}"
                + self._failure_hint()
            )
        backend = self.backends[scheme](url)
        backend.create = create
        return backend

    def serializer(self, name: str) -> Serializer:
        try:
            return self.serializers[name]
        except KeyError:
            raise PluginError(
                f"unknown serializer {name!r}; known serializers: "
                f"{', '.join(sorted(self.serializers)) or 'none'}" + self._failure_hint()
            ) from None

    def _failure_hint(self) -> str:
        if not self.failures:
            return ""
        failed = "; ".join(f"{f.name}: {f.error}" for f in self.failures)
        return f" (plugins that failed to load: {failed})"


def _refuse_duplicate(what: str, name: str, plugin: str, owners: dict[str, str]) -> None:
    if name in owners:
        raise PluginError(f"{what} {name!r} is registered by both {owners[name]} and {plugin}")


@attrs.frozen
class PluginEntry:
    """One entry point of the ``pprunner`` group, as plain data: what a supervisor
    hands its workers (:func:`use_entries`), so that no worker imports
    :mod:`importlib.metadata` and scans every installed distribution again."""

    name: str
    #: ``module`` or ``module:attribute``, as the entry point says
    value: str
    #: the distribution's name, and ``name version`` for people
    distribution: str
    described: str

    def load(self) -> Any:
        """The module or object named, as :meth:`importlib.metadata.EntryPoint.load`."""
        module, _, attribute = self.value.partition(":")
        target = importlib.import_module(module.strip())
        for part in filter(None, attribute.partition("[")[0].strip().split(".")):
            target = getattr(target, part)
        return target


@attrs.define
class Plugins:
    """The plugin manager plus the registry built from its discovery hooks."""

    manager: pluggy.PluginManager
    registry: Registry
    #: the settings the plugins were last told (``pprunner_configure``)
    _configured_for: Config | None = None
    #: the entry points it was built from (loaded or not)
    entries: tuple[PluginEntry, ...] = ()

    @property
    def hook(self) -> Any:
        return self.manager.hook

    def configure(self, config: Config) -> Plugins:
        """Tell the plugins this process's settings (``pprunner_configure``), once per
        Config; returns itself. Historic: a plugin registered later hears them too."""
        if config is not self._configured_for:
            self.hook.pprunner_configure.call_historic(
                kwargs={"config": config, "plugins": self})
            self._configured_for = config  # only once they took it: an error comes again
        return self

    def send_new(self, job: Job, send: Callable[[Job], None]) -> Job:
        """Send a new job through ``pprunner_enqueue``; returns it as sent. Straight to
        ``send`` while no plugin implements the hook (the usual case): the core's
        default would only call it, and a hook call costs microseconds per job."""
        hook = self.hook.pprunner_enqueue
        if all(impl.plugin_name == CORE for impl in hook.get_hookimpls()):
            send(job)
            return job
        sent: Job = hook(job=job, headers=dict(job.headers), send=send)
        return sent


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


#: set in a worker process to its supervisor's entry points (see :func:`use_entries`)
_handed: tuple[PluginEntry, ...] | None = None


def use_entries(entries: Sequence[PluginEntry]) -> None:
    """Build every plugin manager of this process from ``entries`` instead of the
    installed distributions: a worker gets its supervisor's, so both load the same
    plugins and the worker starts faster."""
    global _handed
    _handed = tuple(entries)


def entry_points() -> tuple[PluginEntry, ...]:
    """The ``pprunner`` group's entry points, by name (handed ones in a worker)."""
    if _handed is not None:
        return _handed
    from importlib import metadata  # here: a worker that was handed them never needs it

    # ``dist.name`` and ``dist.version`` parse the distribution's whole metadata file
    # (pprunner's carries its README) on every access: read once per distribution, it
    # costs a start ~3 ms, where reading it per entry point cost ~55 ms
    named: dict[Any, tuple[str, str]] = {}
    found = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        dist = getattr(ep, "dist", None)
        if dist is None:
            found.append(PluginEntry(ep.name, ep.value, "", "?"))
            continue
        if dist not in named:
            meta = dist.metadata
            named[dist] = (meta["Name"], meta["Version"])
        name, version = named[dist]
        found.append(PluginEntry(ep.name, ep.value, name, f"{name} {version}"))
    return tuple(found)


@attrs.frozen
class Command:
    """A ``pprunner`` sub-command a plugin adds
    (:func:`~pprunner.hookspecs.pprunner_register_commands`).

    :param run: ``run(args, parser)`` carries it out; returns the exit code.
    :param arguments: ``arguments(parser)`` adds its options and positionals.
    """

    name: str
    run: Callable[[argparse.Namespace, argparse.ArgumentParser], int]
    help: str = ""
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


def get_plugin_manager() -> Plugins:
    """Build a fresh manager: specs, core defaults, entry-point plugins, registry."""
    manager = pluggy.PluginManager("pprunner")
    manager.add_hookspecs(hookspecs)
    manager.register(defaults, name=CORE)
    registry = Registry()

    autoload = not _env_flag("PPRUNNER_DISABLE_PLUGIN_AUTOLOAD")
    blocked = {n.strip() for n in os.environ.get("PPRUNNER_DISABLED_PLUGINS", "").split(",")}
    if CORE in blocked:
        raise PluginError(f"PPRUNNER_DISABLED_PLUGINS names {CORE}, pprunner's own "
                          "implementations, which cannot be disabled; a plugin overrides them "
                          "by implementing the same hooks")
    for name in sorted(blocked - {""}):
        manager.set_blocked(name)
    entries = entry_points()
    for ep in entries:
        own = ep.distribution == OWN_DISTRIBUTION
        if (not autoload and not own) or manager.is_blocked(ep.name):
            continue
        if manager.get_plugin(ep.name) is not None:
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = ep.load()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            registry.failures.append(PluginFailure(ep.name, ep.described, error))
            continue
        manager.register(plugin, name=ep.name)
    manager.check_pending()

    _collect(manager, registry)
    if _env_flag("PPRUNNER_TRACE_PLUGINS"):
        manager.trace.root.setwriter(sys.stderr.write)
        manager.enable_tracing()
    return Plugins(manager=manager, registry=registry, entries=entries)


def _collect(manager: pluggy.PluginManager, registry: Registry) -> None:
    """Ask each plugin's discovery hooks in turn, remembering who registered what."""
    for impl in manager.hook.pprunner_register_backends.get_hookimpls():
        plugin = impl.plugin_name
        impl.function(register=lambda scheme, factory, _p=plugin: registry.add_backend(
            _p, scheme, factory))
    for impl in manager.hook.pprunner_register_serializers.get_hookimpls():
        plugin = impl.plugin_name
        impl.function(register=lambda serializer, _p=plugin: registry.add_serializer(
            _p, serializer))


def announce(caller: Any, **kwargs: Any) -> None:
    """Call the notification hook ``caller`` (``plugins.hook.NAME``) unless nothing
    implements it: pluggy spends about a microsecond on a call with no
    implementation, too much to pay for nothing on every job or enqueue."""
    if caller.get_hookimpls():
        caller(**kwargs)


def blocked_names(plugins: Plugins) -> list[str]:
    """The names ``PPRUNNER_DISABLED_PLUGINS`` blocked."""
    return sorted(name for name, plugin in plugins.manager.list_name_plugin() if plugin is None)


@attrs.frozen
class PluginRow:
    name: str
    distribution: str
    hooks: tuple[str, ...]


def describe(plugins: Plugins) -> list[PluginRow]:
    """The loaded plugins with their distributions and implemented hooks."""
    distributions = {ep.name: ep.described for ep in plugins.entries}
    rows = []
    for name, plugin in plugins.manager.list_name_plugin():
        if plugin is None:
            continue  # blocked: pluggy keeps the name, nothing is loaded
        hooks = tuple(sorted(
            caller.name for caller in plugins.manager.get_hookcallers(plugin) or ()
        ))
        rows.append(PluginRow(name, distributions.get(name, "pprunner (core)"), hooks))
    return rows
