"""Plugin discovery, switches, and the hooks' contract with plugins."""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import pprunner
from pprunner import App, InlineSupervisor, PluginError, Returned, Status, cli
from pprunner import plugins as plugins_module
from pprunner.invocation import MAX_HEADERS_SIZE, check_headers
from pprunner.plugins import (
    Command,
    PluginEntry,
    blocked_names,
    describe,
    get_plugin_manager,
    use_entries,
)
from tests.conftest import REPO, RUN, cli_env, run_cli, wait_until

HOOKS = sorted(name for name in dir(pprunner.hookspecs) if name.startswith("pprunner_"))


def fake_distribution(folder: Path, name: str, entry_points: dict[str, str]) -> Path:
    """A ``.dist-info`` folder: importlib.metadata finds it like an installed package."""
    info = folder / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[pprunner]\n{lines}")
    return folder


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example plugin package and a broken one, 'installed' on sys.path."""
    site = fake_distribution(tmp_path / "site", "pprunner-heartbeat-file",
                             {"heartbeat_file": "pprunner_heartbeat_file"})
    fake_distribution(site, "pprunner-broken", {"broken": "no_such_plugin_module"})
    fake_distribution(site, "pprunner-provider", {"provider": "tests.plugin_provider"})
    monkeypatch.syspath_prepend(str(REPO / "examples" / "plugin_package"))
    monkeypatch.syspath_prepend(str(site))
    return site


def test_built_in_plugins_load_through_entry_points() -> None:
    plugins = get_plugin_manager()
    names = {row.name for row in describe(plugins)}
    assert {"pprunner.defaults", "sqlite", "memory", "json", "pickle"} <= names
    assert set(plugins.registry.backends) >= {"sqlite", "memory"}
    assert plugins.registry.serializer("json").safe
    assert not plugins.registry.serializer("pickle").safe


def test_a_worker_handed_its_supervisors_entry_points_loads_just_those(
        monkeypatch: pytest.MonkeyPatch) -> None:
    found = get_plugin_manager()
    monkeypatch.setattr(plugins_module, "_handed", None)  # undone after the test
    use_entries([e for e in found.entries if e.name != "msgpack"])
    handed = get_plugin_manager()
    assert {r.name for r in describe(handed)} == {r.name for r in describe(found)} - {"msgpack"}
    assert handed.entries == tuple(e for e in found.entries if e.name != "msgpack")
    assert PluginEntry("x", "pprunner.plugins:PluginEntry.load", "", "?").load() is \
        PluginEntry.load


def test_a_distribution_s_metadata_is_read_once_for_all_its_entry_points(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a distribution's metadata parses its whole file, pprunner's README
    included: once per distribution, however many entry points it has."""
    reads: list[object] = []

    class Distribution:
        @property
        def metadata(self) -> dict[str, str]:
            reads.append(self)
            return {"Name": "pprunner-many", "Version": "2.0"}

    many = Distribution()
    found = [SimpleNamespace(name=f"plugin{n}", value=f"module{n}", dist=many)
             for n in (2, 1, 3)]
    monkeypatch.setattr(metadata, "entry_points", lambda group: found)
    entries = plugins_module.entry_points()
    assert entries == tuple(PluginEntry(f"plugin{n}", f"module{n}", "pprunner-many",
                                        "pprunner-many 2.0") for n in (1, 2, 3))
    assert reads == [many]


def test_a_third_party_plugin_is_found_and_a_broken_one_reported(third_party: Path) -> None:
    plugins = get_plugin_manager()
    rows = {row.name: row for row in describe(plugins)}
    assert rows["heartbeat_file"].distribution == "pprunner-heartbeat-file 1.0"
    assert "pprunner_heartbeat" in rows["heartbeat_file"].hooks
    (failure,) = plugins.registry.failures
    assert (failure.name, failure.distribution) == ("broken", "pprunner-broken 1.0")
    assert "No module named 'no_such_plugin_module'" in failure.error
    with pytest.raises(PluginError, match="plugins that failed to load: broken"):
        plugins.registry.serializer("yaml")


def test_pprunner_register_backends_and_pprunner_register_serializers(
        third_party: Path) -> None:
    registry = get_plugin_manager().registry
    assert registry.backend_owners["scratch"] == "provider"
    assert registry.serializer_owners["sorted-json"] == "provider"
    app = App(backend="scratch://")
    app.configure(source="the test", serializer="sorted-json")  # above PPRUNNER_SERIALIZER
    handle = app.task(name="t")(lambda: None).enqueue(b=1, a=2)
    assert handle.invocation().payload == b'{"args": [], "kwargs": {"a": 2, "b": 1}}'


