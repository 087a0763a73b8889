"""RQ 3.0: ``rq worker-pool`` with two workers, on its own Redis database, with
RQ's forking ``Worker`` (``rq-worker-pool``), its no-fork ``SimpleWorker``
(``rq-simpleworker``) and pprunner's persistent horses
(``rq-worker-pool-pprunner``: ``-w pprunner_plugins.rq.Worker``).

The pool is ``python -m rq.cli worker-pool --num-workers 2 --url <db 12>``
(the ``rq`` command), RQ's defaults otherwise: each worker forks a work
horse per job, and one of them runs RQ's scheduler in a process of its own.
Jobs are the plain functions of :mod:`benchmarks.workload` (see
:mod:`benchmarks.peer_apps.rq_app`), enqueued on the ``default`` queue.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .. import procs, system
from ..system import WORKERS, ThroughputRun
from .redis_peer import RedisPeer

#: the crash task is enqueued with ``Retry(max=2)``: three attempts in all, as
#: pprunner's ``announce_and_sleep`` has (``max_attempts=3``); RQ retries nothing by default
CRASH_RETRIES = 2


class RQWorkerPool(RedisPeer):
    name = "rq-worker-pool"
    requires = ("rq", "redis")
    app_module = "benchmarks.peer_apps.rq_app"
    dequeue_command = "blmove"

    def setup(self, workdir: Path) -> None:
        super().setup(workdir)
        from rq import Queue

        self.queue = Queue(connection=self.redis)

    #: the ``-w`` worker class; None: RQ's default (a fork per job)
    worker_class: str | None = None

    def command(self) -> list[str]:
        chosen = ("-w", self.worker_class) if self.worker_class else ()
        return system.python("-m", "rq.cli", "worker-pool", "--num-workers", str(WORKERS),
                             *chosen, "--url", self.url())

    def _launch(self, *extra: str) -> subprocess.Popen[bytes]:
        pool = super()._launch(*extra)
        self.cleanup.callback(self._stop, pool)  # runs before the process group is ended
        return pool

    def _stop(self, pool: subprocess.Popen[bytes]) -> None:
        """End the pool at once without orphaning a work horse.

        A horse leaves the pool's process group (``os.setpgrp``), so ending
        the group alone would leave a running one behind, such as a parent
        still waiting for its children. The group is frozen first (SIGSTOP),
        so no worker forks another horse, then the horses are killed, then
        the group. (A warm shutdown, SIGTERM, takes 2-3 s and keeps nothing
        the round needs.)
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pool.pid, signal.SIGSTOP)
        _kill_horses(pool.pid)
        procs.kill_group(pool.pid)

    def send(self, task: str, *args: Any) -> Any:
        from rq import Retry

        retry = Retry(max=CRASH_RETRIES) if task == "announce_and_sleep" else None
        return self.queue.enqueue(getattr(self.tasks, task), *args, retry=retry)

    def result(self, handle: Any, timeout: float) -> Any:
        """``job.latest_result(timeout=...)``: an XREAD BLOCK on the job's result stream."""
        from rq.results import Result

        result = handle.latest_result(timeout=math.ceil(timeout) if timeout > 0 else 0)
        if result is None:
            raise TimeoutError(f"no result for job {handle.id} within {timeout:g} s")
        if result.type != Result.Type.SUCCESSFUL:
            raise RuntimeError(f"job {handle.id} failed: {result.exc_string}")
        return result.return_value

    def lost(self, handle: Any) -> str | None:
        from rq.job import JobStatus

        status = handle.get_status(refresh=True)
        return f"never (job {status.value})" if status == JobStatus.FAILED else None

    def throughput(self, count: int, cap_s: float) -> ThroughputRun:
        """Timed from launch to the exit of ``rq worker-pool --burst``, or stopped
        ``cap_s`` after its launch (a fork per job makes RQ slow)."""
        from rq import Queue
        from rq.job import Job, JobStatus

        with self.redis.pipeline() as pipe:
            jobs = self.queue.enqueue_many(
                [Queue.prepare_data(self.tasks.noop, (x,)) for x in range(count)], pipeline=pipe)
            pipe.execute()
        started = time.perf_counter()
        pool = self._launch("--burst")
        wall: system.Value | None
        try:
            code = pool.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            self._stop(pool)
            wall, code = None, 0
        else:
            wall = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"rq worker-pool --burst exited with {code}:\n{self.pool.tail()}")
        done = [job for job in Job.fetch_many([job.id for job in jobs], connection=self.redis)
                if job is not None and job.get_status(refresh=False) == JobStatus.FINISHED]
        if wall is None:
            wall = system.stopped_at(cap_s, len(done), count)
        elif len(done) != count:
            raise RuntimeError(f"{len(done)} of {count} jobs finished")
        first = min(job.started_at for job in done if job.started_at is not None)
        last = max(job.ended_at for job in done if job.ended_at is not None)
        return ThroughputRun(count=len(done), wall_s=wall,
                             drain_s=(last - first).total_seconds())


class RQSimpleWorkerPool(RQWorkerPool):
    """RQ's no-fork worker: jobs run in the worker process itself (no isolation)."""

    name = "rq-simpleworker"
    worker_class = "rq.SimpleWorker"


class RQWorkerPoolPprunner(RQWorkerPool):
    """pprunner's RQ worker: one persistent, supervised horse per worker."""

    name = "rq-worker-pool-pprunner"
    requires = ("rq", "redis", "pprunner_plugins.rq")
    worker_class = "pprunner_plugins.rq.Worker"


def _kill_horses(pool_pid: int) -> None:
    """SIGKILL the pool's descendants outside its process group: the work horses."""
    for pid in procs.descendants(pool_pid):
        if (stat := procs.stat(pid)) is not None and stat.pgrp != pool_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
