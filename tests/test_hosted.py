"""A hosted supervisor (``start(hosted=True)``): no thread of pprunner's; the
host's own event loop watches ``fileno()`` and calls ``turn()``, as Celery's
hub does. Everything happens in the host's thread, and a call submitted there
is handed to an idle worker before ``submit`` returns."""

from __future__ import annotations

import os
import selectors
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pprunner import config as config_module
from pprunner.dispatch import Dispatcher
from pprunner.errors import PprunnerError
from pprunner.jobs import Call, Event, Finished, Lost, Noted, Started, TimedOut
from pprunner.supervisor import Supervisor
from tests import executor_calls

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class HostLoop:
    """A host's event loop in the test's thread, driving a hosted supervisor."""

    def __init__(self, processes: int = 1, **settings: Any) -> None:
        self.dispatcher = Dispatcher(deliver="supervisor")
        config = config_module.resolve([("test", {"log_level": "WARNING", **settings})])
        self.supervisor = Supervisor(dispatcher=self.dispatcher, processes=processes,
                                     config=config)
        self.events: dict[str, list[Event]] = {}
        self.host = threading.get_ident()
        self.selector = selectors.DefaultSelector()
        self.delay: float | None = 0.0
        self.while_stopping = 0

    def __enter__(self) -> HostLoop:
        self.threads = threading.active_count()
        self.supervisor.start(hosted=True)
        self.selector.register(self.supervisor.fileno(), selectors.EVENT_READ)
        self.run_until(lambda: all(c.booted for c in self.supervisor.workers.values()),
                       what="the workers to boot")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.supervisor.running:
            self.selector.unregister(self.supervisor.fileno())
            self.supervisor.stop(immediate=True)
        self.selector.close()
        self.dispatcher.shutdown()

    def submit(self, call: Call) -> Call:
        self.events[call.id] = []
        self.dispatcher.submit(call, self.record)
        return call

    def record(self, event: Event) -> None:
        assert threading.get_ident() == self.host, "an event delivered off the host's thread"
        self.events[event.call.id].append(event)

    def run_until(self, done: Any, timeout: float = 30, what: str = "it") -> None:
        """Turn the loop (wait on the descriptor, at most the delay turn() asked for)
        until ``done()``."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"no {what} within {timeout} s: {self.events}"
            assert self.delay is not None, "the supervisor stopped"
            self.selector.select(min(left, self.delay))
            self.delay = self.supervisor.turn()

    def ending(self, call: Call) -> Event:
        self.run_until(lambda: any(not isinstance(e, Started | Noted)
                                   for e in self.events[call.id]), what=f"ending of {call}")
        return self.events[call.id][-1]

    def stop(self) -> None:
        self.selector.unregister(self.supervisor.fileno())
        self.supervisor.stop(while_stopping=self._count_while_stopping)

    def _count_while_stopping(self) -> None:
        self.while_stopping += 1


def test_a_call_goes_to_an_idle_worker_before_submit_returns() -> None:
    with HostLoop() as loop:
        assert threading.active_count() == loop.threads  # no thread of pprunner's
        call = loop.submit(Call(executor_calls.mul, (6, 7)))
        assert [type(e) for e in loop.events[call.id]] == [Started]  # no turn in between
        ending = loop.ending(call)
    assert isinstance(ending, Finished) and ending.value == 42


def test_calls_queued_behind_a_busy_worker_and_submitted_by_callbacks_all_run() -> None:
    """A callback (in the middle of a turn) may submit: the call is handed out by the
    same turn or the next, never left waiting for a heartbeat."""
    with HostLoop() as loop:
        follow_ups: list[Call] = []

        def chain(event: Event) -> None:
            loop.record(event)
            if isinstance(event, Finished) and len(follow_ups) < 5:
                follow_up = Call(executor_calls.mul, (event.value, 2))
                follow_ups.append(follow_up)
                loop.events[follow_up.id] = []
                loop.dispatcher.submit(follow_up, chain)

        first = Call(executor_calls.mul, (1, 1))
        loop.events[first.id] = []
        loop.dispatcher.submit(first, chain)
        queued = [loop.submit(Call(executor_calls.mul, (i, 1))) for i in range(5)]
        endings = [loop.ending(c) for c in [first, *queued]]
        loop.run_until(lambda: len(follow_ups) == 5 and all(
            loop.events[c.id] and isinstance(loop.events[c.id][-1], Finished)
            for c in follow_ups), what="the follow-up calls")
    assert [e.value for e in endings] == [1, 0, 1, 2, 3, 4]  # type: ignore[union-attr]
    assert [loop.events[c.id][-1].value for c in follow_ups] == [2, 4, 8, 16, 32]  # type: ignore[union-attr]


def test_a_call_submitted_from_another_thread_wakes_the_hosts_loop() -> None:
    with HostLoop() as loop:
        call = Call(executor_calls.mul, (2, 3))
        loop.events[call.id] = []
        submitter = threading.Thread(target=loop.dispatcher.submit, args=(call, loop.record))
        submitter.start()
        submitter.join()
        assert loop.events[call.id] == []  # it waits for the host's loop to turn
        ending = loop.ending(call)
    assert isinstance(ending, Finished) and ending.value == 6


def test_a_worker_killed_under_a_call_is_lost_and_replaced_in_turns() -> None:
    with HostLoop() as loop:
        ending = loop.ending(loop.submit(Call(executor_calls.kill_self)))
        assert isinstance(ending, Lost) and ending.signal == "SIGKILL"
        loop.run_until(lambda: len(loop.supervisor.workers) == 1 and all(
            c.booted for c in loop.supervisor.workers.values()), what="the replacement")
        assert isinstance(loop.ending(loop.submit(Call(os.getpid))), Finished)


def test_a_hard_limit_is_kept_by_the_delay_turn_asks_for() -> None:
    """Nothing is readable while the call overruns: only the delay turn() returned
    brings the loop back in time to kill it."""
    with HostLoop() as loop:
        ending = loop.ending(loop.submit(Call(executor_calls.run_past, (30,), time_limit=0.5)))
    assert isinstance(ending, TimedOut)


def test_a_stop_runs_in_the_hosts_thread_and_lets_the_running_call_finish(
        tmp_path: Path) -> None:
    with HostLoop() as loop:
        call = loop.submit(Call(executor_calls.hold, (str(tmp_path), "c", "done")))
        loop.run_until(lambda: (tmp_path / "c.started").exists(), what="the call to start")
        releaser = threading.Timer(1.2, (tmp_path / "c.release").touch)
        releaser.start()
        fd = loop.supervisor.fileno()
        loop.stop()
        releaser.join()
        assert not loop.supervisor.running
        assert loop.supervisor.turn() is None
        assert loop.while_stopping >= 2  # the host's timers kept going while it waited
        ending = loop.events[call.id][-1]
        assert isinstance(ending, Finished) and ending.value == "done"
        with pytest.raises(OSError):
            os.fstat(fd)  # closed with the supervisor


def test_turn_from_inside_a_turn_is_refused() -> None:
    with HostLoop() as loop:
        refused: list[str] = []

        def turn_again(event: Event) -> None:
            loop.record(event)
            if isinstance(event, Finished):
                try:
                    loop.supervisor.turn()
                except PprunnerError as exc:
                    refused.append(str(exc))

        call = Call(os.getpid)
        loop.events[call.id] = []
        loop.dispatcher.submit(call, turn_again)
        loop.ending(call)
    assert refused == ["Supervisor.turn() was called from inside a turn"]


def test_a_signal_the_host_sends_through_the_supervisor_is_carried_out_in_a_turn() -> None:
    with HostLoop() as loop:
        call = loop.submit(Call(executor_calls.run_past, (30,)))
        started = loop.events[call.id][0]
        assert isinstance(started, Started)
        loop.supervisor.signal_worker(started.pid, signal.SIGUSR1, "the host ends it")
        ending = loop.ending(call)
    assert isinstance(ending, Lost) and ending.signal == "SIGUSR1"
    assert ending.description == "was killed by SIGUSR1 from the supervisor: the host ends it"
