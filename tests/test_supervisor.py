"""The supervisor with real worker processes: spawn, death, respawn, stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import pprunner
from pprunner import (
    App,
    ConfigError,
    InlineSupervisor,
    Status,
    Supervisor,
    TaskFailed,
    UnknownInvocation,
)
from tests import apps
from tests.conftest import wait_until

pytestmark = pytest.mark.slow


class Recorder:
    """A test plugin that remembers what the supervisor told the plugins."""

    def __init__(self) -> None:
        self.spawned: list[str] = []
        self.started: list[pprunner.RunnerInfo] = []
        self.exited: list[tuple[pprunner.RunnerInfo, Any]] = []
        self.heartbeats: list[set[str]] = []
        self.lock = threading.Lock()

    @pprunner.hookimpl(tryfirst=True)
    def pprunner_spawn_worker(self, spec: Any) -> None:
        self.spawned.append(spec.runner_id)  # returns None: the default still spawns

    @pprunner.hookimpl
    def pprunner_worker_started(self, runner: pprunner.RunnerInfo) -> None:
        self.started.append(runner)

    @pprunner.hookimpl
    def pprunner_worker_exited(self, runner: pprunner.RunnerInfo, exit: Any) -> None:
        self.exited.append((runner, exit))

    @pprunner.hookimpl
    def pprunner_heartbeat(self, runners: list[pprunner.RunnerInfo]) -> None:
        with self.lock:
            self.heartbeats.append({r.id for r in runners})


@pytest.fixture
def recorder(app: App) -> Iterator[Recorder]:
    recorder = Recorder()
    app.plugins.manager.register(recorder, name="test-recorder")
    try:
        yield recorder
    finally:
        app.plugins.manager.unregister(name="test-recorder")


def test_workers_run_with_the_pre_generated_runner_ids(app: App, supervise, recorder) -> None:
    supervisor = supervise(processes=2)
    assert supervisor.max_parallel_slots == 2
    assert len(recorder.spawned) == 2
    assert [r.id for r in recorder.started] == recorder.spawned
    seen = {apps.whoami.enqueue().result(timeout=30)["runner"] for _ in range(20)}
    assert seen <= set(recorder.spawned)
    recorded = {r.id: r for r in app.backend.runners()}
    assert set(recorder.spawned) | {supervisor.id} == set(recorded)
    for started in recorder.started:
        assert recorded[started.id].pid == started.pid


def test_results_and_failures_come_back(app: App, supervise) -> None:
    supervise(processes=2)
    handle = apps.add.enqueue(1, 2)
    assert isinstance(handle.id, str)
    assert handle.result(timeout=30) == 3
    assert handle.status() == Status.SUCCESS == "SUCCESS"
    with pytest.raises(TaskFailed) as failure:
        apps.fail.enqueue("boom").result(timeout=30)
    error = failure.value
    assert (error.remote_type, error.remote_message) == ("ValueError", "boom")
    assert "raise ValueError(message)" in error.remote_traceback
    assert "pluggy" not in error.remote_traceback  # trimmed to the task's own frames
    assert isinstance(error.__cause__, pprunner.errors.RemoteTraceback)


def test_the_supervisor_deletes_what_finished_over_keep_finished_ago(
        app: App, supervise, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pprunner.supervisor")
    app.configure(source="the test", keep_finished=0.5, heartbeat_interval=0.1)
    supervise(processes=1)
    done = apps.add.enqueue(1, 2)
    assert done.result(timeout=30) == 3
    running = apps.whoami_slowly.enqueue(30)
    wait_until(lambda: running.status() == Status.RUNNING, what="the long task to start")

    def purged() -> bool:
        with contextlib.suppress(UnknownInvocation):
            done.invocation()
            return False
        return True

    wait_until(purged, what="the finished invocation to be deleted")
    assert running.status() == Status.RUNNING  # unfinished: never deleted, however old
    assert "deleted 1 invocation(s) that finished over 0.5 s ago" in caplog.text


def test_runner_cache_is_shared_between_workers(app: App, supervise) -> None:
    supervise(processes=2)
    apps.cache_put.enqueue("colour", "blue").result(timeout=30)
    assert {apps.cache_get.enqueue("colour").result(timeout=30) for _ in range(6)} == {"blue"}


def test_sigkilled_worker_is_replaced_and_its_invocation_reruns(
        app: App, supervise, recorder, marker_dir: Path) -> None:
    supervisor = supervise(processes=2)
    handle = apps.blocks_on_first_attempt.enqueue(str(marker_dir))
    first = marker_dir / "started-1"
    wait_until(first.exists, what="the first attempt to start")
    victim_pid = int(first.read_text())
    victim = next(r for r in recorder.started if r.pid == victim_pid)

    os.kill(victim_pid, signal.SIGKILL)

    assert handle.result(timeout=30) == 2
    invocation = handle.invocation()
    assert invocation.attempts == 2
    assert invocation.error is not None and "SIGKILL" in invocation.error.message
    exited_runner, exit = wait_until(lambda: recorder.exited and recorder.exited[0],
                                     what="the worker-exited hook")
    assert exited_runner.id == victim.id
    assert exit.signal == "SIGKILL" and "perhaps out of memory" in exit.description
    assert exit.cause == "signal"
    assert [i.id for i in exit.invocations] == [handle.id]
    wait_until(lambda: len(supervisor.workers) == 2 and victim.id not in supervisor.workers,
               what="a replacement worker")
    replacement = next(c.info for c in supervisor.workers.values() if c.info.slot == victim.slot)
    assert replacement.id != victim.id
    assert victim.id not in {r.id for r in app.backend.runners()}
    # the dead id stops getting heartbeats: later reports all name the replacement instead
    mark = len(recorder.heartbeats)
    wait_until(lambda: any(replacement.id in beat for beat in recorder.heartbeats[mark:]),
               what="a heartbeat naming the replacement")
    assert all(victim.id not in beat for beat in recorder.heartbeats[mark:])


def test_poison_invocation_fails_after_max_attempts_and_the_pool_survives(
        app: App, supervise) -> None:
    supervise(processes=2)
    poison = apps.always_killed.enqueue()
    with pytest.raises(TaskFailed) as failure:
        poison.result(timeout=60)
    assert failure.value.remote_type == "WorkerDied"
    assert "SIGKILL" in failure.value.remote_message
    assert "after 2 attempts" in failure.value.remote_message
    assert failure.value.remote_message.startswith("happened 2 times; last: worker")
    assert apps.add.enqueue(2, 2).result(timeout=30) == 4


def test_worker_exit_code_is_in_the_error(app: App, supervise) -> None:
    supervise(processes=1)
    with pytest.raises(TaskFailed, match="exited with code 7"):
        apps.exit_hard.enqueue(7).result(timeout=60)


def test_bad_messages_fail_the_invocation_and_the_worker_carries_on(app: App, supervise) -> None:
    app.configure(source="the test", serializer="json")  # its messages are JSON
    supervise(processes=1)
    unknown = pprunner.Invocation(id="unknown-task", task="os.system",
                                  payload=b'{"args":["true"],"kwargs":{}}', serializer="json")
    garbled = pprunner.Invocation(id="garbled", task=apps.add.name, payload=b"\xff\x00",
                                  serializer="json")
    wrong_shape = pprunner.Invocation(id="wrong-shape", task=apps.add.name, payload=b"[1, 2]",
                                      serializer="json")
    no_such_serializer = pprunner.Invocation(id="no-serializer", task=apps.add.name,
                                             payload=b"x", serializer="yaml")
    for invocation in (unknown, garbled, wrong_shape, no_such_serializer):
        app.backend.enqueue(invocation)
    expectations = {
        "unknown-task": ("UnknownTask", "'os.system' is not registered"),
        "garbled": ("SerializationError", "cannot decode the arguments"),
        "wrong-shape": ("SerializationError", "not a {'args'"),
        "no-serializer": ("SerializationError", "unknown serializer 'yaml'"),
    }
    for invocation_id, (kind, text) in expectations.items():
        with pytest.raises(TaskFailed) as failure:
            app.handle(invocation_id).result(timeout=30)
        assert failure.value.remote_type == kind
        assert text in failure.value.remote_message
    with pytest.raises(TaskFailed, match="cannot be encoded"):
        apps.returns_unencodable.enqueue().result(timeout=30)
    assert apps.add.enqueue(20, 22).result(timeout=30) == 42


def test_graceful_stop_lets_the_running_task_finish(app: App, marker_dir: Path) -> None:
    supervisor = Supervisor(app, processes=1).start()
    handle = apps.announce_then_sleep.enqueue(str(marker_dir), 0.5)
    wait_until((marker_dir / "started").exists, what="the task to start")
    pids = [c.process.pid for c in supervisor.workers.values()]
    assert supervisor.stop(timeout=30) == pprunner.ExitCode.OK
    assert handle.status() == Status.SUCCESS
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pid in pids)
    assert app.backend.owned_by([r.id for r in app.backend.runners()]) == []
    assert app.backend.runners() == []


def test_straggler_is_terminated_and_its_invocation_handed_back(
        app: App, marker_dir: Path) -> None:
    app.configure(source="the test", shutdown_timeout=0.2)
    supervisor = Supervisor(app, processes=1).start()
    handle = apps.announce_then_sleep.enqueue(str(marker_dir), 60)
    wait_until((marker_dir / "started").exists, what="the task to start")
    supervisor.stop(timeout=30)
    invocation = handle.invocation()
    assert invocation.status == Status.PENDING
    assert invocation.owner is None
    assert invocation.attempts == 0  # a hand-back at shutdown does not use up an attempt
    assert app.backend.counts()[Status.RUNNING] == 0


def test_memory_backend_refuses_worker_processes(app: App) -> None:
    app.configure(source="the test", backend="memory://")
    with pytest.raises(ConfigError, match="cannot be shared with worker processes"):
        Supervisor(app, processes=2).start()


def test_inline_mode_runs_in_this_process(app: App) -> None:
    app.configure(source="the test", backend="memory://")
    handles = [apps.whoami.enqueue() for _ in range(3)]
    supervisor = InlineSupervisor(app, burst=True)
    assert supervisor.run() == pprunner.ExitCode.OK
    assert {h.result(timeout=1)["pid"] for h in handles} == {os.getpid()}


def test_a_routed_signal_without_a_handler_is_logged_and_ignored(
        app: App, supervise, caplog: pytest.LogCaptureFixture) -> None:
    supervisor = supervise(processes=1)
    previous = supervisor.handle_signals([signal.SIGUSR1])
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        wait_until(lambda: "SIGUSR1: the supervisor has no handler" in caplog.text,
                   what="the unhandled signal to be logged")
    finally:
        signal.signal(signal.SIGUSR1, previous[signal.SIGUSR1])
    assert supervisor.running
    assert apps.add.enqueue(2, 3).result(timeout=30) == 5


def test_inline_mode_is_asked_for_by_name(app: App) -> None:
    with pytest.raises(ConfigError, match=r"InlineSupervisor\(app\)"):
        Supervisor(app, processes=0)
    assert type(Supervisor.for_app(app, processes=0)) is InlineSupervisor
    app.configure(source="the test", processes=0)
    assert type(Supervisor.for_app(app)) is InlineSupervisor
    assert type(Supervisor.for_app(app, processes=1)) is Supervisor


@pytest.mark.parametrize("start_method", ["spawn", "forkserver", "fork", "template"])
def test_every_start_method_runs_tasks(app: App, start_method: str) -> None:
    app.configure(source="the test", start_method=start_method)
    handles = [apps.add.enqueue(n, 1) for n in range(10)]
    supervisor = Supervisor(app, processes=2, burst=True)
    supervisor_exit: list[int] = []
    # run() outside the main thread: no signal handling, otherwise the same
    thread = threading.Thread(target=lambda: supervisor_exit.append(supervisor.run()))
    thread.start()
    thread.join(60)
    assert supervisor_exit == [pprunner.ExitCode.OK]
    assert [h.result(timeout=1) for h in handles] == list(range(1, 11))


def test_processes_carry_readable_titles(app: App, supervise) -> None:
    supervisor = supervise(processes=1)
    (child,) = supervisor.workers.values()
    title = wait_until(lambda: "pprunner worker 1" in " ".join(
        psutil.Process(child.process.pid).cmdline()) and psutil.Process(
        child.process.pid).cmdline(), what="the worker's title")
    assert "pprunner worker 1" in " ".join(title)


def test_a_hard_limit_retry_needs_no_task_registry_in_the_supervisor(tmp_path) -> None:
    """The task's policy travels with its invocation: an embedded supervisor whose
    process never imported the task (only its workers do, through ``include``)
    retries it at its hard limit as ``retry_on`` says."""
    from tests.apps_included import app as included

    included.configure(source="the test", replace=True, backend=f"sqlite:///{tmp_path}/j.db",
                       heartbeat_interval=0.1)
    assert "slow_once" not in included.tasks
    invocation = pprunner.Invocation(
        id="slow-once", task="slow_once", serializer="json", max_attempts=2,
        payload=included.codec.encode_call("slow-once", "slow_once", "json",
                                           [str(tmp_path / "marker")], {}))
    included.backend.enqueue(invocation)
    try:
        with Supervisor(included, processes=1):
            assert included.handle("slow-once").result(timeout=60) == "second attempt"
        done = included.handle("slow-once").invocation()
        assert done.attempts == 2 and done.history[0].type == "TimeLimitExceeded"
    finally:
        included.close()
