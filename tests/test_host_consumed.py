"""Host-consumed mode: each worker runs a host's own consumer (tests/spool_host.py)."""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pprunner
from pprunner import ExitCode, Supervisor, config
from pprunner.consuming import HostJob
from pprunner.hostfeed import HostFeed
from pprunner.jobs import Call
from tests import spool_host
from tests.conftest import wait_until

pytestmark = pytest.mark.slow


class Exits:
    """The pprunner_worker_exited hook's reports."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.lock = threading.Lock()

    @pprunner.hookimpl
    def pprunner_worker_exited(self, runner: pprunner.RunnerInfo, exit: Any) -> None:
        with self.lock:
            self.seen.append(exit)


class Host:
    """A spool folder and a host-consumed supervisor running its consumer."""

    def __init__(self, folder: Path, processes: int, settle: Any = spool_host.settle,
                 **settings: Any) -> None:
        self.spool = spool_host.Spool(folder)
        self.exits = Exits()
        self.settled: list[tuple[HostJob, Any, bool]] = []
        self.host_settle = settle
        feed = HostFeed(Call(spool_host.make_consumer, (str(folder),)), self._settle)
        self.supervisor = Supervisor(
            feed=feed, processes=processes, plugins=[self.exits],
            config=config.resolve([("the test", {"log_level": "WARNING", **settings})]))

    def _settle(self, job: HostJob, error: Any, retry: bool) -> Any:
        self.settled.append((job, error, retry))
        return self.host_settle(str(self.spool.folder), job, error, retry)

    def result(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        return wait_until(functools.partial(self.spool.result, job_id), timeout,
                          f"the result of {job_id}")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Any]:
    started: list[Host] = []

    def start(processes: int = 2, settle: Any = spool_host.settle, **settings: Any) -> Host:
        running = Host(tmp_path / "spool", processes, settle, **settings)
        running.supervisor.start()
        started.append(running)
        assert running.supervisor.wait_until_ready(timeout=60)
        return running

    yield start
    for running in started:
        running.supervisor.stop(immediate=True, timeout=30)


def test_each_worker_consumes_for_itself(host) -> None:
    running = host(processes=2)
    ids = [running.spool.enqueue("sleep", 0.2) for _ in range(6)]
    pids = {running.result(i)["value"] for i in ids}
    workers = {w.runner.pid for w in running.supervisor.view.workers()}
    assert pids == workers  # both claimed, in parallel
    assert os.getpid() not in pids


def test_a_killed_workers_job_is_settled_at_once_and_runs_again(host, tmp_path: Path) -> None:
    running = host(processes=2)
    markers = tmp_path / "markers"
    markers.mkdir()
    job_id = running.spool.enqueue("block_first", str(markers))
    wait_until((markers / "first").exists, what="the first attempt")
    victim = int((markers / "first").read_text())

    os.kill(victim, signal.SIGKILL)

    assert running.result(job_id)["value"] not in (victim, os.getpid())
    ((job, error, retry),) = running.settled
    assert (job.id, job.name, retry) == (job_id, "block_first", True)
    assert error.type == "WorkerDied" and "SIGKILL" in error.message
    (exit,) = wait_until(lambda: running.exits.seen, what="the exit hook")
    assert exit.signal == "SIGKILL" and [j.id for j in exit.jobs] == [job_id]
    wait_until(lambda: len(running.supervisor.view.workers()) == 2, what="a replacement")


def test_a_death_right_after_quick_jobs_settles_only_the_job_it_ran(host,
                                                                    tmp_path: Path) -> None:
    """The supervisor reads a busy worker's reports in batches; none of the quick
    jobs that ended just before the death is settled as if the worker held it."""
    running = host(processes=1)
    markers = tmp_path / "markers"
    markers.mkdir()
    quick = [running.spool.enqueue("pid") for _ in range(50)]
    job_id = running.spool.enqueue("block_first", str(markers))
    wait_until((markers / "first").exists, what="the job after the quick ones")

    os.kill(int((markers / "first").read_text()), signal.SIGKILL)

    assert running.result(job_id)["value"] > 0  # settled, and ran again
    assert [job.id for job, _error, _retry in running.settled] == [job_id]
    (exit,) = wait_until(lambda: running.exits.seen, what="the exit hook")
    assert [j.id for j in exit.jobs] == [job_id]
    assert all(running.spool.result(i) is not None for i in quick)


def test_a_brokers_own_redelivery_of_a_settled_job_is_dropped(host, tmp_path: Path) -> None:
    """The broker (played here) hands the dead worker's job to the other worker, even
    before the death shows; the supervisor reaps and settles first, then answers:
    the job failed once, in the host's terms, and its redelivery never ran."""
    running = host(processes=2, settle=spool_host.settle_redelivered)
    markers = tmp_path / "markers"
    markers.mkdir()
    job_id = running.spool.enqueue("block_first", str(markers))
    wait_until((markers / "first").exists, what="the first attempt")

    running.spool.enqueue("block_first", str(markers), job_id=job_id, redelivered=True)
    os.kill(int((markers / "first").read_text()), signal.SIGKILL)

    wait_until(lambda: running.spool.dropped() == [job_id], what="the redelivery dropped")
    assert running.spool.result(job_id)["error"] == "WorkerDied"  # settled, not run again
    assert [job.id for job, _error, _retry in running.settled] == [job_id]


