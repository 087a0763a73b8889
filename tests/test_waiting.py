"""Pause-on-wait with real worker processes: no deadlock, failures, timeouts, cycles."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from pprunner import App, ResultTimeout, Status, Supervisor, TaskFailed, config, gather
from pprunner.hostfeed import HostFeed
from pprunner.jobs import Call
from tests import apps, apps_waiting, spool_host, wait_recorder
from tests.conftest import cli_env, run_cli, wait_until

pytestmark = pytest.mark.slow


def test_a_recursive_fan_out_completes_on_two_workers(app: App, supervise) -> None:
    supervise(processes=2)
    assert apps_waiting.fan_out.enqueue(6, "nested").result(timeout=120) == 127
    assert app.backend.counts()[Status.SUCCESS] == 127


def test_eight_parents_each_waiting_on_eight_children_complete(app: App, supervise) -> None:
    supervise(processes=2)
    parents = [apps_waiting.parent_of_leaves.enqueue(8, "nested") for _ in range(8)]
    assert gather(parents, timeout=120) == [sum(range(8))] * 8


def test_the_lend_strategy_lets_a_waiting_parent_on_one_worker_complete(
        app: App, supervise) -> None:
    """The waiting parent lends its slot: another worker runs its children (at most
    ``max_lent_slots`` loans at a time: deeper trees need ``nested``)."""
    supervise(processes=1)
    assert apps_waiting.fan_out.enqueue(1, "lend").result(timeout=60) == 3


def test_a_plugins_strategy_serves_a_pulled_invocations_wait(
        app: App, supervise, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "waits.jsonl"
    monkeypatch.setenv(wait_recorder.LOG, str(log))  # the workers inherit it
    supervise(processes=1, plugins=[wait_recorder])
    parent = apps_waiting.fan_out.enqueue(1, "recorded")
    assert parent.result(timeout=60) == 3
    (wait,) = wait_recorder.recorded(str(log))
    assert wait["waiter"] == parent.id and wait["source"] == "pulled"
    assert len(wait["awaited"]) == 2


def test_a_plugins_strategy_serves_a_host_jobs_wait_on_one_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same hook and strategy for a host-consumed job that waits for the host's
    own jobs: with one worker it lends its slot, or the wait could never end."""
    log = tmp_path / "waits.jsonl"
    monkeypatch.setenv(wait_recorder.LOG, str(log))
    folder = tmp_path / "spool"
    spool = spool_host.Spool(folder)
    feed = HostFeed(Call(spool_host.make_consumer, (str(folder),)),
                    lambda job, error, retry: spool_host.settle(str(folder), job, error, retry))
    supervisor = Supervisor(feed=feed, processes=1, plugins=[wait_recorder], config=config.resolve(
        [("the test", {"log_level": "WARNING", "wait_strategy": "recorded"})]))
    supervisor.start()
    try:
        parent = spool.enqueue("fan_out", 3)
        result = wait_until(lambda: spool.result(parent), timeout=60, what="the parent's result")
        assert "value" in result, result
        (wait,) = wait_recorder.recorded(str(log))
        assert wait["waiter"] == parent and wait["source"] == "host"
        assert len(wait["awaited"]) == 3
        assert wait["pid"] not in result["value"]  # another worker ran the children
    finally:
        supervisor.stop(immediate=True, timeout=30)


@pytest.mark.parametrize("workflow", ["fan-out", "8x8"])
def test_the_poll_strategy_really_deadlocks_a_full_pool(app: App, supervise,
                                                        workflow: str) -> None:
    supervisor = supervise(processes=2)
    parents = ([apps_waiting.fan_out.enqueue(6, "poll")] if workflow == "fan-out" else
               [apps_waiting.parent_of_leaves.enqueue(8, "poll") for _ in range(8)])
    with pytest.raises(ResultTimeout):
        gather(parents, timeout=3)
    # both workers hold a paused parent, and not one child has run
    paused = [i for i in app.backend.owned_by(supervisor.workers) if i.status is Status.PAUSED]
    assert len(paused) == 2
    assert app.backend.counts()[Status.SUCCESS] == 0


def test_a_child_s_failure_propagates_to_its_parent(app: App, supervise) -> None:
    supervise(processes=1)
    with pytest.raises(TaskFailed) as failure:
        apps_waiting.parent_of_failure.enqueue().result(timeout=30)
    assert failure.value.remote_type == "pprunner.errors.TaskFailed"
    assert "ValueError: the child broke" in failure.value.remote_message


