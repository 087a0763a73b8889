"""Celery workers on Redis, as Celery's docs start them, in two configurations, on
Celery's prefork pool and on pprunner's (:mod:`pprunner_plugins.celery`).

The pool is a real ``python -m celery -A benchmarks.peer_apps.celery_app
worker --pool=prefork --concurrency=2 --loglevel=WARNING`` subprocess: a
main process that consumes from Redis and two forked pool children. The
benchmark process is the producer (``.delay()``, ``.get()``), with its own
app for the same database (:func:`benchmarks.peer_apps.celery_app.make_app`).

Each system has a Redis database of its own, broker and result backend
alike (:class:`~.redis_database.OwnRedisDatabase`).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

from .. import procs, system, workload
from ..peer_apps import redis_db
from ..pool_process import LoggedPool
from ..system import WORKERS, CrashRun, IdleRun, ThroughputRun
from .redis_database import OwnRedisDatabase

#: seconds one readiness ping waits for the worker's answer
PING_TIMEOUT = 0.25


class CelerySystem(OwnRedisDatabase):
    """Celery on its own Redis database; subclasses choose the database and
    whether tasks are acknowledged late."""

    requires: ClassVar[tuple[str, ...]] = ("celery", "redis")
    database: ClassVar[int]
    acks_late: ClassVar[bool]
    #: how the worker command picks its pool, and what it needs in its environment
    pool_option: ClassVar[str] = "--pool=prefork"
    pool_env: ClassVar[dict[str, str]] = {}

    @classmethod
    def url(cls) -> str:
        return redis_db.url(cls.database)

    def setup(self, workdir: Path) -> None:
        super().setup(workdir)
        from ..peer_apps import celery_app  # imports celery: only once it is known installed

        self.app = celery_app.make_app(self.url(), acks_late=self.acks_late)
        self.cleanup.callback(self._close_producer)
        self.tasks = self.app.tasks
        self.ready_log = workdir / "ready.log"
        self.env = system.child_env(**{
            celery_app.URL_ENV: self.url(),
            celery_app.ACKS_LATE_ENV: "1" if self.acks_late else "0",
            celery_app.READY_LOG_ENV: str(self.ready_log),
            # billiard's temp folder (pymp-*), which a SIGKILL leaves behind, goes
            # with the round's folder (in the same temp dir, so nothing else changes)
            "TMPDIR": str(workdir), **self.pool_env})
        # SIGKILL at the round's end: the warm shutdown takes ~2 s (and waits for a
        # blocked parent until the SIGKILL anyway); the database is emptied afterwards
        self.pool = LoggedPool(self.cleanup, workdir, name="the Celery worker", graceful=False)

    def _close_producer(self) -> None:
        """Close the round's result backend connections, its client and its pub/sub
        (one subscription per task sent). The broker connections are kombu's
        process-wide pool for the URL, which the next round's app reuses."""
        backend = self.app.backend
        backend.result_consumer.stop()
        backend.client.connection_pool.disconnect()
        self.app.close()

    # -- the worker --------------------------------------------------------------------

    def _launch(self) -> subprocess.Popen[bytes]:
        argv = system.python("-m", "celery", "-A", "benchmarks.peer_apps.celery_app", "worker",
                             self.pool_option, f"--concurrency={WORKERS}", "--loglevel=WARNING")
        return self.pool.launch(argv, self.env)

    def _ready_children(self) -> list[tuple[int, float]]:
        """``(pid, time)`` of each pool child that has finished Celery's initializer
        (see ``announce_ready`` in the app): it then waits for jobs."""
        return workload.attempts(self.ready_log)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Both children are ready and the main process answers a ping: its event
        loop runs, so it is consuming the queue."""
        def ready() -> bool:
            self.pool.alive()
            return (len(self._ready_children()) >= WORKERS
                    and bool(self.app.control.ping(timeout=PING_TIMEOUT, limit=1)))
        procs.wait_until(ready, timeout, f"the Celery worker and {WORKERS} children to be ready")

    # -- scenarios ---------------------------------------------------------------------

    def throughput(self, count: int, cap_s: float) -> ThroughputRun:
        """Wall: launch to the last task's finish time, taken in the child (there is
        no burst mode; the worker is stopped afterwards, untimed). Drain: first
        start to last finish, both taken in the children."""
        from celery.result import ResultSet

        results = [self.tasks["noop"].delay(x) for x in range(count)]
        launched_at = time.time()
        self._launch()
        timings = ResultSet(results, app=self.app).get(timeout=60 + count / 100,
                                                      on_interval=self.pool.alive)
        if [value for _, value, _ in timings] != [x + 1 for x in range(count)]:
            raise RuntimeError("unexpected no-op results")
        first_start = min(started for started, _, _ in timings)
        last_finish = max(finished for _, _, finished in timings)
        return ThroughputRun(count=count, wall_s=last_finish - launched_at,
                             drain_s=last_finish - first_start)

    def latency(self, count: int, gap_s: float) -> list[float]:
        self._launch()
        self._wait_ready()
        stamp = self.tasks["stamp"]
        return system.sample_latency(lambda: stamp.delay().get(timeout=10), count, gap_s)

    def crash_recovery(self, task_s: float, bound_s: float) -> CrashRun:
        self._launch()
        self._wait_ready()
        before = {pid for pid, _ in self._ready_children()}
        marker = self.workdir / "attempts.log"
        result = self.tasks["announce_and_sleep"].delay(str(marker), task_s)
        killed_at = system.start_and_kill(marker)
        retry = system.retry_started(marker)

        def given_up() -> str | None:
            """Celery stored the task as failed (WorkerLostError): it will not run again."""
            return f"never ({type(result.result).__name__})" if result.failed() else None

        def replaced() -> float | None:
            """When a new child finished its initializer."""
            return next((at for pid, at in self._ready_children() if pid not in before), None)

        return system.watch_recovery(killed_at, bound_s, rerun=lambda: given_up() or retry(),
                                     ready=replaced)

    def idle_cost(self, window_s: float) -> IdleRun:
        first = self.tasks["stamp"].delay()  # queued before launch: the first task it runs
        launched_at = time.time()
        process = self._launch()
        started_at = first.get(timeout=30, on_interval=self.pool.alive)
        self._wait_ready()
        return system.idle_run(process.pid, launched_at, started_at, window_s)

    def wait_on_subtask(self, parents: int, children: int, bound_s: float) -> system.Value:
        from celery.exceptions import TimeoutError as ResultTimeout
        from celery.result import ResultSet

        self._launch()
        self._wait_ready()

        def send_and_wait() -> list[Any]:
            handles = [self.tasks["parent_of_noops"].delay(children) for _ in range(parents)]
            return ResultSet(handles, app=self.app).get(timeout=bound_s)

        return system.time_parents(send_and_wait, ResultTimeout, parents, children, bound_s)


class CeleryRedis(CelerySystem):
    """Celery's defaults: a task is acknowledged as its child takes it."""

    name = "celery-redis"
    database = 10
    acks_late = False


class CeleryRedisAcksLate(CelerySystem):
    """What Celery's docs recommend for tasks that must survive a worker crash:
    acknowledge when done, requeue when the child dies, prefetch one per child."""

    name = "celery-redis-acks-late"
    database = 11
    acks_late = True


class CeleryRedisPprunner(CeleryRedis):
    """The same app, broker and settings as celery-redis, on pprunner's pool
    (``--pool custom`` with ``CELERY_CUSTOM_WORKER_POOL``) instead of prefork."""

    name = "celery-redis-pprunner"
    database = 15
    pool_option = "--pool=custom"
    pool_env: ClassVar[dict[str, str]] = {
        "CELERY_CUSTOM_WORKER_POOL": "pprunner_plugins.celery:TaskPool"}


class CeleryRedisPprunnerAcksLate(CeleryRedisAcksLate):
    """celery-redis-acks-late's settings on pprunner's pool."""

    name = "celery-redis-pprunner-acks-late"
    database = 9
    pool_option = CeleryRedisPprunner.pool_option
    pool_env = CeleryRedisPprunner.pool_env
