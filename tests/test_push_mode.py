"""Push mode through its public seams only, as a host-framework adapter uses it
(``tests/host_adapter.py``): calls handed to idle workers, events on the host's
own event loop, the host's bootstrap and hooks in every worker."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import selectors
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from pprunner import ConfigError, launch, template
from pprunner.dispatch import Dispatcher
from pprunner.jobs import (
    Call,
    Cancelled,
    Event,
    Failed,
    Finished,
    Lost,
    Noted,
    Started,
    TimedOut,
)
from pprunner.supervisor import Supervisor
from tests import host_adapter
from tests.conftest import wait_until
from tests.host_adapter import HostMessage, HostPool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class Loop:
    """The host's event loop: waits on the dispatcher's descriptor, drains events."""

    def __init__(self, pool: HostPool) -> None:
        self.pool = pool
        self.events: dict[str, list[Event]] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(pool.dispatcher.fileno(), selectors.EVENT_READ)

    def send(self, task: str, *args: Any, time_limit: float | None = None,
             max_attempts: int = 1, runner_id: str | None = None) -> str:
        message = HostMessage(task, json.dumps(args))
        call = self.pool.apply_async(message, self._record, time_limit=time_limit,
                                     max_attempts=max_attempts, runner_id=runner_id)
        self.events[call.id] = []
        return call.id

    def _record(self, event: Event) -> None:
        assert threading.current_thread() is threading.main_thread()  # on the host's loop
        self.events[event.call.id].append(event)

    def run_until_ended(self, *call_ids: str, timeout: float = 30) -> list[Event]:
        """Turn the loop until each call has ended; returns each call's ending."""
        deadline = time.monotonic() + timeout
        while not all(self._ended(i) for i in call_ids):
            left = deadline - time.monotonic()
            assert left > 0, f"no ending within {timeout} s: {self.events}"
            if self.selector.select(left):
                self.pool.dispatcher.drain()
        return [self.events[i][-1] for i in call_ids]

    def _ended(self, call_id: str) -> bool:
        return bool(self.events[call_id]) and not isinstance(self.events[call_id][-1],
                                                             Started | Noted)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostPool]:
    markers = tmp_path_factory.mktemp("host-markers")
    pool = HostPool(2, str(markers), time_limit=None).start()
    yield pool
    pool.stop()


@pytest.fixture
def loop(pool: HostPool) -> Iterator[Loop]:
    loop = Loop(pool)
    yield loop
    loop.selector.close()


def test_a_call_is_started_by_an_idle_worker_and_its_value_comes_back(loop: Loop) -> None:
    call_id = loop.send("add", 2, 3)
    loop.run_until_ended(call_id)
    started, finished = loop.events[call_id]
    assert isinstance(started, Started) and isinstance(finished, Finished)
    assert finished.value == 5
    assert started.pid == finished.pid and started.attempt == 1
    assert started.pid in {p.pid for p in psutil.Process().children(recursive=True)}


def test_the_hosts_bootstrap_hooks_and_context_run_in_every_worker(loop: Loop,
                                                                    pool: HostPool) -> None:
    ids = [loop.send("whoami") for _ in range(6)]
    endings = loop.run_until_ended(*ids)
    values = [e.value for e in endings if isinstance(e, Finished)]
    assert len(values) == 6
    for value in values:
        assert value["booted"] == "bootstrap"  # the initializer ran before the first job
        assert value["init_hook"]  # pprunner_worker_init ran in the worker
    # the wrapper put the host's own message around the call, as a tracer would
    assert {v["current"] for v in values} == {e.call.args[0].id for e in endings}
    markers = Path(pool.supervisor.initializer.args[0])  # type: ignore[union-attr]
    assert {f"booted-{v['pid']}" for v in values} <= {p.name for p in markers.iterdir()}


def test_an_error_comes_back_with_its_type_message_and_traceback(loop: Loop) -> None:
    (ending,) = loop.run_until_ended(loop.send("fail", "no such thing"))
    assert isinstance(ending, Failed)
    assert ending.error.type == "ValueError" and ending.error.message == "no such thing"
    assert isinstance(ending.error.exception, ValueError)
    assert "raise ValueError(message)" in ending.error.traceback