def test_a_wait_timeout_raises_in_the_waiting_task(app: App, supervise) -> None:
    supervise(processes=1)
    outcome = apps_waiting.impatient_parent.enqueue(0.2).result(timeout=30)
    assert outcome.startswith("ResultTimeout: ")


def test_waiting_on_an_invocation_that_waits_on_you_raises(app: App, supervise) -> None:
    supervise(processes=2)
    with pytest.raises(TaskFailed) as failure:
        apps_waiting.parent_of_a_waiter_on_itself.enqueue().result(timeout=30)
    # whichever of the two looks second finds the cycle; either way the parent fails
    error = failure.value
    assert "WaitCycle" in error.remote_type + error.remote_message
    assert "would wait for itself" in error.remote_message


def test_a_task_waiting_on_itself_raises(app: App, supervise) -> None:
    supervise(processes=1)
    with pytest.raises(TaskFailed) as failure:
        apps_waiting.waits_on_itself.enqueue().result(timeout=30)
    assert failure.value.remote_type == "pprunner.errors.WaitCycle"


def test_waiting_on_an_unknown_invocation_raises(app: App, supervise) -> None:
    supervise(processes=1)
    with pytest.raises(TaskFailed, match="no invocation with id 'nothing'"):
        apps_waiting.wait_for_id.enqueue("nothing").result(timeout=30)


def test_worker_death_while_paused_reroutes_the_parent_and_its_child(
        app: App, supervise, marker_dir: Path) -> None:
    supervise(processes=1)
    parent = apps_waiting.parent_of_blocked_child.enqueue(str(marker_dir))
    started = wait_until(lambda: list(marker_dir.glob("started-*")), what="the child to run")
    pid = int(started[0].name.split("-")[1])
    paused = app.backend.get(parent.id)
    assert paused.status is Status.PAUSED and len(paused.waiting_for) == 1
    (marker_dir / "release").touch()
    os.kill(pid, signal.SIGKILL)
    assert parent.result(timeout=60) == "released"
    after = parent.invocation()
    assert after.attempts == 2 and after.history[0].type == "WorkerDied"
    # the child it was running for the parent was rerouted too, and runs again
    first_child = app.handle(paused.waiting_for[0])
    assert first_child.result(timeout=30) == "released"
    assert first_child.invocation().attempts == 2


def test_status_shows_a_paused_invocation_and_what_it_waits_for(
        app: App, db_url: str, supervise, marker_dir: Path) -> None:
    supervise(processes=1)
    parent = apps_waiting.parent_of_blocked_child.enqueue(str(marker_dir))
    wait_until(lambda: list(marker_dir.glob("started-*")), what="the child to run")
    shown = run_cli("status", "--app", "tests.apps:app", env=cli_env(db_url)).stdout
    assert f"{parent.id} {apps_waiting.parent_of_blocked_child.name} PAUSED (waiting for 1)" \
        in shown
    (marker_dir / "release").touch()
    assert parent.result(timeout=30) == "released"


def test_an_unknown_strategy_fails_the_waiting_task(app: App, supervise) -> None:
    supervise(processes=1)
    with pytest.raises(TaskFailed, match="unknown wait strategy 'sideways'"):
        apps_waiting.fan_out.enqueue(1, "sideways").result(timeout=30)


def test_outside_a_worker_wait_simply_blocks(app: App, supervise) -> None:
    supervise(processes=2)
    handles = [apps.add.enqueue(n, n) for n in range(5)]
    assert gather(handles, timeout=30) == [0, 2, 4, 6, 8]
    assert gather([]) == []


def test_a_lent_slot_is_given_back_when_the_report_of_the_wait_is_interrupted(
        app: App) -> None:
    """A host may answer the report of a wait with a signal whose handler raises before the
    report's send returns (Celery's refused wait): the supervisor still hears the end."""
    import threading

    from pprunner.worker import WorkerContext

    class Interrupted(Exception):
        pass

    reports: list[bool] = []

    def report(waiting: bool) -> None:
        reports.append(waiting)
        if reports == [True]:
            raise Interrupted  # as a signal handler raising in the middle of the send

    context = WorkerContext(app=app, runner_id="w", slot=1, runner_cache={},
                            stop_event=threading.Event())
    context._waiting = report
    with pytest.raises(Interrupted), context.lend_slot():
        pytest.fail("the wait ran although its report raised")
    assert reports == [True, False]
    with context.lend_slot():  # counted from zero again: the next wait is reported
        pass
    assert reports == [True, False, True, False]
