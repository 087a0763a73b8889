"""The pynenc runner plugin with real processes, on pynenc's SQLite components.

pynenc's memory components cannot be shared with worker processes (its own
process runners refuse them too: ``mem_compatible()`` is False), so every
test here runs on SQLite, one database file per test. The runner runs in a
thread of this process (as pynenc's own tests run runners) or, for signals
and the command line, as ``pynenc --app tests.pynenc_tasks.app runner start``.

pynenc missing: skipped here, a failure in CI (``PPRUNNER_REQUIRE_PYNENC=1``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

if os.environ.get("PPRUNNER_REQUIRE_PYNENC") != "1":
    pytest.importorskip("pynenc", reason="pynenc is not installed (pip install -e "
                        "'.[pynenc]', Python >= 3.11); CI sets PPRUNNER_REQUIRE_PYNENC=1")

from pynenc.invocation.status import InvocationStatus

from tests import pynenc_tasks as tasks
from tests.conftest import wait_until

pytestmark = [
    pytest.mark.slow, pytest.mark.pynenc, pytest.mark.timeout(90),
    # pynenc's own: its serializer's jsonpickle call, and the runner run in a thread here
    pytest.mark.filterwarnings("ignore:keys will default to True:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Running in a secondary thread:UserWarning"),
]

REPO = Path(__file__).resolve().parent.parent
S = InvocationStatus


def use_database(path: Path) -> None:
    """Point the app (the producer, and any runner started from this process) at ``path``."""
    tasks.app.config_values = {**(tasks.app.config_values or {}), "sqlite_db_path": str(path)}
    tasks.app._reset_cached_components()


def history(invocation: Any, until: InvocationStatus | None = None) -> list[InvocationStatus]:
    """Its status history; pynenc writes history in threads of whichever process made
    the change, so a record can land after the status itself: wait for ``until``."""
    def statuses() -> list[InvocationStatus]:
        invocation.app.state_backend.wait_for_all_async_operations()
        return [h.status_record.status
                for h in invocation.app.state_backend.get_history(invocation.invocation_id)]

    if until is not None:
        wait_until(lambda: until in statuses(), what=f"{until.value} in the history")
    return statuses()


def result(invocation: Any, timeout: float = 30) -> Any:
    wait_until(lambda: invocation.status.is_final(), timeout=timeout,
               what=f"invocation {invocation.invocation_id} to finish")
    return invocation.result


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Any]:
    """A PprunnerRunner (2 workers) in a thread of this process, stopped afterwards."""
    with threaded_runner(tmp_path) as running:
        yield running


@contextlib.contextmanager
def threaded_runner(tmp_path: Path, **settings: Any) -> Iterator[Any]:
    """The app's runner in a thread of this process; with pynenc config ``settings``,
    a new one of its class (the app's caches its configuration)."""
    use_database(tmp_path / "pynenc.db")
    tasks.app.config_values = {**(tasks.app.config_values or {}), **settings}
    runner = type(tasks.app.runner)(tasks.app) if settings else tasks.app.runner
    thread = threading.Thread(target=runner.run, name="pynenc-runner", daemon=True)
    thread.start()
    wait_until(lambda: len(runner.get_active_child_runner_ids()) == 2,
               timeout=30, what="two ready workers")
    try:
        yield runner
    finally:
        runner.stop_runner_loop()
        thread.join(30)
        for name in settings:
            tasks.app.config_values.pop(name)
    assert not thread.is_alive()


@pytest.fixture
def cli_runner(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``pynenc --app tests.pynenc_tasks.app runner start``, as a user starts it, with
    a 1 s hard time limit set the pynenc way (PYNENC__PPRUNNER_TIME_LIMIT)."""
    database = tmp_path / "pynenc.db"
    use_database(database)
    env = {**os.environ, "PYNENC__SQLITE_DB_PATH": str(database),
           "PYNENC__PPRUNNER_TIME_LIMIT": "1", "PYTHONPATH": str(REPO)}
    with started_runner("tests.pynenc_tasks.app", REPO, env, tmp_path / "runner.log",
                        workers=2) as process:
        yield process


@contextlib.contextmanager
def started_runner(app: str, folder: Path, env: dict[str, str], log_path: Path,
                   workers: int) -> Iterator[subprocess.Popen[bytes]]:
    """``pynenc --app APP runner start`` in ``folder``, once ``workers`` workers run;
    afterwards it and its workers are killed and reaped, whatever the test did."""
    pynenc = Path(sys.executable).with_name("pynenc")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(pynenc), "--app", app, "runner", "start"], cwd=folder,
                                   env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_until(lambda: len(_workers(process)) >= workers, timeout=30,
                   what=f"{workers} workers (log: {log_path})")
        yield process
    finally:
        family = [process, *_workers(process)]
        for proc in family:
            if proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_running():
                proc.kill()
        process.wait(10)
        psutil.wait_procs([p for p in family if isinstance(p, psutil.Process)], timeout=10)


#: a user's project: the app module, and the runner's settings in [tool.pynenc.runner]
#: of its pyproject.toml, where pynenc's docs put them
PROJECT_MODULE = "killed_runner_app"
PROJECT_APP = """
import os
import time

from pynenc.builder import PynencBuilder

app = (PynencBuilder().app_id("pprunner-killed-runner").sqlite({database!r})
       .custom_config(runner_cls="PprunnerRunner", cached_status_time=0.0,
                      logging_level="warning")
       .build())


@app.task
def stall_first_time(marker: str) -> int:
    \"\"\"Runs until its runner is killed, the first time (a marker file remembers).\"\"\"
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(120)
    return os.getpid()
"""
PROJECT_CONFIG = "[tool.pynenc.runner]\nnum_processes = 1\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A project folder (``tmp_path/project``) and its app module, imported here as
    the producer imports it."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / f"{PROJECT_MODULE}.py").write_text(
        PROJECT_APP.format(database=str(tmp_path / "pynenc.db")))
    (folder / "pyproject.toml").write_text(PROJECT_CONFIG)
    monkeypatch.syspath_prepend(str(folder))
    try:
        yield importlib.import_module(PROJECT_MODULE)
    finally:
        sys.modules.pop(PROJECT_MODULE, None)


def _workers(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(process.pid).children(recursive=True)
                if ("pprunner worker" in " ".join(p.cmdline()) or p.name().startswith("pprunner"))
                and "pprunner template" not in " ".join(p.cmdline())]  # forked from it
    except psutil.NoSuchProcess:
        return []


def test_selected_by_runner_cls_alone() -> None:
    from pprunner_plugins.pynenc import PprunnerRunner

    assert type(tasks.app.runner) is PprunnerRunner
    assert not PprunnerRunner.mem_compatible()


def test_pprunner_metrics_port_is_read_from_pynenc_s_config(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pprunner_plugins.pynenc.config import ConfigPprunnerRunner, supervisor_config

    assert supervisor_config(ConfigPprunnerRunner(config_values={})).metrics_port is None
    chosen = ConfigPprunnerRunner(config_values={"pprunner_metrics_port": "127.0.0.1:9100"})
    assert supervisor_config(chosen).metrics_port == "127.0.0.1:9100"
    monkeypatch.setenv("PYNENC__PPRUNNER_METRICS_PORT", "9101")
    assert supervisor_config(ConfigPprunnerRunner(config_values={})).metrics_port == "9101"


def test_pprunner_spare_workers_is_read_from_pynenc_s_config() -> None:
    from pprunner_plugins.pynenc.config import ConfigPprunnerRunner, supervisor_config

    assert supervisor_config(ConfigPprunnerRunner(config_values={})).spare_workers == 0
    chosen = ConfigPprunnerRunner(config_values={"pprunner_spare_workers": 1})
    assert supervisor_config(chosen).spare_workers == 1


def test_fan_out_runs_on_every_worker(runner: Any) -> None:
    invocations = [tasks.add(n, 1) for n in range(40)]
    assert [result(i) for i in invocations] == [n + 1 for n in range(40)]
    pids = {result(tasks.whoami()) for _ in range(20)}
    workers = {r.pid for r in runner.supervisor.live_runners()[1:]}
    assert pids <= workers and len(workers) == 2
    assert runner.max_parallel_slots == 2


def test_a_sigkilled_workers_invocation_runs_again(runner: Any, tmp_path: Path) -> None:
    """How soon is measured by the benchmarks (crash_recovery), not asserted here."""
    before = set(runner.get_active_child_runner_ids())
    invocation = tasks.die_once(str(tmp_path / "died"))
    survivor = result(invocation)
    statuses = history(invocation, until=S.SUCCESS)
    assert statuses.count(S.RUNNING) == 2
    assert S.RUNNING_RECOVERY in statuses and S.REROUTED in statuses
    assert S.KILLED not in statuses  # a death is recovered, not killed on purpose
    dead = before - set(runner.get_active_child_runner_ids())
    assert len(dead) == 1  # the dead runner id gets no more heartbeats
    assert survivor in {r.pid for r in runner.supervisor.live_runners()[1:]}


def test_an_invocation_its_workers_keep_dying_under_fails_after_max_attempts(
        tmp_path: Path) -> None:
    """The deaths are counted from pynenc's own history: each one left a recovery
    record there."""
    with threaded_runner(tmp_path, pprunner_max_attempts=2):
        poison = tasks.always_die()
        with pytest.raises(Exception, match="died twice under it"):
            result(poison)
        statuses = history(poison, until=S.FAILED)
        assert statuses.count(S.RUNNING_RECOVERY) == 1 and statuses.count(S.RUNNING) == 2
        assert result(tasks.add(2, 2)) == 4  # the pool serves on


def test_as_many_waiting_parents_as_workers_complete(runner: Any) -> None:
    parents = [tasks.parent_of(4), tasks.parent_of(3)]  # two workers, two waiting parents
    assert [result(p, timeout=60) for p in parents] == [6, 3]
    for parent in parents:
        statuses = history(parent, until=S.SUCCESS)
        assert S.PAUSED in statuses and S.RESUMED in statuses


def test_a_soft_time_limit_raises_in_the_task_and_its_worker_serves_on(
        tmp_path: Path) -> None:
    with threaded_runner(tmp_path, pprunner_soft_time_limit=0.5) as runner:
        workers = set(runner.get_active_child_runner_ids())
        sleeping = tasks.sleep(30)
        with pytest.raises(Exception, match="soft time limit exceeded"):
            result(sleeping)
        assert result(tasks.add(1, 2)) == 3
        assert set(runner.get_active_child_runner_ids()) == workers  # nobody was killed


def test_started_with_pynenc_cli_time_limit_and_sigterm(cli_runner: Any) -> None:
    spinning = tasks.spin()
    with pytest.raises(Exception, match="hard time limit of 1 s"):
        result(spinning)
    assert S.RUNNING in history(spinning, until=S.FAILED)
    assert result(tasks.add(2, 3)) == 5  # the replaced worker serves
    sleeping = tasks.sleep(30)
    wait_until(lambda: sleeping.status == S.RUNNING, what="the sleep to run")
    workers = _workers(cli_runner)
    cli_runner.send_signal(signal.SIGTERM)
    assert cli_runner.wait(30) == 0
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive  # no worker outlives the runner
    statuses = history(sleeping, until=S.REROUTED)
    assert S.KILLED in statuses  # pynenc's stop contract: KILLED, then REROUTED
    running = tasks.app.orchestrator.count_invocations(statuses=[S.RUNNING, S.PENDING])
    assert running == 0


def test_idle_workers_cost_next_to_nothing(cli_runner: Any, record_property: Any) -> None:
    assert result(tasks.add(1, 1)) == 2
    family = [psutil.Process(cli_runner.pid), *_workers(cli_runner)]
    before = sum(sum(p.cpu_times()[:2]) for p in family)
    time.sleep(2.0)
    used = sum(sum(p.cpu_times()[:2]) for p in family) - before
    record_property("idle_cpu_share_of_a_core", round(used / 2.0, 3))
    # PersistentProcessRunner's two idle children use ~1.9 cores here; loose bound
    assert used / 2.0 < 0.5, f"idle runner used {used / 2.0:.0%} of a core"


def test_scaling_and_reload_by_signal_as_a_pprunner_supervisor(cli_runner: Any) -> None:
    """SIGTTIN/SIGTTOU add and retire a worker, SIGHUP replaces every one (pynenc's
    own CLI keeps SIGTERM and SIGINT); work goes on meanwhile."""
    before = {p.pid for p in _workers(cli_runner)}
    cli_runner.send_signal(signal.SIGTTIN)
    wait_until(lambda: len(_workers(cli_runner)) == 3, timeout=30, what="a third worker")
    cli_runner.send_signal(signal.SIGTTOU)
    wait_until(lambda: len(_workers(cli_runner)) == 2, timeout=30, what="back to two")
    cli_runner.send_signal(signal.SIGHUP)
    wait_until(lambda: not before & {p.pid for p in _workers(cli_runner)}, timeout=60,
               what="every worker replaced")
    assert result(tasks.add(20, 22)) == 42


@pytest.mark.parametrize("section", ["tool.pynenc", "tool.pynenc.runner",
                                     "tool.pynenc.pprunnerrunner"])
def test_runner_settings_are_read_in_each_section_pynenc_reads(
        section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pynenc's docs put num_processes under [tool.pynenc.runner]; ours shows
    [tool.pynenc]: both work, and the runner class's own section too."""
    from pprunner_plugins.pynenc.config import ConfigPprunnerRunner, supervisor_config

    (tmp_path / "pyproject.toml").write_text(
        f"[{section}]\nnum_processes = 3\npprunner_max_tasks_per_child = 7\n")
    monkeypatch.chdir(tmp_path)
    config = supervisor_config(ConfigPprunnerRunner(config_values={}))
    assert (config.processes, config.max_tasks_per_child) == (3, 7)


def test_a_dead_runner_of_this_host_is_swept_and_another_host_s_is_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invocations RUNNING under runner ids whose process is gone on this host are
    rerouted by any runner's sweep; one of another host keeps its invocation."""
    from pynenc.runner.runner_context import RunnerContext

    from pprunner_plugins.pynenc import orphans

    use_database(tmp_path / "pynenc.db")
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    here = RunnerContext("PprunnerWorker", pid=exited.pid)
    elsewhere = RunnerContext("PprunnerWorker", pid=exited.pid, hostname="elsewhere.invalid")

    def held_by(owner: RunnerContext, *statuses: InvocationStatus) -> Any:
        invocation = tasks.add(1, 2)
        for status in (S.PENDING, *statuses):
            tasks.app.orchestrator.set_invocation_status(invocation.invocation_id, status, owner)
        return invocation

    for owner in (here, elsewhere):
        tasks.app.state_backend.store_runner_context(owner)
        tasks.app.orchestrator.register_runner_heartbeats([owner.runner_id])
    running, paused = held_by(here, S.RUNNING), held_by(here, S.RUNNING, S.PAUSED)
    elsewhere_running = held_by(elsewhere, S.RUNNING)
    monkeypatch.setattr(orphans, "SILENCE", 0.0)  # their last heartbeat was just now
    sweep = orphans.OrphanSweep(tasks.app.runner)
    assert set(sweep.sweep()) == {running.invocation_id, paused.invocation_id}
    assert history(running, until=S.REROUTED)[-2:] == [S.RUNNING_RECOVERY, S.REROUTED]
    assert history(paused, until=S.REROUTED)[-2:] == [S.KILLED, S.REROUTED]  # as a stop's
    assert elsewhere_running.status == S.RUNNING
    assert sweep.sweep() == []  # a dead runner id is swept once


def test_process_alive_tells_a_reused_pid_from_its_owner() -> None:
    from pprunner_plugins.pynenc.orphans import process_alive

    me = psutil.Process().create_time()
    assert process_alive(os.getpid(), registered_at=me)
    assert not process_alive(os.getpid(), registered_at=me - 60)  # registered before it ran
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    assert not process_alive(exited.pid, registered_at=time.time())


def test_a_sigkilled_runners_invocation_is_taken_back_by_the_next_runner(
        project: Any, tmp_path: Path, record_property: Any) -> None:
    """``kill -9`` of the runner: its worker exits with it, and the next runner
    started on this host reroutes the invocation it left RUNNING at once, not
    after pynenc's ten-minute dead-runner bound."""
    folder = tmp_path / "project"
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    app_spec = f"{PROJECT_MODULE}.app"
    with started_runner(app_spec, folder, env, tmp_path / "first.log", workers=1) as first:
        invocation = project.stall_first_time(str(tmp_path / "stalled"))
        wait_until(lambda: invocation.status == S.RUNNING, timeout=30, what="it to run")
        orphaned = _workers(first)
        first.kill()
        first.wait(10)
        _gone, alive = psutil.wait_procs(orphaned, timeout=10)
        assert not alive  # the worker does not outlive its runner
    assert invocation.status == S.RUNNING  # left behind by the dead runner
    with started_runner(app_spec, folder, env, tmp_path / "second.log", workers=1) as second:
        started = time.monotonic()
        assert result(invocation, timeout=30) in {p.pid for p in _workers(second)}
        record_property("seconds_to_finish_after_the_next_runner_started",
                        round(time.monotonic() - started, 2))
        assert len(_workers(second)) == 1  # num_processes from [tool.pynenc.runner]
        statuses = history(invocation, until=S.SUCCESS)
    assert statuses.count(S.RUNNING) == 2
    assert S.RUNNING_RECOVERY in statuses and S.KILLED not in statuses  # pynenc's recovery
