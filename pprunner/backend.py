"""The Backend contract: the only state shared between processes and hosts.

A backend plugin subclasses :class:`Backend` and registers a factory for its
URL scheme(s) through the ``pprunner_register_backends`` hook.
``pprunner.testing.BackendContract`` checks any implementation against the
promises written here.

The contract is a small required core — what a worker pulling invocations
and a supervisor watching it need — and optional capabilities a backend
declares by subclassing them instead of :class:`Backend` (each one is a
:class:`Backend`): :class:`Pausing` (pause-on-wait), :class:`Admin` (the
operator's listing, requeue and purge) and :class:`Recovery` (taking back
what runners of vanished supervisors held). A host framework's store can
then be a backend without faking what it cannot do. Callers check a
capability with ``isinstance`` and do without it, or say in one line what is
missing (:func:`missing_capability`).

Ownership is the heart of the contract: a claim sets the owner atomically,
and only the owner may finish, pause or resume an invocation. That is what
makes a late result from a runner that lost its invocation harmless.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

import attrs

from .errors import MissingCapability, NotOwner, UnknownInvocation
from .invocation import (
    OWNED_STATUSES,
    ErrorInfo,
    Invocation,
    RunnerInfo,
    Status,
    check_transition,
)

if TYPE_CHECKING:
    import asyncio

    from .awaiting import EndingsWatcher

#: polling for invocations to end starts with this pause and doubles it up to POLL_MAX,
#: so a short task's end is seen within milliseconds while a long wait costs little
POLL_FIRST, POLL_MAX = 0.001, 0.05
#: a store that notifies (``Backend.notifies_final``) is still looked at this often, so
#: a notification that never came (a restart that lost it) delays a waiter by no more
NOTIFIED_RECHECK = 1.0


class Backend(abc.ABC):
    """Stores invocations and runner heartbeats: the required core.

    Must be safe to use from several processes at once (unless
    :attr:`supports_processes` is False); one instance is used by one
    process, but possibly by several threads. Its abstract methods are what
    a worker and a supervisor cannot do without; the optional capabilities
    (:class:`Pausing`, :class:`Admin`, :class:`Recovery`) add the rest.
    """

    #: False for stores that live inside one process (the memory backend):
    #: the supervisor then refuses to start worker processes on it.
    supports_processes: ClassVar[bool] = True
    #: True when :meth:`wait_any` blocks until an invocation ends; False when it
    #: sleeps, and waiters poll with a growing pause (see :func:`final_pauses`)
    notifies_final: ClassVar[bool] = False
    #: the longest pause between a backend's retries during an outage: another
    #: process may get the store back up to this long after this one did
    retry_pause_max: ClassVar[float] = 0.0

    def __init__(self, url: str) -> None:
        self.url = url
        #: wall time at which this process last got the store back after an outage
        #: (0: it never lost it). A backend that waits out outages sets it. During an
        #: outage no runner could heartbeat, so afterwards every runner looks stale:
        #: the supervisor recovers nobody until ``dead_after`` (plus
        #: :attr:`retry_pause_max`, the others' lag) has passed since then.
        self.outage_ended_at = 0.0
        #: asked between retries by a backend that waits out outages, with the seconds
        #: the outage has lasted: False gives up (BackendError). An app's producers wait
        #: ``outage_timeout``; a worker waits as long as it takes (it holds what it
        #: runs); a supervisor until it is asked to stop, so a stop is not held up.
        self.keep_waiting: Callable[[float], bool] = lambda outage_s: True
        #: whether opening the store may create it (a new SQLite file and its folders).
        #: Commands that only look at or change what a store holds set it to False
        #: before first use (see :meth:`pprunner.App.open_existing_only`): a store that
        #: is not there is then a ConfigError instead of a new empty one, so a mistyped
        #: path cannot pass for an empty queue. A store that creates nothing on opening
        #: (a server's) has nothing to refuse and ignores it.
        self.create = True

    # -- producers ----------------------------------------------------------

    @abc.abstractmethod
    def enqueue(self, invocation: Invocation) -> None:
        """Store a new PENDING invocation and wake one blocked claimer."""

    # -- workers -------------------------------------------------------------

    @abc.abstractmethod
    def claim(self, runner_id: str, timeout: float) -> Invocation | None:
        """Atomically take the oldest PENDING invocation for ``runner_id``.

        "Oldest" is by first enqueue: a rerouted invocation keeps its place,
        ahead of everything queued after it. One whose ``not_before`` (a
        retry's back-off) is still ahead is not due yet and is skipped.

        It becomes RUNNING, owned by ``runner_id``, with ``attempts`` raised
        by one and ``started_at`` set. Blocks up to ``timeout`` seconds when
        nothing is pending, without busy polling where the store allows it;
        returns None when the time runs out or :meth:`wakeup` is called.
        """

    @abc.abstractmethod
    def complete(self, invocation_id: str, runner_id: str, result: bytes) -> None:
        """RUNNING -> SUCCESS with ``result``; raises NotOwner unless owned by ``runner_id``."""

    def complete_and_claim(self, invocation_id: str, runner_id: str,
                           result: bytes) -> Invocation | None:
        """:meth:`complete`, then a claim for the same runner that does not block.

        A worker calls it when it will be idle after this completion, so the
        next invocation costs no extra round trip where the store can do both
        at once; override it then. The default simply does one after the
        other. Raises NotOwner as :meth:`complete` does, and then claims nothing.
        """
        self.complete(invocation_id, runner_id, result)
        return self.claim(runner_id, 0.0)

    @abc.abstractmethod
    def fail(self, invocation_id: str, runner_id: str, error: ErrorInfo) -> None:
        """RUNNING (or PAUSED) -> FAILED with ``error``; NotOwner unless owned by ``runner_id``."""

    @abc.abstractmethod
    def retry(self, invocation_id: str, runner_id: str, error: ErrorInfo,
              not_before: float) -> None:
        """RUNNING -> PENDING for another attempt, by the owner.

        The owner is cleared, ``attempts`` kept, ``error`` recorded (and
        appended to ``history``); no claim takes it before ``not_before``.
        """

    def wakeup(self) -> None:
        """Make every :meth:`claim` blocked on this store return soon.

        The supervisor calls it at shutdown so idle workers notice the stop
        event at once. The default does nothing, which is right for stores
        whose claims block only briefly.
        """

    # -- the supervisor --------------------------------------------------------

    @abc.abstractmethod
    def reroute(self, runner_id: str, error: ErrorInfo | None, *,
                retry: bool = True) -> list[Invocation]:
        """Hand back every invocation ``runner_id`` owns (RUNNING or PAUSED).

        With ``error`` (the runner died) the interrupted attempt counts: an
        invocation with attempts left goes back to PENDING keeping ``error``
        as its last error; one that used its ``max_attempts``, or any when
        ``retry`` is False (a hard time limit), ends FAILED with ``error``.
        With ``error=None`` (a graceful hand-back, e.g. at shutdown) the
        attempt is given back and the invocation is PENDING.
        Returns the invocations as they are afterwards (:func:`rerouted` is the rule).
        """

    @abc.abstractmethod
    def owned_by(self, runner_ids: Iterable[str]) -> list[Invocation]:
        """Invocations (RUNNING or PAUSED) owned by any of ``runner_ids``."""

    @abc.abstractmethod
    def record_heartbeats(self, runners: Sequence[RunnerInfo], at: float) -> None:
        """Insert or refresh these runners with ``heartbeat_at = at`` and their ``phase``.

        The supervisor calls it every iteration. What reads heartbeats back is
        optional (:meth:`Admin.runners`, :class:`Recovery`): a store with
        neither capability may keep nothing. A store shared by several hosts
        may keep heartbeats on its own clock (the Redis backend does): it then
        stores its time of arrival minus the heartbeat's age when sent
        (``now - at`` on the caller's clock), and judges staleness by its clock too.
        """

    @abc.abstractmethod
    def forget_runners(self, runner_ids: Iterable[str]) -> None:
        """Drop runners that exited, so they stop showing up as alive."""

    # -- inspection ------------------------------------------------------------

    @abc.abstractmethod
    def get(self, invocation_id: str) -> Invocation:
        """The invocation with its result or error; raises UnknownInvocation (:func:`missing`)."""

    @abc.abstractmethod
    def counts(self) -> dict[Status, int]:
        """How many invocations are in each status (every status present).

        The supervisor's first call, to prove the store is reachable; a burst
        run's progress and end.
        """

    def wait(self, invocation_id: str, timeout: float | None) -> Invocation:
        """Block until the invocation is final (or ``timeout`` runs out) and return it.

        Looks with :meth:`get` and waits between looks with :meth:`wait_any`,
        so it blocks on a store that notifies and polls on one that does not.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pauses = final_pauses(self)
        while True:
            invocation = self.get(invocation_id)
            if invocation.status.is_final:
                return invocation
            pause = next(pauses)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return invocation
                pause = min(pause, left)
            self.wait_any([invocation_id], pause)

    def wait_any(self, invocation_ids: Sequence[str], timeout: float) -> None:
        """Return once any of ``invocation_ids`` may have become final (SUCCESS or
        FAILED) or is unknown, at the latest after ``timeout`` seconds.

        Returning early is allowed: callers look again. The default sleeps out
        ``timeout`` (callers then poll with a growing pause); a store that can
        notify blocks until an ending is announced and sets :attr:`notifies_final`,
        so a long wait costs it nothing until something ends.
        """
        time.sleep(timeout)

    # -- asyncio ---------------------------------------------------------------------

    def watch_endings(self, loop: asyncio.AbstractEventLoop) -> EndingsWatcher:
        """What follows the invocations awaited on ``loop`` (``await handle``), one
        per loop, shared by all its waiters: see :mod:`pprunner.awaiting`.

        The default is one helper thread per loop blocking in :meth:`wait_any`; a
        store with an asynchronous route (a socket the loop can read) overrides it.
        """
        from .awaiting import ThreadedEndingsWatcher

        return ThreadedEndingsWatcher(self, loop)

    async def enqueue_async(self, invocation: Invocation) -> None:
        """:meth:`enqueue` from a coroutine (``await task.enqueue_async(...)``).

        The default runs :meth:`enqueue` in the loop's default executor, so a store
        across the network never blocks the loop; a store with an asynchronous
        client, or a local one whose write is short, overrides it.
        """
        import asyncio  # only coroutines need it: a worker's start does without

        await asyncio.get_running_loop().run_in_executor(None, self.enqueue, invocation)

    def close(self) -> None:
        """Release connections and files. The instance is not used afterwards."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


# -- optional capabilities ------------------------------------------------------------
#
# Each is a Backend with a few more abstract methods. A backend declares one by
# subclassing it (``class MyBackend(Pausing, Admin)``; Backend itself is then
# implied), so ``isinstance(backend, Pausing)`` is the one check, typed.


class Pausing(Backend):
    """Capability: a running task may wait for other invocations without blocking
    its worker's slot (the pause-on-wait strategies in :mod:`pprunner.waiting`).

    Without it, a task that waits inside a worker fails with MissingCapability
    rather than block a slot silently: in a fixed pool that is how fan-outs deadlock.
    """

    @abc.abstractmethod
    def pause(self, invocation_id: str, runner_id: str,
              waiting_for: Sequence[str] = ()) -> None:
        """RUNNING -> PAUSED, ownership kept, recording what it waits for (the
        wait graph, for cycle detection and ``pprunner status``); raises
        NotOwner unless owned by ``runner_id``."""

    @abc.abstractmethod
    def resume(self, invocation_id: str, runner_id: str) -> None:
        """PAUSED -> RUNNING, ``waiting_for`` cleared; NotOwner unless owned by ``runner_id``."""

    @abc.abstractmethod
    def claim_one_of(self, runner_id: str, invocation_ids: Sequence[str]) -> Invocation | None:
        """Like :meth:`claim`, but only among ``invocation_ids`` and without
        blocking: the oldest of them that is PENDING and due, or None."""


class Admin(Backend):
    """Capability: what an operator's commands need — list runners and invocations,
    count and list recent endings, requeue failed ones, purge finished ones
    (``pprunner status``, ``top``, ``failed``, ``retry``, ``purge``, ``scale``) — and
    what the supervisor's ``keep_finished`` needs.

    Without it those commands are one line naming what is missing, and finished
    invocations stay as long as the store keeps them.
    """

    @abc.abstractmethod
    def runners(self) -> list[RunnerInfo]:
        """Every recorded runner, oldest first, with the ``phase`` its last heartbeat
        gave (see :meth:`Backend.record_heartbeats`)."""

    @abc.abstractmethod
    def invocations(self, status: Status, limit: int) -> list[Invocation]:
        """Up to ``limit`` invocations in ``status``, most recently enqueued first."""

    @abc.abstractmethod
    def ended_since(self, since: float) -> dict[Status, int]:
        """How many invocations ended SUCCESS and how many FAILED with ``finished_at``
        at or after ``since`` (both keys always present), as the store holds them now:
        a requeued or purged one no longer counts. ``pprunner top`` divides them by
        the window for its rates, which a difference of :meth:`counts` could not give:
        on a store that ``keep_finished`` purges, finished counts stay flat while work
        goes on. Cost: proportional to what ended since ``since``, not to the store.
        """

    @abc.abstractmethod
    def latest_failures(self, limit: int) -> list[Invocation]:
        """Up to ``limit`` FAILED invocations, the one that failed last first (by
        ``finished_at``, whenever it was enqueued): ``pprunner top``'s recent failures."""

    @abc.abstractmethod
    def requeue(self, invocation_ids: Iterable[str] | None) -> list[Invocation]:
        """FAILED -> PENDING with fresh attempts (an operator's retry); None: every
        FAILED one. History is kept. Returns the requeued invocations (:func:`requeued`)."""

    @abc.abstractmethod
    def purge(self, finished_before: float, limit: int) -> int:
        """Delete up to ``limit`` finished (SUCCESS or FAILED) invocations whose
        ``finished_at`` is before ``finished_before``, oldest first; return how many.

        Invocations in any other status are never touched, however old, and a
        requeued one is no longer finished. The supervisor applies
        ``keep_finished`` and ``pprunner purge`` deletes on demand, both through
        :func:`purge_finished`.
        """


class Recovery(Backend):
    """Capability: take back what runners of vanished supervisors held (a host
    lost, a whole process group SIGKILLed), once their heartbeats are old.

    Without it a supervisor still reroutes what its own dead workers held;
    what a vanished supervisor's workers held stays theirs until the store
    (or the host framework) hands it back.
    """

    @abc.abstractmethod
    def stale_runners(self, older_than: float) -> list[RunnerInfo]:
        """Runners whose last heartbeat is more than ``older_than`` seconds old (on the
        store's clock if it keeps heartbeats on its own: see :meth:`record_heartbeats`)."""

    @abc.abstractmethod
    def recover(self, runner_id: str, older_than: float,
                error: ErrorInfo) -> list[Invocation] | None:
        """Take back what a runner that stopped heartbeating owned — exactly once.

        Atomically: if ``runner_id``'s last heartbeat is more than
        ``older_than`` seconds old, forget the runner and reroute its
        invocations with ``error`` (as :meth:`reroute`), returning them.
        Otherwise — its heartbeat came back, or another recoverer was first
        and the runner is gone — change nothing and return None.
        """


#: every optional capability, in the order they are documented
CAPABILITIES: tuple[type[Backend], ...] = (Pausing, Admin, Recovery)


def capability_methods(capability: type) -> list[str]:
    """The methods ``capability`` adds to the core, as a backend author implements them."""
    return [name for name, member in vars(capability).items()
            if getattr(member, "__isabstractmethod__", False)]


def missing_capability(backend: Backend, capability: type, needed_by: str) -> MissingCapability:
    """The error for a caller that cannot do without ``capability``: one line naming
    what needed it, the capability and its methods, and the backend that lacks it.

    Callers check ``isinstance(backend, capability)`` themselves, which also tells
    the type checker what the backend can do afterwards.
    """
    return MissingCapability(
        f"{needed_by} needs a backend with the {capability.__name__} capability "
        f"({', '.join(capability_methods(capability))}); {type(backend).__name__} "
        f"({backend.url}) does not declare it")


# -- helpers for backend authors and callers -------------------------------------------

#: how many finished invocations one ``Admin.purge`` call deletes at most, so that
#: no single call holds a store's write lock (or Redis's only thread) for long
PURGE_BATCH = 1000


def purge_finished(backend: Admin, finished_before: float,
                   until: float | None = None) -> tuple[int, bool]:
    """:meth:`Admin.purge` in batches until nothing finished before ``finished_before``
    is left, or the monotonic time ``until`` has passed: (how many went, whether all did)."""
    total = 0
    while True:
        purged = backend.purge(finished_before, PURGE_BATCH)
        total += purged
        if purged < PURGE_BATCH:
            return total, True
        if until is not None and time.monotonic() >= until:
            return total, False


def final_pauses(backend: Backend, first: float = POLL_FIRST) -> Iterator[float]:
    """The pauses between looks at invocations that have not ended yet, each one
    spent in :meth:`Backend.wait_any`: a long block on a store that notifies, else
    ``first`` doubling up to :data:`POLL_MAX`."""
    while backend.notifies_final:
        yield NOTIFIED_RECHECK
    pause = first
    while True:
        yield pause
        pause = min(pause * 2, POLL_MAX)


def missing(invocation_id: str) -> UnknownInvocation:
    """The error :meth:`Backend.get` raises for an unknown id, worded alike by every backend."""
    return UnknownInvocation(f"no invocation with id {invocation_id!r}")


def check_owner_change(invocation: Invocation, runner_id: str, new: Status) -> None:
    """Raise NotOwner or IllegalTransition unless ``runner_id`` may make it ``new``."""
    if invocation.owner != runner_id or invocation.status not in OWNED_STATUSES:
        holder = (f"owned by {invocation.owner}" if invocation.status in OWNED_STATUSES
                  else f"{invocation.status}")
        raise NotOwner(f"invocation {invocation.id} is {holder}; runner {runner_id} "
                       f"cannot make it {new}")
    check_transition(invocation.status, new, invocation.id)


def rerouted(invocation: Invocation, error: ErrorInfo | None, now: float,
             retry: bool = True) -> Invocation:
    """The one rule for handing back an owned invocation (see :meth:`Backend.reroute`)."""
    if error is None:
        return attrs.evolve(invocation, status=Status.PENDING, owner=None,
                            attempts=max(invocation.attempts - 1, 0), started_at=None)
    history = (*invocation.history, error)
    if not retry:
        return attrs.evolve(invocation, status=Status.FAILED, error=error, finished_at=now,
                            history=history)
    if invocation.attempts >= invocation.max_attempts:
        attempts = "attempt" if invocation.max_attempts == 1 else "attempts"
        deaths = sum(e.type == error.type for e in history)
        what = f"happened {deaths} times; last: " if deaths > 1 else ""
        final = ErrorInfo(error.type, f"{what}{error.message} (after {invocation.attempts} "
                          f"{attempts}; max_attempts is {invocation.max_attempts})",
                          error.traceback)
        return attrs.evolve(invocation, status=Status.FAILED, error=final, finished_at=now,
                            history=history)
    return attrs.evolve(invocation, status=Status.PENDING, owner=None, error=error,
                        started_at=None, history=history)


def requeued(invocation: Invocation) -> Invocation:
    """The one rule for an operator's retry of a FAILED invocation (see :meth:`Admin.requeue`)."""
    return attrs.evolve(invocation, status=Status.PENDING, owner=None, attempts=0,
                        started_at=None, finished_at=None, not_before=None)
