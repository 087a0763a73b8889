"""The no-op drain with pprunner's worker removed, for ``python -m benchmarks floor``.

Issue 17 asks for 10,000 no-op tasks/s on SQLite with 2 workers and 3x Huey on
Redis. A worker's store operations alone set a ceiling under that: a ``floor``
system queues the same 10,000 invocations as its ``pprunner`` twin, through the
same app and backend, and drains them with two processes that do nothing but
those operations, through pprunner's own backend code: one ``claim``, then
``complete_and_claim`` (the completion and the next claim in one transaction,
or one Lua script on Redis, or one statement on PostgreSQL) per task, with a
fixed result. No supervisor, no payload decode, no task call, no hooks, no
heartbeats, no time limits, no memory checks. The drain rate is read the same way
as pprunner's (:meth:`~.pprunner_common.PprunnerSystem._drain_s`: the stored ``started_at``
and ``finished_at`` of the invocations).
"""

from __future__ import annotations

import subprocess
from typing import ClassVar

from .. import system
from ..pool_process import LoggedPool
from .pprunner_postgres import PprunnerPostgres, PprunnerPostgresBatch
from .pprunner_redis import PprunnerRedis, PprunnerRedisBatch
from .pprunner_sqlite import PprunnerSQLite


class _Floor:
    """Drains with :mod:`benchmarks.floor_workers` instead of ``pprunner run --burst``."""

    only_scenarios: ClassVar[tuple[str, ...] | None] = ("throughput",)
    backend_url: str
    pool: LoggedPool

    def _launch(self, *, burst: bool = False, **env: str) -> subprocess.Popen[bytes]:
        assert burst, "a floor system only drains"
        return self.pool.launch(system.python("-m", "benchmarks.floor_workers", self.backend_url),
                                system.child_env())


class DrainFloorSQLite(_Floor, PprunnerSQLite):
    name = "floor-sqlite"


class DrainFloorRedis(_Floor, PprunnerRedis):
    name = "floor-redis"


class DrainFloorRedisBatch(_Floor, PprunnerRedisBatch):
    name = "floor-redis-batch"


class DrainFloorPostgres(_Floor, PprunnerPostgres):
    name = "floor-postgres"


class DrainFloorPostgresBatch(_Floor, PprunnerPostgresBatch):
    name = "floor-postgres-batch"
