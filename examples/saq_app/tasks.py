"""SAQ with its blocking work on pprunner's workers (from the repository root)::

    SAQ_REDIS_URL=redis://127.0.0.1:6379/3 saq examples.saq_app.tasks.settings

SAQ runs async job functions on its event loop and sync ones in a thread pool,
where CPU-bound work holds the GIL the loop needs. Here the job functions stay
async and send their blocking work to a ``pprunner.Executor``: it runs on two
persistent processes, and a process that dies fails only the job it ran (with
``pprunner.WorkerLost``); a new process takes its slot.
"""

from __future__ import annotations

import os
from typing import Any

from saq import Queue

from examples import blocking_work

queue = Queue.from_url(os.environ.get("SAQ_REDIS_URL", "redis://127.0.0.1:6379/3"),
                       name="pprunner-example")


async def crunch(ctx: dict[str, Any], *, n: int) -> int:
    return await blocking_work.in_pool(ctx, blocking_work.crunch, n)


async def hold(ctx: dict[str, Any], *, marker: str, seconds: float) -> int:
    return await blocking_work.in_pool(ctx, blocking_work.hold, marker, seconds)


settings = {"queue": queue, "functions": [crunch, hold], "concurrency": 4,
            "startup": blocking_work.open_pool, "shutdown": blocking_work.close_pool}
