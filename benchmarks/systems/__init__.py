"""The registry of benchmarked systems, in table order, the baseline first.

Adding a system (Celery, RQ, Dramatiq, Huey, pynenc...) is one module in
this package with a :class:`~benchmarks.system.System` subclass that lists
its library in ``requires`` and imports it lazily, plus its class below.
"""

from __future__ import annotations

from ..system import System
from .celery import CeleryRedis, CeleryRedisAcksLate
from .dramatiq import DramatiqRedis
from .huey import HueyRedis
from .pprunner_redis import PprunnerRedis
from .pprunner_sqlite import PprunnerSQLite, PprunnerSQLiteMsgpack
from .pynenc import PynencSQLite, PynencSQLitePprunner
from .rq import RQWorkerPool
from .stdlib_pools import MultiprocessingPool, ProcessPoolExecutorSystem

SYSTEMS: tuple[type[System], ...] = (PprunnerSQLite, PprunnerSQLiteMsgpack, PprunnerRedis,
                                     MultiprocessingPool,
                                     ProcessPoolExecutorSystem, CeleryRedis, CeleryRedisAcksLate,
                                     DramatiqRedis, PynencSQLite, PynencSQLitePprunner,
                                     RQWorkerPool, HueyRedis)
#: ratios in the tables compare every system with this one
BASELINE = PprunnerSQLite.name
