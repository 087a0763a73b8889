"""Pause-on-wait: what a worker does while its task waits for other invocations.

Every fixed pool deadlocks when all its workers hold parents that wait for
children nobody is free to run. Two strategies ship behind the
``pprunner_pause_on_wait`` hook:

``nested`` (the default) — the waiting worker runs the awaited invocations
itself, nested inside the waiting task, whenever they are still queued;
while they run elsewhere it waits for one to end (blocking on a store that
announces endings, polling with a growing pause otherwise). It never runs
anything else: a worker's stack of nested invocations is always a chain of
ancestors and their descendants. That is what makes it deadlock-free: take
the deepest waiting invocation at the top of any worker's stack — what it
waits for is either queued (so it runs it) or running at the top of another
stack (so it makes progress), because anything above an invocation on a
stack is its own descendant, deeper than the one we took. Nesting is bounded by
``max_wait_depth``; past it, the worker just waits.

``poll`` — pynenc's behaviour: the worker only waits, its slot stays taken,
and as many waiting parents as workers hang forever. Kept for compatibility
and to show the difference.

When everything awaited is already final, a wait costs one read per
invocation and changes nothing. Otherwise both strategies mark the waiter
PAUSED with the ids it waits for, then look for a cycle in that wait graph
(recording first and looking second means two invocations that start
waiting on each other at the same moment cannot both miss it).

Both need a backend with the :class:`~pprunner.backend.Pausing` capability
and otherwise raise MissingCapability, so the waiting task fails with one
clear line instead of holding its slot unmarked: a plain blocking wait is
exactly how a fixed pool deadlocks on a fan-out, and without PAUSED records
no cycle can be seen. A plugin's own strategy may do without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .backend import Backend, Pausing, final_pauses, missing_capability
from .errors import PluginError, ResultTimeout, WaitCycle
from .invocation import Invocation, Status

if TYPE_CHECKING:
    from .worker import WorkerContext

#: the first pause before looking again at invocations running elsewhere, on a store
#: that does not notify (half the default: a task that waits is often waiting for short ones)
FIRST_PAUSE = 0.0005

Strategy = Callable[["WorkerContext", Invocation, Sequence[str], "float | None"],
                    list[Invocation]]


def wait_nested(context: WorkerContext, waiter: Invocation, invocation_ids: Sequence[str],
                timeout: float | None) -> list[Invocation]:
    """Run the awaited invocations here while they are queued; poll while they run elsewhere."""
    deep_enough = context.depth >= context.config.max_wait_depth

    def help_with(backend: Pausing, pending: list[str]) -> bool:
        if deep_enough:
            return False
        claimed = backend.claim_one_of(context.runner_id, pending)
        if claimed is None:
            return False
        context.run_nested(claimed)
        return True

    return _paused(context, waiter, invocation_ids, timeout, help_with)


def wait_polling(context: WorkerContext, waiter: Invocation, invocation_ids: Sequence[str],
                 timeout: float | None) -> list[Invocation]:
    """Only wait; the worker's slot stays taken meanwhile."""
    return _paused(context, waiter, invocation_ids, timeout, lambda backend, pending: False)


STRATEGIES: dict[str, Strategy] = {"nested": wait_nested, "poll": wait_polling}


def strategy_named(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise PluginError(f"unknown wait strategy {name!r}; known: "
                          f"{', '.join(sorted(STRATEGIES))} (or one a plugin provides)") from None


def _paused(context: WorkerContext, waiter: Invocation, invocation_ids: Sequence[str],
            timeout: float | None,
            help_with: Callable[[Pausing, list[str]], bool]) -> list[Invocation]:
    """Mark the waiter PAUSED, refuse cycles, and loop until everything awaited is final.

    ``help_with(backend, pending)`` may run some of the pending ones and says
    whether it did; otherwise the loop waits for one of them to end
    (:func:`final_pauses`). The capability is checked before anything is read, so
    a backend without it fails every wait alike, not only those that would block.
    """
    backend = context.backend
    if not isinstance(backend, Pausing):
        raise missing_capability(backend, Pausing, "a task waiting for other invocations")
    already = [backend.get(i) for i in invocation_ids]
    if all(invocation.status.is_final for invocation in already):
        return already  # nothing to wait for: no pause, no writes
    deadline = None if timeout is None else time.monotonic() + timeout
    backend.pause(waiter.id, context.runner_id, invocation_ids)
    try:
        refuse_cycles(backend, waiter.id, invocation_ids)
        pauses = final_pauses(backend, first=FIRST_PAUSE)
        while True:
            current = {i: backend.get(i) for i in invocation_ids}
            pending = [i for i, invocation in current.items() if not invocation.status.is_final]
            if not pending:
                return [current[i] for i in invocation_ids]
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"waited {timeout} s for {len(pending)} invocation(s); "
                                    f"still not final: {', '.join(pending)}")
            if help_with(backend, pending):
                pauses = final_pauses(backend, first=FIRST_PAUSE)
                continue
            pause = next(pauses)
            if deadline is not None:
                pause = min(pause, max(deadline - time.monotonic(), 0))
            backend.wait_any(pending, pause)
    finally:
        backend.resume(waiter.id, context.runner_id)


def refuse_cycles(backend: Backend, waiter_id: str, invocation_ids: Sequence[str]) -> None:
    """Raise WaitCycle if any awaited invocation waits, directly or not, for ``waiter_id``."""
    parents: dict[str, str] = {i: waiter_id for i in invocation_ids}
    frontier = list(invocation_ids)
    while frontier:
        current = frontier.pop()
        if current == waiter_id:
            chain = [current]
            while chain[-1] != waiter_id or len(chain) == 1:
                chain.append(parents[chain[-1]])
            raise WaitCycle(f"invocation {waiter_id} would wait for itself: "
                            f"{' -> '.join(reversed(chain))}")
        invocation = backend.get(current)
        if invocation.status is Status.PAUSED:
            for awaited in invocation.waiting_for:
                if awaited not in parents:
                    parents[awaited] = current
                    frontier.append(awaited)
