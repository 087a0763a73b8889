"""The registry of benchmarked systems, in table order, the baseline first.

Adding a system (Celery, RQ, Dramatiq, Huey, pynenc...) is one module in
this package with a :class:`~benchmarks.system.System` subclass that lists
its library in ``requires`` and imports it lazily, plus its class below.
"""

from __future__ import annotations

from ..system import System
from .pprunner_redis import PprunnerRedis
from .pprunner_sqlite import PprunnerSQLite
from .stdlib_pools import MultiprocessingPool, ProcessPoolExecutorSystem

SYSTEMS: tuple[type[System], ...] = (PprunnerSQLite, PprunnerRedis, MultiprocessingPool,
                                     ProcessPoolExecutorSystem)
#: ratios in the tables compare every system with this one
BASELINE = PprunnerSQLite.name
