"""arq with its blocking work on pprunner's workers (from the repository root)::

    ARQ_REDIS_URL=redis://127.0.0.1:6379/4 arq examples.arq_app.tasks.WorkerSettings

arq runs its jobs as coroutines on one event loop and, for CPU-bound or blocking
work, says to ``await loop.run_in_executor(ProcessPoolExecutor(), ...)``. A
``ProcessPoolExecutor`` one of whose processes dies is broken: that job and every
later one fail with ``BrokenProcessPool`` until the worker restarts. With
``pprunner.Executor`` in its place (``examples/blocking_work.py``), only the job whose
process died fails, with ``pprunner.WorkerLost``, and a new process takes its slot.
"""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings

from examples import blocking_work


async def crunch(ctx: dict[str, Any], n: int) -> int:
    return await blocking_work.in_pool(ctx, blocking_work.crunch, n)


async def hold(ctx: dict[str, Any], marker: str, seconds: float) -> int:
    return await blocking_work.in_pool(ctx, blocking_work.hold, marker, seconds)


class WorkerSettings:
    functions = (crunch, hold)
    on_startup = blocking_work.open_pool
    on_shutdown = blocking_work.close_pool
    redis_settings = RedisSettings.from_dsn(os.environ.get("ARQ_REDIS_URL",
                                                           "redis://127.0.0.1:6379/4"))
