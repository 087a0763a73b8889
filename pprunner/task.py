"""The public face: App, the @app.task decorator, enqueue, and result handles.

The task registry of an App is an allow-list: a worker runs only task names
registered here, never a dotted path that arrives in a message.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

import attrs

from . import config as config_module
from .backend import Backend
from .errors import AppLoadError, ConfigError, ResultTimeout, TaskFailed
from .invocation import Invocation, Status, new_invocation_id
from .payloads import Codec
from .plugins import Plugins, get_plugin_manager
from .retries import Backoff

P = ParamSpec("P")
R = TypeVar("R")


class App:
    """A set of tasks bound to one backend and its configuration.

    ``App(backend="sqlite:///jobs.db", serializer="json", processes=4, ...)``:
    keyword arguments are the lowest configuration layer (see
    :mod:`pprunner.config`). ``include`` names modules that register more
    tasks on this app; workers import them after the app's own module.
    Nothing is opened until first used, so an app
    module can be imported anywhere, including by every worker.
    """

    def __init__(self, backend: str | None = None, *, name: str | None = None,
                 include: Iterable[str] = (), **settings: Any) -> None:
        unknown = sorted(set(settings) - set(config_module.SETTING_NAMES))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r} (from App(...) arguments); "
                              f"known settings: {', '.join(config_module.SETTING_NAMES)}")
        self._settings: dict[str, Any] = {"backend": backend, **settings}
        self._overrides: dict[str, Any] = {}
        self._overrides_source = "command line"
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: modules that define more of this app's tasks; :func:`load_app` imports them
        self.include = tuple(include)
        #: ``module:attribute`` workers import to rebuild this app
        self.import_path: str | None = None
        self._defined_in: str = sys._getframe(1).f_globals.get("__name__", "")
        self.name = name or self._defined_in
        self._config: config_module.Config | None = None
        self._plugins: Plugins | None = None
        self._backend: Backend | None = None
        self._create_store = True
        self._codec: Codec | None = None
        #: task name -> the serializer it was declared with (only that task accepts it)
        self._task_serializers: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<pprunner.App {self.name} tasks={len(self.tasks)}>"

    # -- configuration and collaborators ----------------------------------------

    def configure(self, source: str = "command line", *, replace: bool = False,
                  **values: Any) -> None:
        """Override settings with the highest precedence (the CLI layer).

        Values of None are ignored; ``replace=True`` drops earlier overrides, and
        :meth:`open_existing_only` with them. Closes the backend so the next use
        opens the configured one.
        """
        if replace:
            self._overrides.clear()
            self._create_store = True
        self._overrides.update({k: v for k, v in values.items() if v is not None})
        self._overrides_source = source
        self._config = None
        self._codec = None
        self.close()

    @property
    def config(self) -> config_module.Config:
        if self._config is None:
            self._config = config_module.load(self._settings, self._overrides,
                                              overrides_source=self._overrides_source)
        return self._config

    def use_plugins(self, plugins: Plugins) -> None:
        """Take ``plugins``, a manager built already (the command line's, for its
        options), instead of building one on first use: a build scans the installed
        distributions and loads every plugin, ~20 ms of each start. Ignored once
        the app has one."""
        if self._plugins is None:
            self._plugins = plugins

    @property
    def plugins(self) -> Plugins:
        """The plugin manager, told this app's settings (``pprunner_configure``)."""
        if self._plugins is None:
            self._plugins = get_plugin_manager()
        return self._plugins.configure(self.config)

    @property
    def backend(self) -> Backend:
        """This process's connection to the configured backend, opened on first use."""
        if self._backend is None:
            self._backend = self.plugins.registry.backend_for(self.config.backend,
                                                              create=self._create_store)
            self._backend.keep_waiting = self._producer_patience
        return self._backend

    def open_existing_only(self) -> None:
        """From now on open the backend's store only if it exists: a missing one is
        a ConfigError, not a new empty store. For callers that only read or change
        what is stored (``pprunner status``, ``show``, ``retry``...), where creating
        one would hide a mistyped path behind an empty queue."""
        self._create_store = False
        self.close()

    def _producer_patience(self, outage_s: float) -> bool:
        """A producer (enqueue, result, the CLI) waits out an outage for
        ``outage_timeout``, then gets a BackendError instead of hanging."""
        return outage_s < self.config.outage_timeout

    @property
    def codec(self) -> Codec:
        """How this app encodes, signs, checks and decodes arguments and results."""
        if self._codec is None:
            self._codec = Codec(self.plugins.registry.serializers, self.config,
                                self._task_serializers)
        return self._codec

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # -- tasks ---------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(self, *, name: str | None = None, max_attempts: int | None = None,
             retry_on: tuple[type[BaseException], ...] = (),
             retry_backoff: Backoff | None = None, time_limit: float | None = None,
             soft_time_limit: float | None = None, serializer: str | None = None,
             ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fn: Any = None, /, *, name: str | None = None,  # type: ignore[misc]
             **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., ...)``.

        Options (see :class:`Task`): ``max_attempts``, ``retry_on``,
        ``retry_backoff``, ``time_limit``, ``soft_time_limit``, ``serializer``.
        """
        def register(function: Callable[..., Any]) -> Task[Any, Any]:
            task = Task(self, function, name or default_task_name(function), **options)
            if task.name in self.tasks:
                raise ValueError(f"task name {task.name!r} is registered twice")
            self.tasks[task.name] = task
            if task.own_serializer is not None:
                self._task_serializers[task.name] = task.own_serializer
            return task

        return register(fn) if fn is not None else register

    def handle(self, invocation_id: str) -> Handle:
        """A handle on an existing invocation, e.g. one enqueued elsewhere."""
        return Handle(self, invocation_id)

    def locate(self) -> str:
        """The ``module:attribute`` path that rebuilds this app in a worker."""
        if self.import_path:
            return self.import_path
        module = sys.modules.get(self._defined_in)
        module_name = importable_name(self._defined_in)
        if module_name is None:
            raise AppLoadError(f"an app defined in {UNIMPORTABLE_SCRIPT} cannot be rebuilt in "
                               f"worker processes; {MAKE_IT_IMPORTABLE}")
        for attribute, value in (vars(module) if module is not None else {}).items():
            if value is self:
                self.import_path = f"{module_name}:{attribute}"
                return self.import_path
        raise AppLoadError(f"cannot find this app as a global of module {self._defined_in!r}; "
                           "pass its import path as 'module:attribute'")


class Task(Generic[P, R]):
    """A registered function. Calling it runs it here; ``enqueue`` queues it.

    :param max_attempts: how often an invocation may be started, counting
        retries and workers that died under it (default: the setting).
    :param retry_on: exception types that earn another attempt (a task may
        also ``raise pprunner.Retry()``); anything else fails at once.
    :param retry_backoff: the pause before each retry (default ``Backoff()``:
        1 s doubling to 10 minutes, with jitter).
    :param time_limit: seconds after which the supervisor kills the worker
        running it and fails the invocation (default: the setting).
    :param soft_time_limit: seconds after which
        :class:`~pprunner.errors.SoftTimeLimitExceeded` is raised inside it.
    :param serializer: encode this task's arguments and results with this
        serializer instead of the app's; workers accept it for this task
        only (e.g. ``"cloudpickle"`` for one task that takes a lambda).
    """

    def __init__(self, app: App, function: Callable[P, R], name: str, *,
                 max_attempts: int | None = None,
                 retry_on: tuple[type[BaseException], ...] = (),
                 retry_backoff: Backoff | None = None, time_limit: float | None = None,
                 soft_time_limit: float | None = None, serializer: str | None = None) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"task {name!r}: max_attempts must be >= 1, got {max_attempts}")
        for option, value in (("time_limit", time_limit), ("soft_time_limit", soft_time_limit)):
            if value is not None and value <= 0:
                raise ValueError(f"task {name!r}: {option} must be > 0, got {value}")
        self.app = app
        self.function = function
        self.name = name
        self._max_attempts = max_attempts
        self.retry_on = tuple(retry_on)
        self.retry_backoff = retry_backoff or Backoff()
        self._time_limit = time_limit
        self._soft_time_limit = soft_time_limit
        #: the serializer this task was declared with, if any
        self.own_serializer = serializer
        functools.update_wrapper(self, function)

    @property
    def max_attempts(self) -> int:
        return self._max_attempts or self.app.config.max_attempts

    @property
    def time_limit(self) -> float | None:
        return self._time_limit or self.app.config.time_limit

    @property
    def soft_time_limit(self) -> float | None:
        return self._soft_time_limit or self.app.config.soft_time_limit

    @property
    def serializer(self) -> str:
        return self.own_serializer or self.app.config.serializer

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<pprunner.Task {self.name}>"

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Handle:
        """Queue one invocation and return its handle at once.

        Refuses a task named after ``__main__`` (see :func:`default_task_name`):
        workers import modules by name, never as ``__main__``, so none could run it.
        """
        invocation = self._invocation(args, kwargs)
        self.app.plugins.send_new(invocation, self.app.backend.enqueue)
        return Handle(self.app, invocation.id)

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> Handle:
        """:meth:`enqueue` from a coroutine: the backend's own asynchronous route
        (``Backend.enqueue_async``) stores it, so the loop is not blocked meanwhile.
        ``pprunner_enqueue`` hooks see the invocation before it is stored."""
        outgoing: list[Invocation] = []
        self.app.plugins.send_new(self._invocation(args, kwargs), outgoing.append)
        (invocation,) = outgoing
        await self.app.backend.enqueue_async(invocation)
        return Handle(self.app, invocation.id)

    def _invocation(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Invocation:
        """A new invocation of this task with these arguments, encoded."""
        if self.name.startswith("__main__."):
            raise AppLoadError(f"task {self.name!r} is defined in {UNIMPORTABLE_SCRIPT}, so "
                               f"no worker could run it; {MAKE_IT_IMPORTABLE}")
        invocation_id, serializer = new_invocation_id(), self.serializer
        invocation = Invocation(
            id=invocation_id, task=self.name, serializer=serializer,
            payload=self.app.codec.encode_call(invocation_id, self.name, serializer,
                                               list(args), dict(kwargs)),
            max_attempts=self.max_attempts,
        )
        return invocation


#: where an app or task is that no worker can import, and what to do about it
UNIMPORTABLE_SCRIPT = "a script run as __main__ that is not importable under a module name"
MAKE_IT_IMPORTABLE = ("define it in an importable module, or run the script with python -m "
                      "(a file whose name is a valid module name, e.g. bench.py, not my-bench.py)")


def default_task_name(function: Callable[..., Any]) -> str:
    """``module.qualname``, with the name workers import the module by when it runs as
    ``__main__`` (see :func:`importable_name`); ``__main__.qualname`` when there is none."""
    module = importable_name(function.__module__) or function.__module__
    return f"{module}.{function.__qualname__}"


def importable_name(module_name: str) -> str | None:
    """The name under which a worker imports the module ``module_name`` is known by here.

    Only ``__main__`` differs: run with ``python -m pkg.mod`` it is ``pkg.mod``; run as
    a file (``python bench.py``) it is the module that file is imported as from this
    ``sys.path`` (``bench``), when importing that name would load this very file.
    None when there is none (``python -c``, ``my-bench.py``, a name that another
    module shadows): then no worker can import what it defines.
    """
    if module_name != "__main__":
        return module_name
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return str(spec.name)
    path = getattr(main, "__file__", None)
    return _module_name_of_file(Path(path).resolve()) if path else None


def _module_name_of_file(file: Path) -> str | None:
    """The dotted name that imports ``file`` from this ``sys.path``, if one does."""
    for entry in sys.path:
        try:
            parts = file.with_suffix("").relative_to(Path(entry or os.curdir).resolve()).parts
        except ValueError:
            continue
        if file.suffix != ".py" or not all(part.isidentifier() for part in parts):
            continue
        name = ".".join(parts)
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin is not None and Path(spec.origin).resolve() == file:
            return name
    return None


@attrs.frozen(repr=False)
class Handle:
    """Where an enqueued invocation can be followed: ``id``, ``status()``, ``result()``."""

    app: App
    id: str

    def __repr__(self) -> str:
        return f"<pprunner.Handle {self.id}>"

    def invocation(self) -> Invocation:
        """The full record as the backend has it now."""
        return self.app.backend.get(self.id)

    def status(self) -> Status:
        """The current status (a ``str`` enum: ``h.status() == "SUCCESS"``)."""
        return self.invocation().status

    def result(self, timeout: float | None = None, *, strategy: str | None = None) -> Any:
        """Wait for the outcome and return the task's value.

        Raises :class:`~pprunner.errors.TaskFailed` if it failed and
        :class:`~pprunner.errors.ResultTimeout` if ``timeout`` seconds pass
        first. Called inside a running task, the wait goes through the
        pause-on-wait hook (``strategy``, default the ``wait_strategy``
        setting), so a fixed pool cannot deadlock on it.
        """
        (invocation,) = wait([self], timeout, strategy=strategy)
        return outcome_of(self.app, invocation)

    async def result_async(self, timeout: float | None = None, *,
                           strategy: str | None = None) -> Any:
        """:meth:`result` from a coroutine, with no thread per wait: every coroutine
        of the loop shares one watcher (see :mod:`pprunner.awaiting`). ``await
        handle`` is ``await handle.result_async()``.

        Raises TaskFailed and ResultTimeout as :meth:`result` does (ResultTimeout
        is a ``TimeoutError``: ``asyncio.TimeoutError`` on 3.11+). Inside an
        ``async def`` task it waits as :meth:`result` does there, through the
        pause-on-wait hook (``strategy``), so a fixed pool cannot deadlock on it.
        """
        from .awaiting import wait_async  # asyncio is imported by those who await

        (invocation,) = await wait_async(self.app, [self.id], timeout, strategy)
        return outcome_of(self.app, invocation)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result_async().__await__()


def wait(handles: Sequence[Handle], timeout: float | None = None, *,
         strategy: str | None = None) -> list[Invocation]:
    """Wait until every handle's invocation is final; return them, in order.

    Inside a running task this goes through the pause-on-wait hook; outside
    it simply blocks. Raises ResultTimeout when ``timeout`` runs out first.
    """
    from .worker import current_context  # a worker-only concern, imported late

    if not handles:
        return []
    app = handles[0].app
    context = current_context()
    if context is not None and context.invocation is not None:
        return context.wait_for([h.id for h in handles], timeout, strategy)
    deadline = None if timeout is None else time.monotonic() + timeout
    done = []
    for handle in handles:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        invocation = app.backend.wait(handle.id, left)
        if not invocation.status.is_final:
            raise ResultTimeout(f"invocation {handle.id} is still {invocation.status} "
                                f"after {timeout} s")
        done.append(invocation)
    return done


def gather(handles: Sequence[Handle], timeout: float | None = None, *,
           strategy: str | None = None) -> list[Any]:
    """The results of several handles, in order; TaskFailed for the first that failed."""
    return [outcome_of(handle.app, invocation) for handle, invocation
            in zip(handles, wait(handles, timeout, strategy=strategy), strict=True)]


def outcome_of(app: App, invocation: Invocation) -> Any:
    """The decoded result of a final invocation, or TaskFailed."""
    if invocation.status is Status.FAILED:
        error = invocation.error
        raise TaskFailed(invocation.id, invocation.task,
                         error.type if error else "Unknown", error.message if error else "",
                         error.traceback if error else "")
    assert invocation.result is not None
    return app.codec.decode_result(invocation)


def load_app(path: str) -> App:
    """Import ``module:attribute`` (``module`` alone means ``module:app``).

    The working directory is put on ``sys.path`` first, as ``python -m``
    would, so ``pprunner run --app myproject.tasks`` works from the project.
    """
    module_name, _, attribute = path.partition(":")
    attribute = attribute or "app"
    if not module_name:
        raise AppLoadError(f"--app {path!r}: expected 'module:attribute'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppLoadError(f"cannot import app {path!r}: {type(exc).__name__}: {exc}") from exc
    try:
        app = getattr(module, attribute)
    except AttributeError:
        raise AppLoadError(f"cannot load app {path!r}: module {module_name!r} has no "
                           f"attribute {attribute!r}") from None
    if not isinstance(app, App):
        raise AppLoadError(f"{path!r} is a {type(app).__name__}, not a pprunner.App")
    app.import_path = f"{module_name}:{attribute}"
    for extra in app.include:
        try:
            importlib.import_module(extra)
        except Exception as exc:
            raise AppLoadError(f"app {path!r} includes {extra!r}, which cannot be imported: "
                               f"{type(exc).__name__}: {exc}") from exc
    return app