def test_a_name_the_hosts_registry_lacks_fails_unrun(loop: Loop) -> None:
    (ending,) = loop.run_until_ended(loop.send("os.system", "true"))
    assert isinstance(ending, Failed)
    assert ending.error.type == "UnknownTask" and "'os.system'" in ending.error.message


def test_a_worker_killed_under_a_call_is_lost_and_replaced(loop: Loop,
                                                          pool: HostPool) -> None:
    doomed, other = loop.send("die"), loop.send("sleep", 0.2)
    lost, finished = loop.run_until_ended(doomed, other)
    assert isinstance(lost, Lost) and lost.signal == "SIGKILL" and lost.exitcode == -9
    assert "SIGKILL" in lost.description
    assert isinstance(finished, Finished) and finished.value == "slept"
    (after,) = loop.run_until_ended(loop.send("add", 1, 1))  # the pool still serves
    assert isinstance(after, Finished) and after.pid != lost.pid
    wait_until(lambda: len(pool.supervisor.workers) == 2, what="the replacement")


def test_notes_a_call_sent_arrive_in_order_before_its_worker_death(loop: Loop) -> None:
    call_id = loop.send("note_then_die", "took A", "took B")
    loop.run_until_ended(call_id)
    kinds = [type(e).__name__ for e in loop.events[call_id]]
    assert kinds == ["Started", "Noted", "Noted", "Lost"]
    notes = [e for e in loop.events[call_id] if isinstance(e, Noted)]
    assert [n.data for n in notes] == ["took A", "took B"]
    assert notes[0].pid == loop.events[call_id][0].pid  # type: ignore[union-attr]


def test_a_call_meant_for_one_worker_runs_there_only(loop: Loop, pool: HostPool) -> None:
    wait_until(lambda: sum(c.idle for c in pool.supervisor.workers.values()) == 2,
               timeout=30, what="two idle workers")
    live = {c.info.id: c.info.pid for c in pool.supervisor.workers.values()}
    target = sorted(live)[0]
    assert target in pool.observed.ready  # pprunner_worker_ready named it
    ids = [loop.send("whoami", runner_id=target) for _ in range(4)]
    endings = loop.run_until_ended(*ids)
    assert {e.pid for e in endings if isinstance(e, Finished)} == {live[target]}


def test_a_call_meant_for_a_worker_that_exits_is_cancelled(loop: Loop, pool: HostPool) -> None:
    wait_until(lambda: sum(c.idle for c in pool.supervisor.workers.values()) == 2,
               timeout=30, what="two idle workers")
    target = sorted(pool.supervisor.workers)[0]
    busy = loop.send("sleep", 0.5, runner_id=target)
    waiting = loop.send("add", 1, 2, runner_id=target)  # queued behind it, for it alone
    deadline = time.monotonic() + 30
    while not loop.events[busy]:  # the worker has it before it is killed
        assert time.monotonic() < deadline, "the call was never started"
        if loop.selector.select(1):
            pool.dispatcher.drain()
    pool.supervisor.workers[target].process.kill()
    lost, cancelled = loop.run_until_ended(busy, waiting)
    assert isinstance(lost, Lost)  # a targeted call is never tried on another worker
    assert isinstance(cancelled, Cancelled) and target in cancelled.reason


def test_a_call_meant_for_a_worker_that_is_gone_is_cancelled(loop: Loop) -> None:
    (ending,) = loop.run_until_ended(loop.send("add", 1, 2, runner_id="no-such-worker"))
    assert isinstance(ending, Cancelled) and "not running" in ending.reason


def test_a_call_past_its_hard_limit_times_out_and_its_worker_is_replaced(loop: Loop) -> None:
    (ending,) = loop.run_until_ended(loop.send("sleep", 30, time_limit=0.5))
    assert isinstance(ending, TimedOut) and ending.limit == 0.5
    assert not psutil.pid_exists(ending.pid) or psutil.Process(ending.pid).status() == "zombie"