def test_a_redelivery_of_a_job_nobody_settled_runs(host) -> None:
    """What a dead worker had only prefetched, or a stopped worker's job: it runs."""
    running = host(processes=1, settle=spool_host.settle_redelivered)
    job_id = running.spool.enqueue("pid", redelivered=True)
    assert running.result(job_id)["value"] > 0
    assert running.spool.dropped() == []


def test_a_job_past_its_hard_limit_is_killed_and_failed_by_the_host(host) -> None:
    running = host(processes=1)
    job_id = running.spool.enqueue("sleep", 60, time_limit=0.5)
    result = running.result(job_id)
    assert result["error"] == "TimeLimitExceeded" and "0.5 s" in result["message"]
    ((job, _error, retry),) = running.settled
    assert job.id == job_id and retry is False
    assert running.result(running.spool.enqueue("pid"))["value"] > 0  # replaced


def test_a_job_past_its_soft_limit_gets_the_error_and_its_worker_serves_on(host) -> None:
    running = host(processes=1)
    job_id = running.spool.enqueue("sleep", 60, soft_time_limit=0.2)
    result = running.result(job_id)
    assert result["error"] == "SoftTimeLimitExceeded" and "sleep" in result["message"]
    assert running.settled == [] and running.exits.seen == []  # the worker was not killed
    assert running.result(running.spool.enqueue("sleep", 0.3, soft_time_limit=5))["value"] > 0


def test_workers_are_recycled_after_max_tasks_without_losing_a_job(host) -> None:
    """As in pull mode, a worker at its limit serves on until its replacement has
    booted (no capacity gap), so it may run a few more jobs first."""
    running = host(processes=1, max_tasks_per_child=2)
    ids = [running.spool.enqueue("sleep", 0.2) for _ in range(8)]
    pids = [running.result(i)["value"] for i in ids]
    assert len(set(pids)) >= 2
    assert running.settled == []  # a recycled worker held nothing
    # the last job's result may come before the worker that retired has exited
    recycled = wait_until(lambda: [e for e in running.exits.seen if e.cause == "recycled"],
                          what="a recycled worker's exit")
    assert all(e.exitcode == 0 for e in recycled)


def test_a_graceful_stop_lets_the_running_job_finish(host) -> None:
    running = host(processes=1)
    job_id = running.spool.enqueue("sleep", 1.0)
    wait_until(lambda: os.listdir(running.spool.folder / "claimed"), what="the job to start")
    assert running.supervisor.stop(timeout=60) == ExitCode.OK
    assert running.spool.result(job_id) is not None
    assert running.settled == []
    assert [e.cause for e in running.exits.seen] == ["stopped"]


def test_a_consumer_that_cannot_be_made_stops_the_supervisor(tmp_path: Path) -> None:
    feed = HostFeed(Call(spool_host.make_consumer, (None,)), spool_host.settle)
    supervisor = Supervisor(feed=feed, processes=1,
                            config=config.resolve([("the test", {"log_level": "WARNING"})]))
    supervisor.start()
    try:
        assert not supervisor.wait_until_ready(timeout=60)
        assert "the host's consumer" in (supervisor.failure or "")
    finally:
        supervisor.stop(timeout=30)
    assert supervisor.exit_code == ExitCode.APP_LOAD_ERROR
