"""What RQ and Huey share besides their worker command as the pool
(:class:`~.cli_pool.CliPoolSystem`): a Redis database of their own, named
by the peer's app in ``benchmarks/peer_apps/``
(:class:`~.redis_database.OwnRedisDatabase`), readiness read from Redis,
and their crash recovery round.

A worker is *ready* when its Redis connection's last command is the
peer's blocking dequeue (``CLIENT LIST`` on the peer's database: RQ's
``BLMOVE``, Huey's ``BRPOP``): it is waiting for a task. A worker that
runs a task, or waits for a child's result, has sent other commands since.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from .. import procs, system, workload
from ..system import CrashRun
from .cli_pool import BOOT_TIMEOUT_S, CliPoolSystem
from .redis_database import CONNECT_TIMEOUT_S, OwnRedisDatabase

#: the producer's socket timeout: longer than any blocking read it makes (redis-py's
#: default, 5 s, would cut RQ's 30 s XREAD BLOCK for the first task short)
SOCKET_TIMEOUT_S = 60.0
#: wait_on_subtask: a parent waits this many times the benchmark's bound for each
#: child, so it is still waiting when the benchmark gives up; teardown ends it
PARENT_WAIT_FACTOR = 2


class RedisPeer(OwnRedisDatabase, CliPoolSystem):
    """A Redis-backed peer; subclasses fill in the hooks."""

    #: the peer's app (in ``benchmarks/peer_apps/``), whose ``URL`` is the peer's database
    app_module: ClassVar[str]
    #: the command a worker's connection last sent while it waits for a task
    dequeue_command: ClassVar[str]
    #: ``CLIENT LIST`` is a round trip to the server: look a little less often
    ready_poll_s = 0.01
    #: SIGKILL at the round's end: a graceful stop takes 1-3 s (Huey's SIGTERM,
    #: RQ's warm shutdown) and the database is emptied afterwards anyway
    graceful_stop = False

    def lost(self, handle: Any) -> str | None:
        """Why the killed task will never run again, once the peer says so."""
        return None

    @classmethod
    def app(cls) -> ModuleType:
        """The peer's app; it imports the peer's library, so only once that is installed."""
        return importlib.import_module(cls.app_module)

    @classmethod
    def url(cls) -> str:
        return str(cls.app().URL)

    def setup(self, workdir: Path) -> None:
        super().setup(workdir)
        import redis

        self.tasks = self.app()
        self.redis = redis.Redis.from_url(self.url(), socket_connect_timeout=CONNECT_TIMEOUT_S,
                                          socket_timeout=SOCKET_TIMEOUT_S)
        self.cleanup.callback(self.redis.close)

    def ready_workers(self) -> set[int]:
        """Ids of the connections on the peer's database waiting for a task."""
        self.pool.alive()
        db = self.redis.connection_pool.connection_kwargs.get("db", 0)
        return {int(client["id"]) for client in self.redis.client_list()
                if int(client["db"]) == db and client["cmd"] == self.dequeue_command}

    def parent_args(self, children: int, bound_s: float) -> tuple[Any, ...]:
        """The children, and how long the parent waits for each: longer than the
        benchmark's bound, so it is still waiting when the benchmark gives up."""
        return (children, PARENT_WAIT_FACTOR * bound_s)

    def crash_recovery(self, task_s: float, bound_s: float) -> CrashRun:
        self._start()
        marker = self.workdir / "attempts.log"
        handle = self.send("announce_and_sleep", str(marker), task_s)
        procs.wait_until(lambda: workload.attempts(marker), BOOT_TIMEOUT_S,
                         "the long task to start")
        before = self.ready_workers()  # the other worker, not the one running the task
        killed_at = system.start_and_kill(marker)
        retry = system.retry_started(marker)
        return system.watch_recovery(
            killed_at, bound_s, rerun=lambda: retry() or self.lost(handle),
            ready=lambda: time.time() if self.ready_workers() - before else None)