def test_a_call_the_host_kills_is_lost_and_not_run_again(loop: Loop, pool: HostPool) -> None:
    call_id = loop.send("sleep", 30, max_attempts=3)
    wait_until(lambda: loop.pool.dispatcher.drain() or loop.events[call_id], 15, "its start")
    assert pool.dispatcher.kill(call_id, "the host's user stopped it")
    (lost,) = loop.run_until_ended(call_id)
    assert isinstance(lost, Lost) and lost.signal == "SIGKILL"
    assert "the host's user stopped it" in lost.description
    assert [type(e) for e in loop.events[call_id]] == [Started, Lost]  # attempts left, no rerun
    assert not pool.dispatcher.kill(call_id, "again")  # ended: nothing to kill


def test_a_worker_that_asks_to_be_replaced_runs_nothing_more(loop: Loop,
                                                             pool: HostPool) -> None:
    (asked,) = loop.run_until_ended(loop.send("replace_me"))
    assert isinstance(asked, Finished)
    endings = loop.run_until_ended(*[loop.send("add", 1, n) for n in range(8)])
    assert asked.value not in {e.pid for e in endings if isinstance(e, Finished)}
    wait_until(lambda: not psutil.pid_exists(asked.value)
               or psutil.Process(asked.value).status() == "zombie", 15, "its exit")
    wait_until(lambda: len(pool.supervisor.workers) == 2, what="its replacement")


def test_calls_wait_in_the_parent_never_in_a_worker(loop: Loop, pool: HostPool) -> None:
    wait_until(lambda: sum(c.idle for c in pool.supervisor.workers.values()) == 2,
               timeout=30, what="two idle workers")
    ids = [loop.send("sleep", 1.0) for _ in range(4)]

    def held() -> list[str]:
        return [c.call.id for c in pool.supervisor.workers.values() if c.call is not None]

    # the supervisor's thread sets a worker's call just after taking it off the queue
    wait_until(lambda: len(held()) == 2 and pool.dispatcher.queued == 2,
               what="two calls handed out, two waiting in the parent")
    assert pool.dispatcher.outstanding == 4 and len(set(held())) == 2  # one per worker
    assert all(isinstance(e, Finished) for e in loop.run_until_ended(*ids))


def test_the_supervisor_side_hooks_see_each_call_and_the_supervisor(loop: Loop,
                                                                    pool: HostPool) -> None:
    call_id = loop.send("add", 1, 2)
    loop.run_until_ended(call_id)
    seen = pool.observed
    assert call_id in {i for i, _pid in seen.started}
    assert (call_id, "Finished") in seen.finished
    (view,) = seen.supervisors
    assert view.id == pool.supervisor.id and view.app is None and view.backend is None
    assert view.runners()[0].kind == "supervisor"


def test_scaling_from_another_thread_is_carried_out_by_the_loop(pool: HostPool) -> None:
    threading.Thread(target=pool.supervisor.view.scale_to, args=(3,)).start()
    wait_until(lambda: sum(c.booted for c in pool.supervisor.workers.values()) == 3,
               timeout=30, what="a third worker")
    pool.supervisor.view.scale_to(2)
    wait_until(lambda: len(pool.supervisor.workers) == 2, timeout=30, what="back to two")
    with pytest.raises(ConfigError):
        pool.supervisor.scale_to(0)


def test_events_can_be_delivered_on_an_asyncio_loop(tmp_path: Path) -> None:
    pool = HostPool(1, str(tmp_path)).start()

    async def main() -> Event:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[Event] = loop.create_future()
        loop.add_reader(pool.dispatcher.fileno(), pool.dispatcher.drain)
        try:
            pool.apply_async(HostMessage("add", "[20, 22]"),
                             lambda e: None if isinstance(e, Started) else ended.set_result(e))
            return await asyncio.wait_for(ended, 30)
        finally:
            loop.remove_reader(pool.dispatcher.fileno())

    try:
        ending = asyncio.run(main())
    finally:
        pool.stop()
    assert isinstance(ending, Finished) and ending.value == 42
    assert pool.observed.stopping == [pool.supervisor.id]
    # each worker ran the exit hook as it stopped
    assert any(p.name.startswith("exited-") for p in tmp_path.iterdir())


