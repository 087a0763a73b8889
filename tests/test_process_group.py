"""A worker that leads its own process group is killed with what its task started,
and nothing of it is left, not even a zombie, when the host hears of the kill
(``pprunner/process_group.py``): RQ's horses lead their groups, and RQ's own test
of a horse's forced death checks exactly this."""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pprunner import config as config_module
from pprunner.dispatch import Dispatcher
from pprunner.jobs import Call, Event, Lost, Started
from pprunner.supervisor import Supervisor
from tests import executor_calls
from tests.conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60),
              pytest.mark.skipif(not hasattr(os, "setpgrp"), reason="POSIX process groups")]


@pytest.fixture
def group_leaders() -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(deliver="loop", calls_from_main=False)
    config = config_module.resolve([("the test", {"processes": 1, "log_level": "WARNING"})])
    supervisor = Supervisor(dispatcher=dispatcher, config=config,
                            initializer=Call(executor_calls.lead_own_group))
    supervisor.start()
    try:
        assert supervisor.wait_until_ready(timeout=30)
        yield dispatcher
    finally:
        supervisor.stop(timeout=30)
        dispatcher.shutdown()


def test_a_killed_group_leader_takes_its_tasks_subprocess_with_it(
        group_leaders: Dispatcher, tmp_path: Path) -> None:
    marker = tmp_path / "sleeper.pid"
    events: list[Event] = []
    call = Call(executor_calls.run_a_subprocess, (str(marker),), name="run a subprocess")
    group_leaders.submit(call, events.append)
    wait_until(marker.exists, timeout=30, what="the task's subprocess")
    sleeper = int(marker.read_text())
    wait_until(lambda: group_leaders.drain() or events, timeout=30, what="the call's start")
    assert isinstance(events[0], Started)
    assert psutil.Process(sleeper).ppid() == events[0].pid  # the worker's own child

    assert group_leaders.kill(call.id, "the test stops it")
    with selectors.DefaultSelector() as selector:
        selector.register(group_leaders.fileno(), selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while not isinstance(events[-1], Lost):
            assert time.monotonic() < deadline, f"no Lost: {events}"
            if selector.select(deadline - time.monotonic()):
                group_leaders.drain()
    # reaped, not left to PID 1 as a zombie, by the time the kill is reported
    assert not psutil.pid_exists(sleeper)
    assert not psutil.pid_exists(events[0].pid)


def test_the_supervisor_is_a_subreaper_only_while_a_killed_group_is_reaped(
        group_leaders: Dispatcher, tmp_path: Path) -> None:
    """A process left a subreaper would inherit, and never reap, the orphans of
    everything it started (a host's other children's, a test run's)."""
    test_a_killed_group_leader_takes_its_tasks_subprocess_with_it(group_leaders, tmp_path)
    assert not _is_subreaper()


def _is_subreaper() -> bool:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    flag = ctypes.c_int(0)
    assert libc.prctl(37, ctypes.byref(flag), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
    return bool(flag.value)
