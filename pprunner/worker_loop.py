"""``async def`` tasks in a worker: one event loop per worker process, made once.

A worker runs one job at a time, so its coroutine tasks need no loop of their
own each: ``asyncio.run`` per task would build and tear down a loop (and
every connection pool a task's libraries keep on it) for every job. The
loop here is made on the first ``async def`` task and reused by every later
one; what a task leaves running on it (a task it created and never awaited)
is cancelled when the task ends, as ``asyncio.run`` would, so nothing of one
job runs during the next.

A coroutine task that awaits other invocations (``await handle``) waits as a
synchronous task does, through the ``pprunner_pause_on_wait`` hook
(:mod:`pprunner.waiting`): it is PAUSED, and with the ``nested`` strategy its
worker runs the awaited invocations itself while they are queued, which is
what keeps a fixed pool from deadlocking. The wait holds the task's loop (the
worker has no other job to run meanwhile). An awaited ``async def``
invocation run nested that way cannot run on the loop that is busy awaiting
it: it runs on a loop of its own in a helper thread, while the worker's
thread waits for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from .invocation import Invocation

if TYPE_CHECKING:
    from .worker import WorkerContext

_loop: asyncio.AbstractEventLoop | None = None


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
    if loop.is_running():  # nested in a coroutine task's wait: the loop is awaiting it
        return _run_beside(coroutine)
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


def _run_beside(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run(coroutine)`` in a helper thread, this one waiting for it."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome["error"] = exc

    helper = threading.Thread(target=run, name="pprunner-nested-coroutine")
    helper.start()
    helper.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


async def wait_in_task(context: WorkerContext, invocation_ids: Sequence[str],
                       timeout: float | None, strategy: str | None) -> list[Invocation]:
    """Await other invocations from inside a running coroutine task: the
    pause-on-wait hook, as a synchronous task's wait (see the module's docstring)."""
    return context.wait_for(invocation_ids, timeout, strategy)