def test_a_stop_cancels_what_waits_and_what_it_could_not_wait_for() -> None:
    dispatcher = Dispatcher(deliver="thread")
    events: dict[str, list[Event]] = {}
    cancelled = threading.Semaphore(0)

    def record(event: Event) -> None:
        events.setdefault(event.call.id, []).append(event)
        if isinstance(event, Cancelled):
            cancelled.release()

    config = host_adapter.config_module.resolve([("test", {"log_level": "WARNING"})])
    supervisor = Supervisor(dispatcher=dispatcher, processes=1, config=config).start()
    running, waiting = Call(time.sleep, (60,)), Call(time.sleep, (0,))
    try:
        dispatcher.submit(running, record)
        dispatcher.submit(waiting, record)
        wait_until(lambda: running.id in events, what="the first call to start")
    finally:
        supervisor.stop(immediate=True, timeout=30)
    assert cancelled.acquire(timeout=10) and cancelled.acquire(timeout=10)
    dispatcher.shutdown()
    assert [type(e) for e in events[running.id]] == [Started, Cancelled]
    assert "while it ran" in events[running.id][-1].reason  # type: ignore[union-attr]
    assert [type(e) for e in events[waiting.id]] == [Cancelled]
    assert "before running it" in events[waiting.id][-1].reason  # type: ignore[union-attr]


def test_a_supervisor_needs_one_source_of_jobs() -> None:
    message = r"one of an app \(pull mode\), a dispatcher \(push mode\) or a host feed"
    with pytest.raises(ConfigError, match=message):
        Supervisor()
    with pytest.raises(ConfigError, match=message):
        Supervisor(dispatcher=Dispatcher(deliver="loop"), feed=object())  # type: ignore


class Collector:
    """A push-mode supervisor of its own with thread delivery, its events by call."""

    def __init__(self, processes: int = 1, **settings: Any) -> None:
        self.dispatcher = Dispatcher(deliver="thread")
        self.events: dict[str, list[Event]] = {}
        config = host_adapter.config_module.resolve([("test", {"log_level": "WARNING",
                                                               **settings})])
        self.supervisor = Supervisor(dispatcher=self.dispatcher, processes=processes,
                                     config=config)

    def __enter__(self) -> Collector:
        self.supervisor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.supervisor.stop(immediate=True, timeout=30)
        self.dispatcher.shutdown()

    def submit(self, call: Call) -> Call:
        self.events[call.id] = []
        self.dispatcher.submit(call, lambda event: self.events[event.call.id].append(event))
        return call

    def ending(self, call: Call) -> Event:
        wait_until(lambda: any(not isinstance(e, Started) for e in self.events[call.id]),
                   timeout=30, what=f"the ending of {call}")
        return self.events[call.id][-1]


def test_a_call_names_the_exception_its_soft_limit_raises() -> None:
    with Collector() as pool:
        ending = pool.ending(pool.submit(Call(time.sleep, (30,), soft_time_limit=0.2,
                                              soft_limit_error=TimeoutError)))
    assert isinstance(ending, Failed) and ending.error.type == "TimeoutError"
    assert "soft time limit exceeded by time.sleep" in ending.error.message


def test_a_host_signals_the_worker_running_a_call_through_the_supervisor() -> None:
    with Collector() as pool:
        assert pool.supervisor.running
        call = pool.submit(Call(time.sleep, (30,)))
        wait_until(lambda: pool.events[call.id], what="the call to start")
        started = pool.events[call.id][0]
        assert isinstance(started, Started)
        pool.supervisor.signal_worker(started.pid, signal.SIGUSR1, "the host ends its job")
        ending = pool.ending(call)
    assert not pool.supervisor.running
    assert isinstance(ending, Lost) and ending.signal == "SIGUSR1"
    assert ending.description == "was killed by SIGUSR1 from the supervisor: the host ends its job"


