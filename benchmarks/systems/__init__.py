"""The registries of benchmarked systems, in table order, the baseline first:
:data:`SYSTEMS` for ``python -m benchmarks run``, :data:`EXECUTORS` for
``python -m benchmarks executors``.

Adding a system (Celery, RQ, Dramatiq, Huey, pynenc...) is one module in
this package with a :class:`~benchmarks.system.System` subclass that lists
its library in ``requires`` and imports it lazily, plus its class below.
"""

from __future__ import annotations

from ..system import System
from .celery import (
    CeleryRedis,
    CeleryRedisAcksLate,
    CeleryRedisPprunner,
    CeleryRedisPprunnerAcksLate,
)
from .drain_floor import (
    DrainFloorPostgres,
    DrainFloorPostgresBatch,
    DrainFloorRedis,
    DrainFloorRedisBatch,
    DrainFloorSQLite,
)
from .dramatiq import DramatiqRedis, DramatiqRedisPprunner
from .executors import LokyExecutor, PprunnerExecutor, PprunnerExecutorMetrics
from .huey import HueyRedis, HueyRedisPprunner
from .pgqueuer import Pgqueuer
from .pprunner_postgres import (
    PprunnerPostgres,
    PprunnerPostgresAsyncCommit,
    PprunnerPostgresBatch,
)
from .pprunner_redis import PprunnerRedis, PprunnerRedisBatch
from .pprunner_sqlite import (
    PprunnerSQLite,
    PprunnerSQLiteMetrics,
    PprunnerSQLiteMsgpack,
    PprunnerSQLiteSpare,
    PprunnerSQLiteSpawn,
)
from .pprunner_tracing import PprunnerSQLiteTracingApi, PprunnerSQLiteTracingSdk
from .pynenc import PynencSQLite, PynencSQLitePprunner, PynencSQLitePprunnerSpare
from .rq import RQSimpleWorkerPool, RQWorkerPool, RQWorkerPoolPprunner
from .stdlib_pools import MultiprocessingPool, ProcessPoolExecutorSystem
from .taskiq import TaskiqPprunner, TaskiqProcessPool, TaskiqThreads

SYSTEMS: tuple[type[System], ...] = (PprunnerSQLite, PprunnerSQLiteMsgpack,
                                     PprunnerSQLiteMetrics, PprunnerSQLiteSpawn,
                                     PprunnerSQLiteSpare, PprunnerRedis,
                                     PprunnerRedisBatch, PprunnerPostgres,
                                     PprunnerPostgresAsyncCommit, PprunnerPostgresBatch, Pgqueuer,
                                     MultiprocessingPool,
                                     ProcessPoolExecutorSystem, CeleryRedis, CeleryRedisAcksLate,
                                     CeleryRedisPprunner, CeleryRedisPprunnerAcksLate,
                                     DramatiqRedis, DramatiqRedisPprunner,
                                     PynencSQLite, PynencSQLitePprunner, PynencSQLitePprunnerSpare,
                                     RQWorkerPool, RQSimpleWorkerPool, RQWorkerPoolPprunner,
                                     HueyRedis, HueyRedisPprunner)
#: ratios in the tables compare every system with this one
BASELINE = PprunnerSQLite.name

#: the pools without a queue, ``pprunner.Executor`` among them
EXECUTORS: tuple[type[System], ...] = (ProcessPoolExecutorSystem, PprunnerExecutor,
                                       PprunnerExecutorMetrics, LokyExecutor,
                                       MultiprocessingPool)
#: the executor tables compare every pool with the one ``pprunner.Executor`` stands in for
EXECUTOR_BASELINE = ProcessPoolExecutorSystem.name

#: pprunner with tracing off (the baseline) and on, without and with the SDK
TRACING_SYSTEMS: tuple[type[System], ...] = (PprunnerSQLite, PprunnerSQLiteTracingApi,
                                             PprunnerSQLiteTracingSdk)

#: pprunner's drain next to its store operations alone (issue 17's goals; issue 29's
#: for PostgreSQL), and Huey's
FLOOR_SYSTEMS: tuple[type[System], ...] = (PprunnerSQLite, DrainFloorSQLite, PprunnerRedis,
                                           DrainFloorRedis, PprunnerRedisBatch,
                                           DrainFloorRedisBatch, PprunnerPostgres,
                                           DrainFloorPostgres, PprunnerPostgresBatch,
                                           DrainFloorPostgresBatch, HueyRedis)

#: ``taskiq worker``'s default (threads, the baseline), its process pool, pprunner's receiver
TASKIQ_SYSTEMS: tuple[type[System], ...] = (TaskiqThreads, TaskiqProcessPool, TaskiqPprunner)
TASKIQ_BASELINE = TaskiqThreads.name