def test_pprunner_register_commands_adds_a_sub_command(
        third_party: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["provider-echo", "one", "two"]) == 2  # its run's exit code
    assert capsys.readouterr().out == "echo: one two\n"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "provider-echo" in capsys.readouterr().out


def test_a_plugin_command_with_a_taken_name_fails_naming_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    class Clash:
        @pprunner.hookimpl
        def pprunner_register_commands(self, register: Any) -> None:
            register(Command("status", lambda args, parser: 0))

    plugins = get_plugin_manager()
    plugins.manager.register(Clash())
    with pytest.raises(PluginError, match="registers the command 'status', which pprunner"):
        cli.build_parser(plugins)


def test_autoload_switch_keeps_only_pprunners_own_plugins(
        third_party: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPRUNNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins = get_plugin_manager()
    names = {row.name for row in describe(plugins)}
    assert "heartbeat_file" not in names and not plugins.registry.failures
    assert {"sqlite", "json"} <= names


def test_disabled_plugins_are_blocked_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPRUNNER_DISABLED_PLUGINS", "pickle, memory")
    registry = get_plugin_manager().registry
    assert "pickle" not in registry.serializers and "memory" not in registry.backends
    with pytest.raises(PluginError, match=r"unknown backend 'memory://'.*known schemes: postgres, "
                                          r"postgresql, redis"):
        registry.backend_for("memory://")


def test_a_blocked_plugin_is_not_listed_as_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPRUNNER_DISABLED_PLUGINS", "pickle")
    plugins = get_plugin_manager()
    assert "pickle" not in {row.name for row in describe(plugins)}
    assert blocked_names(plugins) == ["pickle"]


def test_the_core_cannot_be_disabled(db_url: str) -> None:
    env = cli_env(db_url, PPRUNNER_DISABLED_PLUGINS="pickle,pprunner.defaults")
    for command in (("plugins",), (*RUN, "--burst")):
        done = run_cli(*command, env=env)
        assert done.returncode == pprunner.ExitCode.CONFIG_ERROR, done.stderr
        assert done.stderr.splitlines() == [
            "pprunner: error: PPRUNNER_DISABLED_PLUGINS names pprunner.defaults, pprunner's own "
            "implementations, which cannot be disabled; a plugin overrides them by "
            "implementing the same hooks"]


def test_an_entry_point_may_name_an_object_in_a_module(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = fake_distribution(tmp_path / "site", "pprunner-object",
                             {"object": "object_plugin:plugin"})
    (site / "object_plugin.py").write_text(
        "import pprunner\n"
        "from pprunner_plugins.memory import MemoryBackend\n\n"
        "class Plugin:\n"
        "    @pprunner.hookimpl\n"
        "    def pprunner_register_backends(self, register):\n"
        "        register('objectstore', MemoryBackend)\n\n"
        "plugin = Plugin()\n")
    monkeypatch.syspath_prepend(str(site))
    plugins = get_plugin_manager()
    assert plugins.registry.failures == []
    assert plugins.registry.backend_owners["objectstore"] == "object"
    assert {row.name: row.distribution for row in describe(plugins)}["object"] == (
        "pprunner-object 1.0")


def test_trace_switch_prints_hook_calls(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("PPRUNNER_TRACE_PLUGINS", "1")
    app = App(backend="memory://")
    app.plugins.hook.pprunner_worker_started(runner=pprunner.RunnerInfo(
        id="r", kind=pprunner.invocation.RunnerKind.WORKER, pid=1))
    assert "pprunner_worker_started" in capsys.readouterr().err


def test_two_plugins_claiming_one_scheme_is_an_error() -> None:
    plugins = get_plugin_manager()
    with pytest.raises(PluginError, match="'sqlite' is registered by both sqlite and copycat"):
        plugins.registry.add_backend("copycat", "sqlite", lambda url: None)  # type: ignore


def test_the_example_plugin_adds_an_option_and_observes_heartbeats(
        third_party: Path, tmp_path: Path, db_url: str) -> None:
    alive = tmp_path / "alive.json"
    env = cli_env(db_url, PYTHONPATH=f"{third_party}:{REPO / 'examples' / 'plugin_package'}:"
                                      f"{REPO}")
    assert "--heartbeat-file" in run_cli("run", "--help", env=env).stdout
    done = run_cli("run", "--app", "tests.apps:app", "--inline", "--burst",
                   "--heartbeat-file", str(alive), env=env)
    assert done.returncode == 0, done.stderr
    state = json.loads(alive.read_text())
    assert [r["kind"] for r in state["runners"]] == ["inline"]


class Wrapper:
    """An execute wrapper: sees every task call and its outcome."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @pprunner.hookimpl(wrapper=True)
    def pprunner_execute(self, task: pprunner.Task, args: list[Any]) -> Any:
        outcome = yield
        self.seen.append((task.name, outcome.value))
        return outcome


class Replacement:
    """A firstresult execute implementation that takes over running tasks."""

    @pprunner.hookimpl
    def pprunner_execute(self, task: pprunner.Task, args: list[Any]) -> Returned:
        return Returned(f"replaced {task.name}{tuple(args)}")


def test_execute_wrappers_and_replacements_take_part(db_url: str) -> None:
    app = App(backend="memory://")

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    wrapper = Wrapper()
    app.plugins.manager.register(wrapper)
    first = add.enqueue(1, 2)
    InlineSupervisor(app, burst=True).run()
    assert first.result(timeout=1) == 3
    assert wrapper.seen == [("add", 3)]

    app.plugins.manager.register(Replacement())
    second = add.enqueue(1, 2)
    InlineSupervisor(app, burst=True).run()
    assert second.result(timeout=1) == "replaced add(1, 2)"


class Tagger:
    """An enqueue wrapper that gives every job a header, and keeps what was sent."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.sent: list[Any] = []

    @pprunner.hookimpl(wrapper=True)
    def pprunner_enqueue(self, job: Any, headers: dict[str, str]) -> Any:
        headers["tenant"] = self.value
        sent = yield
        self.sent.append(sent)
        return sent


def _app_with_headers_task() -> tuple[App, pprunner.Task[[], dict[str, str]]]:
    app = App(backend="memory://")

    @app.task(name="headers")
    def headers() -> dict[str, str]:
        context = pprunner.current_context()
        assert context is not None and context.invocation is not None
        return dict(context.invocation.headers)

    return app, headers


def test_pprunner_enqueue_wrappers_add_headers_the_worker_reads() -> None:
    app, headers = _app_with_headers_task()
    assert headers.enqueue().invocation().headers == {}  # none unless a plugin adds some
    tagger = Tagger("acme")
    app.plugins.manager.register(tagger)
    handle = headers.enqueue()
    assert tagger.sent == [handle.invocation()]  # the job as stored
    assert handle.invocation().headers == {"tenant": "acme"}
    InlineSupervisor(app, burst=True).run()
    assert handle.result(timeout=1) == {"tenant": "acme"}


def test_headers_past_the_bound_are_refused_and_nothing_is_stored() -> None:
    app, headers = _app_with_headers_task()
    app.plugins.manager.register(Tagger("x" * MAX_HEADERS_SIZE))
    with pytest.raises(ValueError, match=rf"headers take {MAX_HEADERS_SIZE + 6} bytes; at "
                                         rf"most {MAX_HEADERS_SIZE} are allowed \(keys: tenant"):
        headers.enqueue()
    assert app.backend.counts()[Status.PENDING] == 0


@pytest.mark.parametrize("headers", [{"n": 1}, {"": "empty key"}, {2: "x"}])
def test_headers_are_string_keys_and_values(headers: dict[Any, Any]) -> None:
    with pytest.raises(ValueError, match="headers are non-empty string keys with string values"):
        check_headers(headers)


class SettingsListener:
    def __init__(self) -> None:
        self.told: list[int] = []

    @pprunner.hookimpl
    def pprunner_configure(self, config: pprunner.config.Config) -> None:
        self.told.append(config.max_attempts)


def test_pprunner_configure_tells_plugins_each_new_config_once_and_late_ones_too() -> None:
    app = App(backend="memory://", max_attempts=7)
    early = SettingsListener()
    app.plugins.manager.register(early)  # after the app's plugins were configured
    assert app.plugins is app.plugins and early.told == [7]
    app.configure(source="the test", max_attempts=2)
    assert app.plugins is not None and early.told == [7, 2]
    late = SettingsListener()
    app.plugins.manager.register(late)
    assert late.told == [7, 2]  # every call so far, the settings in force last


class JobWatcher:
    """Sees a supervisor's life and every job's attempts and enqueues."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    @pprunner.hookimpl
    def pprunner_supervisor_booting(self, supervisor: Any) -> None:
        self.seen.append(("booting", str(supervisor.processes)))

    @pprunner.hookimpl
    def pprunner_supervisor_stopped(self, supervisor: Any) -> None:
        self.seen.append(("stopped", str(supervisor.processes)))

    @pprunner.hookimpl(wrapper=True)
    def pprunner_enqueue(self, job: Any) -> Any:
        sent = yield
        self.seen.append(("enqueued", job.task))
        return sent

    @pprunner.hookimpl
    def pprunner_attempt_started(self, job: Any, context: Any) -> None:
        assert context.job is job  # the current job, as tasks see it
        self.seen.append(("started", job.task, str(job.attempts)))

    @pprunner.hookimpl
    def pprunner_attempt_ended(self, job: Any, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.seen.append((outcome, job.task, str(job.attempts)))


def test_attempt_and_enqueue_hooks_say_what_happened_to_each_job() -> None:
    app = App(backend="memory://")

    @app.task(name="ok")
    def ok() -> int:
        return 1

    @app.task(name="retry_once", max_attempts=2)
    def retry_once() -> int:
        attempts = pprunner.current_context().invocation.attempts  # type: ignore[union-attr]
        if attempts == 1:
            raise pprunner.Retry("again", delay=0)
        return attempts

    @app.task(name="broken")
    def broken() -> None:
        raise ValueError("no")

    @app.task(name="unstorable")
    def unstorable() -> object:
        return {1}  # json cannot encode a set: the invocation fails

    watcher = JobWatcher()
    app.plugins.manager.register(watcher)
    for task in (ok, retry_once, broken, unstorable):
        task.enqueue()
    InlineSupervisor(app, burst=True).run()
    assert watcher.seen[:5] == [("enqueued", "ok"), ("enqueued", "retry_once"),
                                ("enqueued", "broken"), ("enqueued", "unstorable"),
                                ("booting", "0")]
    assert watcher.seen[-1] == ("stopped", "0")
    attempts = watcher.seen[5:-1]
    assert {task: [event for event in attempts if event[1] == task] for task in app.tasks} == {
        "ok": [("started", "ok", "1"), ("succeeded", "ok", "1")],
        "retry_once": [("started", "retry_once", "1"), ("retried", "retry_once", "1"),
                       ("started", "retry_once", "2"), ("succeeded", "retry_once", "2")],
        "broken": [("started", "broken", "1"), ("failed", "broken", "1")],
        "unstorable": [("started", "unstorable", "1"), ("failed", "unstorable", "1")]}
    # each attempt's end follows its start at once: one job at a time
    assert all(attempts[i][1:] == attempts[i + 1][1:] for i in range(0, len(attempts), 2))


def test_pprunner_pause_on_wait_marks_the_waiter_paused(app: App, supervise) -> None:
    from tests import apps_waiting

    supervise(processes=2)
    parent = apps_waiting.parent_of_slow_child.enqueue()
    wait_until(lambda: parent.status() == Status.PAUSED, what="the parent to pause")
    assert parent.result(timeout=30) == "child done"
    assert parent.status() == Status.SUCCESS


def test_every_hook_is_documented_and_exercised() -> None:
    """The hook reference page is generated from the specifications' docstrings
    (tests/test_docs.py builds it and finds each hook's heading there)."""
    reference = (REPO / "docs" / "plugins" / "hooks.md").read_text()
    assert re.search(r"^::: pprunner\.hookspecs$", reference, re.MULTILINE)
    tests = "".join(path.read_text() for path in (REPO / "tests").glob("test_*.py")
                    if path.name != "test_plugins.py")
    tests += (REPO / "examples" / "plugin_package" / "pprunner_heartbeat_file.py").read_text()
    tests += (REPO / "tests" / "host_adapter.py").read_text()  # driven by test_push_mode.py
    tests += Path(__file__).read_text().split("def test_every_hook_is")[0]
    for hook in HOOKS:
        doc = getattr(pprunner.hookspecs, hook).__doc__ or ""
        assert len(doc.split()) >= 8, f"{hook} has no docstring to be its reference"
        assert hook in tests, f"{hook} is not exercised by any test"
    assert sys.modules["pprunner.hookspecs"]  # the list above is not empty by accident
    assert len(HOOKS) >= 9
    assert metadata.version("pprunner") == pprunner.__version__
