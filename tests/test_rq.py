"""``pprunner_plugins.rq.Worker`` through RQ's own CLI: real ``rq worker`` and
``rq worker-pool`` processes against a real Redis (database 12 of the tests'
server), jobs enqueued with RQ's API and their outcomes read from RQ's records.

rq missing: a skip here, a failure in CI (``PPRUNNER_REQUIRE_RQ=1``); Redis
missing: see ``tests/redis_server.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("rq") is None:
    if os.environ.get("PPRUNNER_REQUIRE_RQ", "") not in ("", "0"):
        raise RuntimeError("PPRUNNER_REQUIRE_RQ is set but rq is not installed: "
                           "pip install -e '.[test]'")
    pytest.skip("rq is not installed (pip install 'pprunner[rq]')", allow_module_level=True)

import psutil
import redis
from rq import Callback, Queue, Retry
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus

from pprunner_plugins.rq import Worker
from tests import rq_jobs
from tests.conftest import REPO, wait_until
from tests.metrics_scrape import free_port, scraped_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(60)]

WORKER_CLASS = "pprunner_plugins.rq.Worker"
#: a dead worker's jobs are handed back this soon in these tests (default 3 s)
DEAD_AFTER = "1.5"


@pytest.fixture(scope="module")
def rq_url(redis_base: str) -> Iterator[str]:
    """Database 12 of the tests' Redis, flushed after the module."""
    url = redis_base.split("?")[0].rsplit("/", 1)[0] + "/12"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def connection(rq_url: str) -> Iterator[redis.Redis]:
    """Its socket timeout outlasts ``latest_result``'s blocking reads (redis-py's 5 s would not)."""
    client = redis.Redis.from_url(rq_url, socket_timeout=60)
    yield client
    client.close()


@pytest.fixture
def queue(connection: redis.Redis, request: pytest.FixtureRequest) -> Queue:
    """A queue of this test's own, so a worker of another test never takes its jobs."""
    return Queue(f"q-{request.node.name}"[:60], connection=connection)


class Workers:
    """Starts ``rq`` CLI processes in sessions of their own; ends them (and their
    horses, which leave the session's process group) in teardown.

    They run as users run them: the ``rq`` script, in a project folder (this
    repository, or ``folder``), with no ``PYTHONPATH``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, command: str, queue: Queue, *extra: str, env: dict[str, str] | None = None,
              folder: Path = REPO, log: Path | None = None) -> subprocess.Popen[bytes]:
        """``log``: a file for what the worker and its horse print (else the test's own)."""
        environment = {**os.environ, "RQ_DEAD_WORKER_AFTER": DEAD_AFTER, **(env or {})}
        environment.pop("PYTHONPATH", None)
        with contextlib.ExitStack() as stack:
            output = None if log is None else stack.enter_context(log.open("wb"))
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "rq"), command, "-w", WORKER_CLASS,
                 "--url", self.url, *extra, queue.name], cwd=folder, start_new_session=True,
                env=environment, stdout=output, stderr=output)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            family = _family(process.pid)
            for member in family:
                with contextlib.suppress(psutil.Error):
                    member.kill()
            process.wait(timeout=10)
            psutil.wait_procs(family, timeout=10)


