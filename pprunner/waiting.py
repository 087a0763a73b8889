"""Pause-on-wait: what a worker does while its job waits for other jobs.

Every fixed pool deadlocks when all its workers hold parents that wait for
children nobody is free to run. Whatever the job source, a waiting job goes
through the ``pprunner_pause_on_wait`` hook (``WorkerContext.wait_for`` for a
pulled invocation, ``WorkerContext.wait_for_host`` for a host's job), and
these strategies ship behind it:

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
``max_wait_depth``; past it, the worker just waits. A host's jobs cannot be run
nested (the host's consumer claims them), so for them ``nested`` lends the slot.

``lend`` — the worker lends its slot (``WorkerContext.lend_slot``) while it
waits: the supervisor runs one more worker, a booted spare at once if there is
one, until the waiting job ends.

``poll`` — pynenc's own behaviour: the worker only waits, its slot stays taken,
and as many waiting parents as workers hang forever. Kept for compatibility
and to show the difference.

A pulled invocation's wait costs one read per invocation and changes nothing
when everything awaited is already final. Otherwise the waiter is marked
PAUSED with the ids it waits for, then the wait graph is searched for a cycle
(recording first and looking second means two invocations that start waiting
on each other at the same moment cannot both miss it). That needs a backend
with the :class:`~pprunner.backend.Pausing` capability; without it the waiting
task fails with one clear line (MissingCapability) instead of holding its slot
unmarked. A plugin's own strategy may do without it. A host's job is marked in
the host's own terms by its plugin (pynenc's PAUSED), before it asks to wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .backend import POLL_MAX, Backend, Pausing, final_pauses, missing_capability
from .errors import PluginError, ResultTimeout, WaitCycle
from .invocation import Invocation, Status

if TYPE_CHECKING:
    from .consuming import HostJob
    from .jobs import Call
    from .worker import WorkerContext

#: the first pause before looking again at invocations running elsewhere, on a store
#: that does not notify (half the default: a task that waits is often waiting for short ones)
FIRST_PAUSE = 0.0005

#: ``pending()``: which awaited host jobs are not final yet (None: pulled invocations)
Pending = Callable[[], Sequence[str]] | None
Strategy = Callable[["WorkerContext", "Invocation | HostJob | Call", Sequence[str],
                     "float | None", Pending], Sequence[Any]]


def wait_nested(context: WorkerContext, waiter: Invocation | HostJob | Call,
                invocation_ids: Sequence[str], timeout: float | None,
                pending: Pending = None) -> Sequence[Any]:
    """Run the awaited invocations here while they are queued; poll while they run
    elsewhere. A host's jobs are not ours to run: lend the slot while they run."""
    if pending is not None:
        return wait_lending(context, waiter, invocation_ids, timeout, pending)
    assert isinstance(waiter, Invocation)
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


def wait_lending(context: WorkerContext, waiter: Invocation | HostJob | Call,
                 invocation_ids: Sequence[str], timeout: float | None,
                 pending: Pending = None) -> Sequence[Any]:
    """Lend the slot, then wait."""
    with context.lend_slot():
        return wait_polling(context, waiter, invocation_ids, timeout, pending)


def wait_polling(context: WorkerContext, waiter: Invocation | HostJob | Call,
                 invocation_ids: Sequence[str], timeout: float | None,
                 pending: Pending = None) -> Sequence[Any]:
    """Only wait; the worker's slot stays taken meanwhile (unless lent already)."""
    if pending is not None:
        return _until_final(invocation_ids, pending, timeout)
    assert isinstance(waiter, Invocation)
    return _paused(context, waiter, invocation_ids, timeout, lambda backend, pending: False)


STRATEGIES: dict[str, Strategy] = {"nested": wait_nested, "lend": wait_lending,
                                   "poll": wait_polling}


def strategy_named(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise PluginError(f"unknown wait strategy {name!r}; known: "
                          f"{', '.join(sorted(STRATEGIES))} (or one a plugin provides)") from None


def _until_final(job_ids: Sequence[str], pending: Callable[[], Sequence[str]],
                 timeout: float | None) -> list[str]:
    """Ask the host's store until none of ``job_ids`` is pending, pausing half a
    millisecond first and twice as long each time after, up to ``POLL_MAX``: a wait
    for quick jobs ends within a millisecond or two of them, a long one costs the
    store twenty looks a second."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = FIRST_PAUSE
    while left := pending():
        if deadline is not None and time.monotonic() >= deadline:
            raise ResultTimeout(f"waited {timeout} s for {len(left)} job(s); still not "
                                f"final: {', '.join(left)}")
        time.sleep(pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 2, POLL_MAX)
    return list(job_ids)


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
