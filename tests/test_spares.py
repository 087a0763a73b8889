"""Spare workers (``spare_workers``): booted ahead, they take a slot at once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from pprunner import App, ExitCode, Supervisor
from pprunner.child import Phase
from tests import apps
from tests.conftest import wait_until

pytestmark = pytest.mark.slow


def booted_spare(supervisor: Supervisor) -> int:
    """The pid of the supervisor's booted spare, once there is one."""
    state = wait_until(lambda: next((w for w in supervisor.view.workers()
                                     if w.phase is Phase.SPARE), None),
                       what="a booted spare")
    assert state.runner.slot == 0 and state.runner.pid is not None
    return state.runner.pid


def slot_pids(supervisor: Supervisor) -> dict[int, int | None]:
    return {w.runner.slot: w.runner.pid for w in supervisor.view.workers()
            if w.phase is Phase.SERVING}


def test_the_spare_takes_a_killed_workers_slot_and_runs_what_it_held(
        app: App, supervise, marker_dir: Path) -> None:
    app.configure(source="the test", spare_workers=1)
    supervisor = supervise(processes=2)
    spare = booted_spare(supervisor)
    handle = apps.blocks_on_first_attempt.enqueue(str(marker_dir))
    wait_until((marker_dir / "started-1").exists, what="the first attempt")
    victim = int((marker_dir / "started-1").read_text())
    (slot,) = [s for s, pid in slot_pids(supervisor).items() if pid == victim]

    os.kill(victim, signal.SIGKILL)

    assert handle.result(timeout=30) == 2
    wait_until(lambda: slot_pids(supervisor).get(slot) == spare, what="the spare in the slot")
    assert booted_spare(supervisor) not in (spare, victim)  # a new spare boots behind it
    assert apps.add.enqueue(2, 2).result(timeout=30) == 4


def test_a_recycled_worker_hands_its_slot_to_the_spare(app: App, supervise) -> None:
    app.configure(source="the test", spare_workers=1, max_tasks_per_child=1)
    supervisor = supervise(processes=1)
    spare = booted_spare(supervisor)
    first = apps.whoami.enqueue().result(timeout=30)["pid"]
    assert first != spare
    wait_until(lambda: slot_pids(supervisor) == {1: spare}, what="the spare to take slot 1")
    # the retired worker hears it is retired between two claims: until then it may
    # still take one more invocation (a limit is exceeded by what runs meanwhile)
    wait_until(lambda: first not in {w.runner.pid for w in supervisor.view.workers()},
               what="the recycled worker to exit")
    assert apps.whoami.enqueue().result(timeout=30)["pid"] == spare


def test_spares_stop_with_their_supervisor(app: App) -> None:
    app.configure(source="the test", spare_workers=2)
    supervisor = Supervisor(app, processes=1).start()
    try:
        wait_until(lambda: sum(w.phase is Phase.SPARE for w in supervisor.view.workers()) == 2,
                   what="two spares")
        spares = [psutil.Process(w.runner.pid) for w in supervisor.view.workers()
                  if w.phase is Phase.SPARE]
    finally:
        assert supervisor.stop(timeout=60) == ExitCode.OK
    _gone, alive = psutil.wait_procs(spares, timeout=10)
    assert alive == []


def test_the_spare_is_not_counted_as_a_ready_worker(app: App) -> None:
    app.configure(source="the test", spare_workers=1)
    supervisor = Supervisor(app, processes=1).start()
    try:
        assert supervisor.wait_until_ready(timeout=60)
        assert len(slot_pids(supervisor)) == 1
    finally:
        supervisor.stop(timeout=60)
