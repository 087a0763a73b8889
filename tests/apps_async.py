"""Coroutine tasks the asyncio tests run in real worker processes."""

from __future__ import annotations

import asyncio
import os
import time

from pprunner import App, ResultTimeout

app = App(name="async-tests")


@app.task
async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@app.task
async def where_am_i() -> list[int]:
    """The worker's pid and the id of the loop running this task."""
    return [os.getpid(), id(asyncio.get_running_loop())]


@app.task
async def sum_of_doubles(n: int, together: bool) -> int:
    """Awaits n children: one after another, or all at once (asyncio.gather)."""
    handles = [await double.enqueue_async(i) for i in range(n)]
    if together:
        return sum(await asyncio.gather(*handles))
    return sum([await handle for handle in handles])


@app.task
def blocks_until(path: str, seconds: float) -> None:
    """A sync child that runs until ``path`` exists (a bounded poll: ``seconds`` at most)."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


@app.task
async def impatient(path: str) -> str:
    """Awaits a child that does not end in time (``poll``: the child is not run
    nested, so nothing else holds the wait up); says what the await raised."""
    child = await blocks_until.enqueue_async(path, 30)
    try:
        await child.result_async(timeout=0.2, strategy="poll")
    except ResultTimeout as exc:
        return f"{type(exc).__name__} is TimeoutError: {isinstance(exc, TimeoutError)}"
    return "no timeout"


@app.task
async def fails() -> None:
    raise ValueError("the coroutine broke")


@app.task(soft_time_limit=0.3)
async def oversleeps() -> str:
    """Awaits longer than its soft time limit allows."""
    await asyncio.sleep(60)
    return "slept"


@app.task
async def leaves_a_task_behind(marker: str) -> str:
    """Starts a task it never awaits; that task notes its cancellation in ``marker``."""
    async def lingers() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            with open(marker, "w") as file:
                file.write("cancelled")
            raise

    asyncio.get_running_loop().create_task(lingers())
    await asyncio.sleep(0)  # let it start
    return "returned"