def test_a_worker_at_max_tasks_per_child_is_handed_nothing_more() -> None:
    with Collector(processes=1, max_tasks_per_child=2) as pool:
        calls = [pool.submit(Call(os.getpid)) for _ in range(6)]
        pids = [pool.ending(c).value for c in calls]  # type: ignore[union-attr]
    assert len(set(pids)) == 3 and all(pids.count(p) == 2 for p in pids)


def test_a_call_crosses_the_pipe_with_every_field() -> None:
    import pickle

    call = Call(time.sleep, (0,), {"x": 1}, time_limit=3, soft_time_limit=2, max_attempts=4,
                name="nap", soft_limit_error=KeyError)
    assert pickle.loads(pickle.dumps(call)) == call
    assert pickle.loads(pickle.dumps(call)).soft_limit_error is KeyError


def test_a_host_waits_until_the_workers_have_booted() -> None:
    config = host_adapter.config_module.resolve([("test", {"log_level": "WARNING"})])
    supervisor = Supervisor(dispatcher=Dispatcher(deliver="loop"), processes=2,
                            config=config).start()
    try:
        assert supervisor.wait_until_ready(timeout=60)
        assert sum(c.booted for c in supervisor.workers.values()) == 2
    finally:
        supervisor.stop(timeout=30)
    assert not supervisor.wait_until_ready(timeout=0)  # a stopped supervisor serves no one


def test_a_host_waiting_for_workers_that_cannot_boot_hears_why() -> None:
    config = host_adapter.config_module.resolve([("test", {"log_level": "ERROR"})])
    supervisor = Supervisor(dispatcher=Dispatcher(deliver="loop"), processes=1, config=config,
                            initializer=Call(host_adapter.fail, ("no database",))).start()
    try:
        assert not supervisor.wait_until_ready(timeout=60)
    finally:
        supervisor.stop(timeout=30)
    assert "ValueError: no database" in (supervisor.failure or "")


def test_a_call_that_lends_its_slot_lets_the_call_it_waits_for_run() -> None:
    """One worker: the first call waits inside lend_slot() for a marker only the second
    call writes. The supervisor runs a second worker while it waits, and once the wait
    is over retires one of the two (whichever is idle first: the waiter may end before
    the writer's report is in), without a replacement; without lending the second
    call would never start."""
    from tests import executor_calls

    with Collector(processes=1) as pool:
        assert pool.supervisor.wait_until_ready(timeout=60)
        first_pid = next(iter(pool.supervisor.workers.values())).info.pid
        marker = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"lend-{os.getpid()}-"
                              f"{time.monotonic_ns()}")
        waiter = pool.submit(Call(executor_calls.wait_lending, (marker,)))
        wait_until(lambda: len(pool.supervisor.workers) == 2, 60, "a worker in the lent slot")
        writer = pool.submit(Call(executor_calls.write_marker, (marker,)))
        waited, wrote = pool.ending(waiter), pool.ending(writer)
        assert isinstance(waited, Finished) and isinstance(wrote, Finished), (waited, wrote)
        assert waited.value == first_pid and wrote.value != first_pid
        wait_until(lambda: len(pool.supervisor.workers) == 1, 30, "a worker to retire")
        [survivor] = [c.info.pid for c in pool.supervisor.workers.values()]
        assert survivor in (first_pid, wrote.value)  # retired, not replaced
        os.unlink(marker)


def test_a_lent_slot_goes_to_the_spare_at_once() -> None:
    """With a spare booted, the call waited for runs on it: no worker boots for it."""
    from tests import executor_calls
    from tests.test_spares import booted_spare

    with Collector(processes=1, spare_workers=1) as pool:
        spare = booted_spare(pool.supervisor)
        marker = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"spare-{os.getpid()}-"
                              f"{time.monotonic_ns()}")
        waiter = pool.submit(Call(executor_calls.wait_lending, (marker,)))
        writer = pool.submit(Call(executor_calls.write_marker, (marker,)))
        waited, wrote = pool.ending(waiter), pool.ending(writer)
        assert isinstance(waited, Finished) and isinstance(wrote, Finished), (waited, wrote)
        assert wrote.value == spare
        os.unlink(marker)