def _family(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def workers(rq_url: str) -> Iterator[Workers]:
    started = Workers(rq_url)
    try:
        yield started
    finally:
        started.close()


def result(job: Job, timeout: int = 20) -> Any:
    """The job's return value once it finished (RQ's own blocking read of its results)."""
    outcome = job.latest_result(timeout=timeout)
    assert outcome is not None, f"job {job.id} ended with no result within {timeout} s"
    assert outcome.type == outcome.Type.SUCCESSFUL, f"job {job.id}: {outcome.exc_string}"
    return outcome.return_value


def ended(job: Job, *statuses: JobStatus, timeout: float = 20) -> JobStatus:
    """Wait for one of ``statuses``; returns it."""
    return wait_until(lambda: (status := job.get_status(refresh=True)) in statuses and status,
                      timeout, f"job {job.id} to become one of {statuses}")


def failure(job: Job) -> str:
    outcome = job.latest_result()
    assert outcome is not None and outcome.type == outcome.Type.FAILED, outcome
    return str(outcome.exc_string)


def running(connection: redis.Redis, job: Job, timeout: float = 20) -> int:
    """Wait until ``rq_jobs.sleep`` started in a horse; returns the horse's pid."""
    found = wait_until(lambda: connection.lindex(f"started:{job.id}", 0), timeout,
                       f"job {job.id} to start")
    return int(found)


# -- jobs, results and RQ's own semantics ---------------------------------------------------


def test_jobs_run_one_after_another_in_the_same_horse(workers: Workers, queue: Queue) -> None:
    worker = workers.start("worker", queue)
    jobs = [queue.enqueue(rq_jobs.pid) for _ in range(5)]
    total = queue.enqueue(rq_jobs.add, 2, 3)
    pids = {result(job) for job in jobs}
    assert result(total) == 5
    assert len(pids) == 1, f"five jobs ran in {len(pids)} processes: {pids}"
    (horse,) = pids
    assert horse != worker.pid and psutil.Process(horse).ppid() == worker.pid
    # `ps` tells the horse for what it is, between jobs too
    wait_until(lambda: _title(horse).startswith("pprunner worker 1: idle"), 10,
               "the idle horse's process title")


def _title(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project folder: its job module ``jobs`` (``tests/rq_jobs.py``)."""
    (tmp_path / "jobs.py").write_text((REPO / "tests" / "rq_jobs.py").read_text())
    return tmp_path


def test_sighup_rolls_edited_job_code_out_and_loses_no_job(
        workers: Workers, queue: Queue, connection: redis.Redis, project: Path) -> None:
    worker = workers.start("worker", queue, folder=project)
    assert result(queue.enqueue("jobs.add", 2, 3)) == 5
    slow = queue.enqueue("jobs.sleep", 1)
    horse = running(connection, slow)
    # a busy horse shows RQ's own process title, as RQ's horse does
    assert _title(horse).startswith(f"rq:worker:{_name(slow)}: Processing jobs.sleep from")
    jobs = project / "jobs.py"
    jobs.write_text(jobs.read_text().replace("return x + y", "return (x + y) * 100"))
    os.kill(worker.pid, signal.SIGHUP)
    assert result(slow) == horse  # the running job ended where it began
    assert result(queue.enqueue("jobs.add", 2, 3)) == 500  # the new code, on a new horse
    assert worker.poll() is None


def test_exceptions_retry_meta_callbacks_and_dependents_are_rqs(
        workers: Workers, queue: Queue, connection: redis.Redis) -> None:
    workers.start("worker", queue)
    failing = queue.enqueue(rq_jobs.boom, "no luck",
                            on_failure=Callback(rq_jobs.record_failure))
    flaky = queue.enqueue(rq_jobs.flaky, f"flaky:{queue.name}", 2, retry=Retry(max=2))
    parent = queue.enqueue(rq_jobs.with_meta, "parent")
    child = queue.enqueue(rq_jobs.add, 1, 1, depends_on=parent)
    assert result(flaky) == 3  # failed twice, then succeeded on RQ's second retry
    assert result(child) == 2
    parent.refresh()
    assert parent.meta["seen"] == "parent"
    assert ended(failing, JobStatus.FAILED) == JobStatus.FAILED
    assert "ValueError: no luck" in failure(failing)
    assert connection.lrange(f"on_failure:{failing.id}", 0, -1) == [b"ValueError"]
    assert failing.id in queue.failed_job_registry.get_job_ids()


def test_a_timeout_fails_the_job_as_rq_does_and_replaces_the_horse(
        workers: Workers, queue: Queue) -> None:
    workers.start("worker", queue)
    before = result(queue.enqueue(rq_jobs.pid))
    slow = queue.enqueue(rq_jobs.sleep, 30, job_timeout=1)
    ended(slow, JobStatus.FAILED)
    assert "JobTimeoutException: Task exceeded maximum timeout value (1 seconds)" in failure(slow)
    after = result(queue.enqueue(rq_jobs.pid))
    assert after != before, "the horse that timed out ran the next job"


def test_a_horse_that_cannot_raise_the_timeout_is_killed_and_the_job_fails_the_same_way(
        workers: Workers, queue: Queue) -> None:
    workers.start("worker", queue)
    stuck = queue.enqueue(rq_jobs.stuck, 30, job_timeout=1)
    ended(stuck, JobStatus.FAILED, timeout=10)  # RQ's own monitor would wait 61 s
    assert "JobTimeoutException: Task exceeded maximum timeout value (1 seconds)" in failure(stuck)
    assert result(queue.enqueue(rq_jobs.add, 1, 2)) == 3


def test_stop_job_stops_the_running_job_and_the_next_runs_on_a_fresh_horse(
        workers: Workers, queue: Queue, connection: redis.Redis) -> None:
    workers.start("worker", queue)
    slow = queue.enqueue(rq_jobs.sleep, 30)
    horse = running(connection, slow)
    send_stop_job_command(connection, slow.id)
    assert ended(slow, JobStatus.STOPPED) == JobStatus.STOPPED
    assert slow.id in queue.failed_job_registry.get_job_ids()
    assert result(queue.enqueue(rq_jobs.pid)) != horse
    assert not psutil.pid_exists(horse) or psutil.Process(horse).status() == "zombie"


def test_a_horse_killed_under_a_job_fails_or_retries_it_at_once(
        workers: Workers, queue: Queue) -> None:
    workers.start("worker", queue)
    first = result(queue.enqueue(rq_jobs.pid))
    doomed = queue.enqueue(rq_jobs.die)
    retried = queue.enqueue(rq_jobs.die, f"die:{queue.name}", retry=Retry(max=1))
    after = queue.enqueue(rq_jobs.pid)
    assert result(retried) == "survived"
    ended(doomed, JobStatus.FAILED)
    assert "Work-horse terminated unexpectedly" in failure(doomed)
    assert "(signal 9)" in failure(doomed)
    assert result(after) != first


def test_rq_metrics_port_serves_the_horse_s_jobs_and_deaths(
        workers: Workers, queue: Queue) -> None:
    port = free_port()
    workers.start("worker", queue, env={"RQ_METRICS_PORT": f"127.0.0.1:{port}"})
    assert [result(queue.enqueue(rq_jobs.add, n, 1)) for n in range(3)] == [1, 2, 3]
    ended(queue.enqueue(rq_jobs.die), JobStatus.FAILED)
    found = scraped_until(port, lambda m: m("pprunner_worker_boots_total") == 2
                          and m("pprunner_invocations_failed_total", task="tests.rq_jobs.die") == 1,
                          "the killed horse's job and its replacement")
    assert found("pprunner_invocations_started_total", task="tests.rq_jobs.add") == 3
    assert found("pprunner_invocations_succeeded_total", task="tests.rq_jobs.add") == 3
    assert found("pprunner_worker_exits_total", cause="signal", exit="SIGKILL") == 1
    assert found.total("pprunner_worker_exits_total") == 1
    assert found("pprunner_workers_alive") == found("pprunner_workers_configured") == 1


def test_horses_are_recycled_after_max_jobs_per_horse(workers: Workers, queue: Queue) -> None:
    """pprunner's recycling: the replacement boots while the old horse still serves,
    so a few more jobs may run on it; then the new horse takes over."""
    workers.start("worker", queue, env={"RQ_MAX_JOBS_PER_HORSE": "2"})
    pids = [result(queue.enqueue(rq_jobs.pid)) for _ in range(2)]
    assert pids[0] == pids[1], "a horse was replaced before its second job"
    wait_until(lambda: result(queue.enqueue(rq_jobs.pid)) != pids[0], 15,
               "a job on the replacement horse")


def test_horses_are_recycled_over_max_memory_per_horse(workers: Workers, queue: Queue) -> None:
    """Every horse is over a 1 MiB limit after its first job: each job after the
    first few runs on a fresh horse, and none is lost on the way."""
    workers.start("worker", queue, env={"RQ_MAX_MEMORY_PER_HORSE": "1"})
    first = result(queue.enqueue(rq_jobs.pid))
    wait_until(lambda: result(queue.enqueue(rq_jobs.pid)) != first, 15,
               "a job on a horse that replaced one over max_memory_per_horse")


def test_a_bad_worker_setting_fails_with_a_one_line_error(rq_url: str, queue: Queue) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rq.cli", "worker", "-w", WORKER_CLASS, "--url", rq_url,
         "--burst", queue.name], cwd=REPO, capture_output=True, text=True, timeout=30,
        env={**os.environ, "RQ_MAX_JOBS_PER_HORSE": "many"})
    assert done.returncode != 0
    assert "RQ_MAX_JOBS_PER_HORSE='many' is not a valid int" in done.stderr


def test_the_horse_logs_with_the_worker_s_log_and_date_format(
        workers: Workers, queue: Queue, tmp_path: Path) -> None:
    """RQ's ``--log-format``/``--date-format`` reach the horse: its lines (RQ's job
    outcomes and tracebacks, pprunner's own) are formatted as the worker's."""
    log = tmp_path / "worker.log"
    worker = workers.start("worker", queue, "--log-format", "RQLOG %(asctime)s %(message)s",
                           "--date-format", "DATE%Y", log=log)
    ok, failing = queue.enqueue(rq_jobs.add, 1, 2), queue.enqueue(rq_jobs.boom, "traceback")
    assert result(ok) == 3
    assert ended(failing, JobStatus.FAILED) == JobStatus.FAILED
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    lines = log.read_text().splitlines()
    horse = [line for line in lines if "ready (push mode)" in line or "Successfully" in line
             or f"Job OK ({ok.id})" in line or "exception raised while executing" in line]
    assert len(horse) == 4, lines
    assert all(line.startswith(f"RQLOG DATE{time.strftime('%Y')} ") for line in horse), horse
    assert not [line for line in lines if " pid=" in line], "a line in pprunner's own format"


# -- shutdown and deaths -----------------------------------------------------------------


def test_sigterm_lets_the_running_job_finish_then_the_worker_exits(
        workers: Workers, queue: Queue, connection: redis.Redis) -> None:
    worker = workers.start("worker", queue)
    slow = queue.enqueue(rq_jobs.sleep, 1)
    horse = running(connection, slow)
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert result(slow) == horse
    assert not psutil.pid_exists(horse)


def test_a_second_signal_is_a_cold_shutdown_and_the_job_is_handed_back_at_once(
        workers: Workers, queue: Queue, connection: redis.Redis) -> None:
    worker = workers.start("worker", queue)
    slow = queue.enqueue(rq_jobs.sleep, 30)
    horse = running(connection, slow)
    name = _name(slow)
    os.kill(worker.pid, signal.SIGINT)
    wait_until(lambda: connection.hget(f"rq:worker:{name}", "shutdown_requested_date"), 10,
               "the warm shutdown to be recorded")
    # RQ ignores a second signal within a second of the first: repeat it until one counts
    wait_until(lambda: worker.poll() is not None or os.kill(worker.pid, signal.SIGINT), 10,
               "the cold shutdown")
    assert ended(slow, JobStatus.FAILED) == JobStatus.FAILED
    assert "AbandonedJobError" in failure(slow)
    assert not psutil.pid_exists(horse)


def _listening(connection: redis.Redis, name: str) -> bool:
    """Whether the worker ``name`` waits for jobs: subscribed to its pubsub channel
    (RQ's commands), its signal handlers in place (RQ then records it idle)."""
    return (connection.hget(f"rq:worker:{name}", "state") == b"idle"
            and bool(connection.pubsub_numsub(f"rq:pubsub:{name}")[0][1]))


def test_unsubscribing_does_not_wait_for_the_pubsub_thread_s_next_message(
        queue: Queue, connection: redis.Redis) -> None:
    """The race made certain: the pubsub thread already read the unsubscribe reply
    and is back in its 60 s wait when the worker stops it."""
    worker = Worker([queue], connection=connection)
    worker.subscribe()
    assert worker.pubsub is not None
    wait_until(lambda: worker.pubsub.subscribed, 10, "the subscription")
    worker.pubsub.unsubscribe()
    wait_until(lambda: not worker.pubsub.subscribed, 10, "the unsubscribe reply to be read")
    stopping = time.monotonic()
    worker.unsubscribe()
    assert time.monotonic() - stopping < 5


@pytest.mark.parametrize("attempt", range(4))
def test_sigterm_of_an_idle_worker_never_waits_out_the_pubsub_thread_s_sleep(
        workers: Workers, queue: Queue, connection: redis.Redis, attempt: int) -> None:
    """RQ stops redis-py's pubsub thread, which waits for messages 60 s at a time,
    with a join that redis-py 8.2 does not bound: a thread back in its wait held the
    exit for up to a minute (several of the attempts did)."""
    name = f"{queue.name}-{attempt}"
    worker = workers.start("worker", queue, "--name", name)
    wait_until(lambda: _listening(connection, name), 20, "the worker to wait for jobs")
    stopping = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert time.monotonic() - stopping < 5


@pytest.mark.parametrize("attempt", range(4))
def test_a_burst_ends_without_waiting_out_the_pubsub_thread_s_sleep(
        workers: Workers, queue: Queue, attempt: int) -> None:
    """The same teardown ends a burst: it must not take the pubsub thread's minute."""
    jobs = [queue.enqueue(rq_jobs.pid) for _ in range(2)]
    starting = time.monotonic()
    worker = workers.start("worker", queue, "--burst")
    assert worker.wait(timeout=30) == 0
    assert time.monotonic() - starting < 10
    assert all(job.get_status(refresh=True) == JobStatus.FINISHED for job in jobs)


def test_a_sigkilled_worker_s_horse_finishes_its_job_records_it_and_starts_nothing_else(
        workers: Workers, queue: Queue, connection: redis.Redis) -> None:
    """As RQ's forked horse: the job ends and is recorded the RQ way; it is not cut
    off, nor handed back as abandoned by a peer (one watches, on a queue of its own)."""
    workers.start("worker", Queue(f"{queue.name}-peer", connection=connection))
    worker = workers.start("worker", queue)
    slow = queue.enqueue(rq_jobs.sleep, 3)
    horse = running(connection, slow)
    waiting = queue.enqueue(rq_jobs.pid)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    try:
        assert result(slow, timeout=20) == horse
        assert slow.get_status(refresh=True) == JobStatus.FINISHED
        wait_until(lambda: not psutil.pid_exists(horse), 10, "the orphaned horse to exit")
    finally:
        with contextlib.suppress(psutil.Error):
            psutil.Process(horse).kill()
    assert waiting.get_status(refresh=True) == JobStatus.QUEUED


def _name(job: Job) -> str:
    job.refresh()
    return str(job.worker_name)


def test_a_sigkilled_worker_s_jobs_are_handed_back_within_seconds_by_the_others(
        workers: Workers, queue: Queue, connection: redis.Redis) -> None:
    first = workers.start("worker", queue)
    retried = queue.enqueue(rq_jobs.hold, f"hold:{queue.name}", 60, retry=Retry(max=1))
    running(connection, retried)
    second = workers.start("worker", queue)  # the first is busy: the next job is the second's
    failed = queue.enqueue(rq_jobs.sleep, 60)
    running(connection, failed)
    survivor = workers.start("worker", queue)
    for victim in (first, second):  # each worker with its horse
        for process in _family(victim.pid):
            process.kill()
        victim.wait(timeout=10)
    assert result(retried, timeout=15) == 2  # run again, by the survivor (Retry)
    assert ended(failed, JobStatus.FAILED, timeout=15) == JobStatus.FAILED
    assert "AbandonedJobError" in failure(failed)
    assert _name(retried) != _name(failed) or survivor.poll() is None


# -- rq worker-pool ------------------------------------------------------------------------


def test_worker_pool_runs_each_worker_with_a_horse_of_its_own(
        workers: Workers, queue: Queue) -> None:
    pool = workers.start("worker-pool", queue, "-n", "2")
    slow = [queue.enqueue(rq_jobs.sleep, 0.5) for _ in range(2)]
    quick = [queue.enqueue(rq_jobs.pid) for _ in range(6)]
    horses = {result(job) for job in slow}
    assert len(horses) == 2, "two workers, but the slow jobs ran in one horse"
    assert {result(job) for job in quick} <= horses
    parents = {psutil.Process(pid).ppid() for pid in horses}
    assert len(parents) == 2 and pool.pid not in parents
    assert {psutil.Process(parent).ppid() for parent in parents} == {pool.pid}
