"""Worker lifecycle under real faults: limits, recycling, crash loops, diagnostics."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import psutil
import pytest

import pprunner
import pprunner.supervisor
from pprunner import App, ExitCode, Invocation, Status, Supervisor, TaskFailed
from pprunner.spawn import describe_exit
from pprunner.worker import Limits, Supervision
from tests import apps
from tests.conftest import cli_env, live_workers, run_cli, start_supervisor, wait_until

pytestmark = pytest.mark.slow


class Exits:
    """Records each worker exit with how many booted workers were alive besides it."""

    def __init__(self) -> None:
        self.supervisor: pprunner.Supervisor | None = None
        self.seen: list[tuple[Any, int]] = []
        self.lock = threading.Lock()

    @pprunner.hookimpl
    def pprunner_worker_exited(self, runner: pprunner.RunnerInfo, exit: Any) -> None:
        assert self.supervisor is not None
        others = sum(c.booted for c in self.supervisor.workers.values())
        with self.lock:
            self.seen.append((exit, others))


@pytest.fixture
def exits(app: App) -> Any:
    recorder = Exits()
    app.plugins.manager.register(recorder, name="test-exits")
    yield recorder
    app.plugins.manager.unregister(name="test-exits")


def test_hard_time_limit_kills_the_worker_and_fails_the_invocation(app: App, supervise,
                                                                  exits: Exits) -> None:
    exits.supervisor = supervisor = supervise(processes=1)
    (first,) = supervisor.workers
    with pytest.raises(TaskFailed) as failure:
        apps.overstays.enqueue().result(timeout=30)
    assert failure.value.remote_type == "TimeLimitExceeded"
    assert "hard time limit of 0.5 s" in failure.value.remote_message
    assert apps.add.enqueue(1, 1).result(timeout=30) == 2  # a replacement took over
    assert first not in supervisor.workers
    assert [exit.cause for exit, _ in exits.seen] == ["time_limit"]


def test_a_task_that_retries_on_its_time_limit_gets_another_attempt(
        app: App, supervise) -> None:
    supervise(processes=1)
    handle = apps.overstays_once.enqueue()
    assert handle.result(timeout=30) == 2
    assert [e.type for e in handle.invocation().history] == ["TimeLimitExceeded"]


def test_soft_time_limit_raises_inside_the_task(app: App, supervise) -> None:
    supervise(processes=1)
    assert apps.cleans_up_after_soft_limit.enqueue().result(timeout=30) == "cleaned up"
    with pytest.raises(TaskFailed) as failure:
        apps.ignores_soft_limit.enqueue().result(timeout=30)
    assert failure.value.remote_type == "pprunner.errors.SoftTimeLimitExceeded"


class Reports:
    """Stands in for a worker's channel to its supervisor."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, *message: Any) -> None:
        self.sent.append(message)


def _invocation_of(task: pprunner.Task[Any, Any]) -> Invocation:
    return Invocation(id=f"inv-{task.name}", task=task.name, payload=b"", serializer="json")


