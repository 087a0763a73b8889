"""``async def`` tasks in a worker: one event loop per worker process, made once.

A worker runs one job at a time, so its coroutine tasks need no loop of their
own each: ``asyncio.run`` per task would build and tear down a loop (and
every connection pool a task's libraries keep on it) for every job. The
loop here is made on the first ``async def`` task and reused by every later
one; what a task leaves running on it (a task it created and never awaited)
is cancelled when the task ends, as ``asyncio.run`` would, so nothing of one
job runs during the next.

A coroutine task that awaits other invocations (``await handle``) pauses
(PAUSED, waiting for them, cycles refused) and lends its worker's slot
while it awaits, so the supervisor runs another worker meanwhile and a fixed
pool cannot deadlock. It does not run what it awaits nested, as the sync
``nested`` strategy does: a coroutine cannot run another on the loop that is
running it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from .awaiting import awaited
from .invocation import Invocation
from .waiting import ended_already, paused, pausing_backend

if TYPE_CHECKING:
    from .worker import WorkerContext

_loop: asyncio.AbstractEventLoop | None = None
#: how many awaits of the running task are under way (it is PAUSED while any is)
_awaiting = 0


def worker_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop for coroutine tasks, made on first use."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a task's coroutine to its end on the worker's loop; return its value.

    Whatever else is left on the loop afterwards is cancelled and awaited. An
    exception raised by a signal handler while the loop waits (a soft time
    limit, a stop) cancels the task too before it goes on up.
    """
    loop = worker_loop()
    task = loop.create_task(coroutine)
    try:
        return loop.run_until_complete(task)
    finally:
        _cancel_leftovers(loop)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    leftovers = asyncio.all_tasks(loop)
    if not leftovers:
        return
    for leftover in leftovers:
        leftover.cancel()
    loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))


async def wait_in_task(context: WorkerContext, invocation_ids: Sequence[str],
                       timeout: float | None) -> list[Invocation]:
    """Await other invocations from inside a running coroutine task: pause it and
    lend the worker's slot while the loop awaits them (no thread, no nesting)."""
    global _awaiting
    assert context.invocation is not None
    backend = pausing_backend(context)
    already = ended_already(backend, invocation_ids)
    if already is not None:
        return already
    # concurrent awaits of one task (asyncio.gather over handles): the first pauses it
    pause = (paused(backend, context, context.invocation, invocation_ids) if not _awaiting
             else contextlib.nullcontext())
    _awaiting += 1
    try:
        with pause, context.lend_slot():
            return await awaited(backend, invocation_ids, timeout)
    finally:
        _awaiting -= 1
