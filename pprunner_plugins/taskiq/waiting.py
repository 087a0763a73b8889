"""In each pprunner worker of a ``taskiq worker`` process: its initializer.

The tasks' modules become importable (the functions travel by reference), and
a sync task that waits for another task's result lends its worker's slot
while it waits: the task it waits for may need a worker of this very pool,
and without the loan a pool whose every worker waits would never run it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

from taskiq.task import AsyncTaskiqTask

import pprunner


def prepare_worker(roots: Sequence[str]) -> None:
    """The initializer of each worker: ``roots`` on ``sys.path``, waits that lend."""
    for root in reversed(roots):
        if root not in sys.path:
            sys.path.insert(0, root)
    lend_slot_while_waiting()


def lend_slot_while_waiting() -> None:
    """taskiq's ``wait_result``, in this worker process, lends the slot of the task that
    calls it for as long as it waits."""
    wait = AsyncTaskiqTask.wait_result

    @functools.wraps(wait)
    async def wait_result_lending(task: AsyncTaskiqTask[Any], *args: Any,
                                  **kwargs: Any) -> Any:
        context = pprunner.current_context()
        if context is None or context.job is None:
            return await wait(task, *args, **kwargs)
        with context.lend_slot():
            return await wait(task, *args, **kwargs)

    AsyncTaskiqTask.wait_result = wait_result_lending  # type: ignore[method-assign,assignment]