def test_invocations_without_a_soft_limit_make_no_timer_calls(monkeypatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(signal, "setitimer", lambda *args: calls.append(args) or (0.0, 0.0))
    supervision = Supervision(Reports())  # type: ignore[arg-type]
    for _ in range(3):
        supervision.started(_invocation_of(apps.add), Limits())
        supervision.finished(_invocation_of(apps.add))
    assert calls == []


def test_a_nested_invocation_suspends_the_enclosing_soft_limit_and_restores_it() -> None:
    limited = App(name="soft").task(name="limited", soft_time_limit=60)(lambda: None)
    supervision = Supervision(Reports())  # type: ignore[arg-type]
    previous = signal.signal(signal.SIGALRM, lambda *args: None)  # never the default: exit
    runner_timer = signal.setitimer(signal.ITIMER_REAL, 0)  # pytest-timeout's, if it uses one
    try:
        supervision.started(_invocation_of(limited), Limits(soft=limited.soft_time_limit))
        assert 59 < signal.getitimer(signal.ITIMER_REAL)[0] <= 60
        supervision.started(_invocation_of(apps.add), Limits())  # runs nested, no limit
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
        supervision.finished(_invocation_of(apps.add))
        assert 59 < signal.getitimer(signal.ITIMER_REAL)[0] <= 60  # the rest of the outer one
        supervision.finished(_invocation_of(limited))
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    finally:
        signal.signal(signal.SIGALRM, previous)
        signal.setitimer(signal.ITIMER_REAL, *runner_timer)


def test_max_tasks_per_child_recycles_without_losing_anything(
        app: App, supervise, exits: Exits) -> None:
    app.configure(source="the test", max_tasks_per_child=3)
    exits.supervisor = supervisor = supervise(processes=2)
    # A worker past its limit serves on until its replacement has booted, so
    # capacity never drops: how many tasks that takes depends on how fast this
    # machine boots a worker, so batches go in until two generations have served.
    pids: set[int] = set()
    deadline = time.monotonic() + 60
    while len(pids) < 4 and time.monotonic() < deadline:
        handles = [apps.whoami_slowly.enqueue(0.05) for _ in range(20)]
        pids |= {h.result(timeout=60)["pid"] for h in handles}
        assert all(h.invocation().attempts == 1 for h in handles)
    assert len(pids) >= 4
    # every worker that served and is not one of the two current ones retired
    wait_until(lambda: len(exits.seen) >= len(pids) - 2, what="the recycled workers' exits")
    for exit, others in exits.seen:
        assert exit.requested and exit.exitcode == 0 and exit.invocations == ()
        assert exit.cause == "recycled"
        assert others >= 2, "a worker retired before its replacement had booted"
    assert len(supervisor.workers) >= 2


def test_max_memory_per_child_recycles_a_worker_that_grew(app: App, supervise,
                                                            exits: Exits) -> None:
    app.configure(source="the test", max_memory_per_child=150)
    exits.supervisor = supervise(processes=1)
    first = apps.hoard_memory.enqueue(20).result(timeout=30)
    grown = apps.hoard_memory.enqueue(200).result(timeout=30)
    assert grown == first  # it ran where the first one did
    wait_until(lambda: exits.seen, what="the grown worker to retire")
    exit, _ = exits.seen[0]
    assert exit.requested and exit.peak_memory > 200 * 2**20 and exit.cause == "recycled"
    assert apps.hoard_memory.enqueue(1).result(timeout=30) != grown


def test_deaths_are_described_with_signal_and_peak_memory(app: App, supervise,
                                                          exits: Exits) -> None:
    exits.supervisor = supervise(processes=1)
    with pytest.raises(TaskFailed, match="was killed by SIGABRT"):
        apps.abort.enqueue().result(timeout=30)
    wait_until(lambda: exits.seen, what="the exit to be reported")
    exit, _ = exits.seen[0]
    assert exit.signal == "SIGABRT" and not exit.requested and exit.cause == "signal"
    assert exit.peak_memory > 0
    assert [i.task for i in exit.invocations] == [apps.abort.name]


def test_only_a_sigkill_nobody_here_sent_hints_at_memory() -> None:
    assert describe_exit(-9) == ("SIGKILL", "was killed by SIGKILL (perhaps out of memory?)")
    assert describe_exit(-9, {signal.SIGKILL: "stopping at once"}) == (
        "SIGKILL", "was killed by SIGKILL from the supervisor: stopping at once")
    # it sent SIGTERM only: the SIGKILL came from elsewhere
    assert "perhaps out of memory?" in describe_exit(-9, {signal.SIGTERM: "stopping"})[1]
    assert describe_exit(0, {signal.SIGTERM: "stopping"}) == (None, "exited with code 0")


@pytest.mark.parametrize(("task", "immediate", "why"), [
    (apps.announce_then_sleep, True, "stopping at once"),
    (apps.ignores_sigterm, False, "still running 0.2 s after SIGTERM"),
    (apps.overstays, True, "tests.apps.overstays exceeded its hard time limit of 0.5 s"),
])
def test_a_kill_the_supervisor_sent_is_described_as_its_own(
        app: App, exits: Exits, marker_dir, monkeypatch, task: pprunner.Task, immediate: bool,
        why: str) -> None:
    """Stopping at once, after shutdown_timeout and SIGTERM, at a hard time limit: the
    exit says who killed it and why, never "perhaps out of memory?"."""
    monkeypatch.setattr(pprunner.supervisor, "TERMINATE_GRACE", 0.2)
    app.configure(source="the test", shutdown_timeout=0.2)
    exits.supervisor = supervisor = Supervisor(app, processes=1).start()
    try:
        if task is apps.overstays:
            task.enqueue()
            wait_until(lambda: exits.seen, what="the worker to be killed at the time limit")
        else:
            task.enqueue(str(marker_dir), 60)
            wait_until((marker_dir / "started").exists, what="the task to start")
    finally:
        supervisor.stop(immediate=immediate, timeout=30)
    exit, _ = exits.seen[0]
    assert exit.signal == "SIGKILL"
    assert exit.description == f"was killed by SIGKILL from the supervisor: {why}"


@pytest.mark.parametrize(("mode", "boot_timeout", "cause"), [
    ("exit", "60", "exited with code 3"),  # a loaded machine may take long to get that far
    ("hang", "0.5", "did not report ready within 0.5 s"),
])
def test_a_crash_loop_backs_off_and_stops_with_its_cause(db_url: str, mode: str,
                                                          boot_timeout: str, cause: str) -> None:
    done = run_cli("run", "--app", "tests.apps_broken_boot:app", "--processes", "2",
                   env=cli_env(db_url, PPRUNNER_TEST_BOOT=mode, PPRUNNER_CRASH_LOOP_PERIOD="3",
                               PPRUNNER_BOOT_TIMEOUT=boot_timeout))
    assert done.returncode == ExitCode.CRASH_LOOP, done.stderr
    assert "no worker could be kept running for 3 s" in done.stderr
    assert "perhaps out of memory" not in done.stderr  # the boot timeout's kill is ours
    assert cause in done.stderr.splitlines()[-1]
    # backing off: a handful of attempts in 3 s, not hundreds
    assert done.stderr.count("died before booting") < 30


def test_time_limits_are_validated(app: App) -> None:
    with pytest.raises(ValueError, match="time_limit must be > 0"):
        app.task(name="bad", time_limit=0)(lambda: None)
    assert apps.overstays.time_limit == 0.5
    app.configure(source="the test", time_limit=9)
    assert apps.add.time_limit == 9
    assert Status.FAILED.is_final


def test_a_lost_supervisor_s_invocations_are_recovered_exactly_once(
        app: App, db_url: str, cli_process, tmp_path) -> None:
    """Two supervisors share one SQLite file; one vanishes with its workers mid-batch
    (SIGKILL of its whole process group, as when a host is lost). The other takes
    back what it held once its heartbeats are dead_after old, and every invocation
    ends SUCCESS, once."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    handles = [apps.whoami_slowly.enqueue(0.05) for _ in range(120)]
    env = cli_env(db_url, PPRUNNER_DEAD_AFTER="2", PPRUNNER_HEARTBEAT_INTERVAL="0.2")
    doomed = subprocess.Popen([sys.executable, "-m", "pprunner", "run", "--app",
                               "tests.apps:app", "--processes", "2"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        doomed_id = wait_until(lambda: next((r.supervisor for r in app.backend.runners()
                                             if r.kind == "worker"), None),
                               what="the first supervisor's workers")
        wait_until(lambda: any(i.owner and i.owner != doomed_id
                               for i in app.backend.owned_by(
                                   r.id for r in app.backend.runners())),
                   what="the first supervisor to be busy")
        survivor = cli_process("run", "--app", "tests.apps:app", "--processes", "2",
                               env=env)
        held = wait_until(lambda: app.backend.owned_by(
            r.id for r in app.backend.runners() if r.supervisor == doomed_id),
            what="invocations held by the first supervisor")
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        results = [h.result(timeout=60) for h in handles]
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=10)
    assert len(results) == 120
    invocations = [h.invocation() for h in handles]
    assert {i.status for i in invocations} == {Status.SUCCESS}
    recovered = [i for i in invocations if any(e.type == "RunnerLost" for e in i.history)]
    assert {i.id for i in held} <= {i.id for i in recovered} | {
        i.id for i in invocations if i.attempts == 1}
    assert recovered, "nothing was recovered from the lost supervisor"
    assert all(i.attempts == 2 for i in recovered)
    survivor.terminate()
    assert survivor.wait(timeout=30) == ExitCode.OK


def live_slots(supervisor: pprunner.Supervisor) -> list[int]:
    return sorted(c.info.slot for c in supervisor.workers.values() if c.booted)


def test_scale_up_and_down_while_running(app: App, supervise) -> None:
    supervisor = supervise(processes=1)
    supervisor.scale_to(3)
    wait_until(lambda: live_slots(supervisor) == [1, 2, 3], what="three booted workers")
    assert supervisor.max_parallel_slots == 3
    supervisor.scale_to(1)
    wait_until(lambda: live_slots(supervisor) == [1], what="the pool to shrink to one")
    assert apps.add.enqueue(2, 3).result(timeout=30) == 5


def test_reload_replaces_every_worker_one_at_a_time(app: App, supervise, exits: Exits) -> None:
    exits.supervisor = supervisor = supervise(processes=2)
    wait_until(lambda: len(live_slots(supervisor)) == 2, what="two booted workers")
    before = set(supervisor.workers)
    supervisor.reload()
    wait_until(lambda: len(exits.seen) == 2 and len(live_slots(supervisor)) == 2,
               what="both workers to be replaced")
    assert not before & set(supervisor.workers)
    assert all(others >= 2 for _, others in exits.seen), "capacity dropped during the reload"


@pytest.mark.parametrize("busy", [120], indirect=True)
def test_signals_and_pprunner_scale_reach_a_running_supervisor(
        app: App, db_url: str, busy) -> None:
    import signal

    busy.supervisor.send_signal(signal.SIGTTIN)
    wait_until(lambda: live_workers(app) == 3, what="SIGTTIN to add a worker")
    busy.supervisor.send_signal(signal.SIGTTOU)
    wait_until(lambda: live_workers(app) == 2, what="SIGTTOU to retire one")
    done = run_cli("scale", "--app", "tests.apps:app", "4", env=cli_env(db_url))
    assert done.returncode == ExitCode.OK, done.stderr
    assert "scaling to 4" in done.stdout
    wait_until(lambda: live_workers(app) == 4, what="pprunner scale to take effect")
    idle = {r.id for r in app.backend.runners() if r.kind == "worker"} - {
        busy.handle.invocation().owner}
    busy.supervisor.send_signal(signal.SIGHUP)
    wait_until(lambda: not idle & {r.id for r in app.backend.runners()},
               timeout=30, what="SIGHUP to replace the idle workers")
    # the busy worker kept its invocation through all of it (it is replaced last,
    # once it has finished)
    assert busy.handle.status() == Status.RUNNING


def test_the_supervisor_s_title_follows_its_worker_count(
        app: App, db_url: str, cli_process) -> None:
    supervisor = start_supervisor(cli_process, db_url, app, workers=1)

    def title() -> str:
        return " ".join(psutil.Process(supervisor.pid).cmdline()).strip()

    assert title() == "pprunner supervisor: tests [1 workers]"
    supervisor.send_signal(signal.SIGTTIN)
    wait_until(lambda: title().endswith("[2 workers]"), what="SIGTTIN to show in the title")
    done = run_cli("scale", "--app", "tests.apps:app", "3", env=cli_env(db_url))
    assert done.returncode == ExitCode.OK, done.stderr
    wait_until(lambda: title().endswith("[3 workers]"), what="the scale to show in the title")
    supervisor.send_signal(signal.SIGTTOU)
    wait_until(lambda: title().endswith("[2 workers]"), what="SIGTTOU to show in the title")


def test_health_file_tells_alive_and_ready(app: App, supervise, tmp_path) -> None:
    path = tmp_path / "health.json"
    app.configure(source="the test", health_file=str(path))
    supervise(processes=2)
    check = ("health", "--file", str(path), "--max-age", "5")
    wait_until(lambda: run_cli(*check, "--ready", env=cli_env("")).returncode == 0,
               what="the health file to say ready")
    assert run_cli(*check, env=cli_env("")).stdout.strip() == "alive"
    stale = run_cli("health", "--file", str(path), "--max-age", "0", env=cli_env(""))
    assert stale.returncode == ExitCode.UNHEALTHY and "last reported" in stale.stdout
    missing = run_cli("health", "--file", str(tmp_path / "nope"), env=cli_env(""))
    assert missing.returncode == ExitCode.UNHEALTHY and "not running" in missing.stdout