def test_without_lending_the_waiting_call_keeps_the_only_slot() -> None:
    from tests import executor_calls

    with Collector(processes=1, max_lent_slots=0) as pool:
        marker = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"nolend-{os.getpid()}-"
                              f"{time.monotonic_ns()}")
        waiter = pool.submit(Call(executor_calls.wait_lending, (marker, 1.0)))
        writer = pool.submit(Call(executor_calls.write_marker, (marker,)))
        waited = pool.ending(waiter)
        assert isinstance(waited, Failed) and waited.error.type == "TimeoutError"
        assert isinstance(pool.ending(writer), Finished)  # only once the slot was free
        assert len(pool.supervisor.workers) == 1
        os.unlink(marker)


def test_withdrawn_calls_leave_the_queue_and_never_run() -> None:
    dispatcher = Dispatcher(deliver="thread")
    events: dict[str, list[Event]] = {}
    config = host_adapter.config_module.resolve([("test", {"log_level": "WARNING"})])
    supervisor = Supervisor(dispatcher=dispatcher, processes=1, config=config).start()
    busy = Call(time.sleep, (0.5,))
    waiting = [Call(time.time) for _ in range(500)]
    try:
        dispatcher.submit(busy, lambda e: events.setdefault(e.call.id, []).append(e))
        wait_until(lambda: busy.id in events, what="the worker to be busy")
        for call in waiting:
            dispatcher.submit(call, lambda e: events.setdefault(e.call.id, []).append(e))
        assert all(dispatcher.cancel(call.id) for call in waiting[:-1])
        assert not dispatcher.cancel(waiting[0].id)  # already withdrawn
        assert dispatcher.queued == 1 and dispatcher.outstanding == 2
        wait_until(lambda: any(isinstance(e, Finished) for e in events.get(waiting[-1].id, [])),
                   what="the one call left to run")
    finally:
        supervisor.stop(timeout=30)
        dispatcher.shutdown()
    assert not any(call.id in events for call in waiting[:-1])  # no event, never run


@pytest.mark.parametrize(("calls_from_main", "start_method", "started_by"), [
    (True, "template", None), (True, "spawn", None),
    (False, "template", template.TemplateWorker), (False, "spawn", launch.LaunchedWorker)])
def test_a_host_with_importable_calls_gets_workers_without_multiprocessing(
        calls_from_main: bool, start_method: str, started_by: type | None) -> None:
    """By default push-mode workers are multiprocessing's (a call may name a function
    of __main__); a host that says its calls are importable gets them started as
    pull-mode workers are, without the resource tracker: forked from the template, or
    fresh interpreters with spawn (Linux)."""
    if not launch.supported():
        pytest.skip("pprunner.launch needs pidfd_open (Linux 5.3 or later)")
    dispatcher = Dispatcher(deliver="thread", calls_from_main=calls_from_main)
    config = host_adapter.config_module.resolve(
        [("test", {"log_level": "WARNING", "start_method": start_method})])
    supervisor = Supervisor(dispatcher=dispatcher, processes=1, config=config).start()
    events: list[Event] = []
    try:
        assert supervisor.wait_until_ready(timeout=60)
        [child] = supervisor.workers.values()
        started = type(child.process)
        dispatcher.submit(Call(os.getpid), events.append)
        wait_until(lambda: any(isinstance(e, Finished) for e in events), what="the call's end")
    finally:
        supervisor.stop(timeout=30)
        dispatcher.shutdown()
    assert started is (started_by or multiprocessing.get_context("spawn").Process)
    assert [e.value for e in events if isinstance(e, Finished)] == [child.process.pid]
