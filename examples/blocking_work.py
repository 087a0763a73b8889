"""What the arq and SAQ examples (``examples/arq_app``, ``examples/saq_app``) share: a
``pprunner.Executor`` opened and closed by their workers' start-up and shut-down hooks
(both queues pass those hooks a ``ctx`` dict), and the blocking work it runs, plain
functions it sends to its processes by reference, as ``ProcessPoolExecutor`` does."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pprunner


async def open_pool(ctx: dict[str, Any]) -> None:
    """The worker's start-up hook: two persistent, supervised processes."""
    ctx["pool"] = pprunner.Executor(max_workers=2)


async def close_pool(ctx: dict[str, Any]) -> None:
    """The worker's shut-down hook."""
    ctx["pool"].shutdown()


async def in_pool(ctx: dict[str, Any], function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` on one of the pool's processes, awaited on the event loop."""
    return await asyncio.get_running_loop().run_in_executor(ctx["pool"], function, *args)


def crunch(n: int) -> int:
    """CPU-bound: the sum of the first ``n`` squares, in pure Python (the GIL held)."""
    return sum(i * i for i in range(n))


def hold(marker: str, seconds: float) -> int:
    """Blocks its worker for ``seconds`` after writing its pid to ``marker`` (in one step,
    so a reader never sees half of it); returns the pid."""
    partial = Path(f"{marker}.partial")
    partial.write_text(str(os.getpid()))
    partial.replace(marker)
    time.sleep(seconds)
    return os.getpid()
