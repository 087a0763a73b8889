"""A worker's batches of claims and completions, an opt-in trade for a store's
round trips (``?batch=N`` in a backend's URL, where the backend offers it).

By default a worker's completion and its next claim are one round trip to the
store (and, for a store that commits to disk, one flush), per task. With
``batch=N`` (N > 1) a worker that keeps finishing tasks quickly claims several
at once and writes their completions together, with the next claim, in one
round trip: one per batch. The batch starts at one task and doubles while
batches end within :data:`GROW_WITHIN` seconds, up to N. A batch still running
past that gives back what it holds ahead, after the task that ran past it,
and the next is one again; so does a worker that had to wait for work. Slow
tasks run as without it.

What it trades, and only for those who ask for it (see the backends' pages):

- a completion is written with its batch's last one: until then its
  invocation reads RUNNING and its waiters wait (about :data:`GROW_WITHIN`,
  and the task that ran past it);
- tasks claimed ahead are RUNNING, owned by the worker, before they start (as
  long);
- a worker's death reruns what it had finished but not written, and counts
  an attempt (``RunnerLost``) against what it had claimed ahead. Only tasks
  never attempted before, and allowed more than one attempt, are claimed
  ahead, so a task that killed its worker runs alone after that.

Everything else is unchanged: owner-guarded writes (a late completion is
refused), a worker's hand-back returns what it claimed ahead as never
started, and a task that waits for others first writes what is finished and
gives back what is ahead, so nothing it waits for is held by its own worker.
This module only keeps the worker's side of the books; each backend writes
them in its own terms.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Collection, Iterable

import attrs

from pprunner.errors import ConfigError, IllegalTransition
from pprunner.invocation import Invocation

logger = logging.getLogger("pprunner.batching")

#: a batch that ends within this many seconds of its claim lets the next one double
GROW_WITHIN = 0.05


@attrs.frozen
class Finished:
    """A completion not written yet."""

    invocation_id: str
    result: bytes
    #: when it was handed out from the batch; None: as its claim recorded it
    started_at: float | None
    finished_at: float


@attrs.define
class Batch:
    """What one worker holds besides the invocation it runs: invocations claimed
    ahead, and completions not written yet."""

    limit: int
    #: how many the next claim takes
    size: int = 1
    ahead: collections.deque[Invocation] = attrs.Factory(collections.deque)
    finished: list[Finished] = attrs.Factory(list)
    #: the invocation handed out last, as handed out (its real start)
    running: Invocation | None = None
    #: when the current batch was claimed (``time.monotonic()``)
    claimed_at: float = 0.0

    def claimed(self, invocations: list[Invocation]) -> Invocation | None:
        """A new batch (in queue order): the first is handed out as claimed, the rest
        wait ahead."""
        if not invocations:
            return None
        self.claimed_at = time.monotonic()
        self.running, *ahead = invocations
        self.ahead.extend(ahead)
        return self.running

    def take(self) -> Invocation | None:
        """The next invocation claimed ahead, started now; None when none is."""
        if not self.ahead:
            return None
        self.running = attrs.evolve(self.ahead.popleft(), started_at=time.time())
        return self.running

    def finish_and_take(self, invocation_id: str, result: bytes,
                        give_back: Callable[[], object]) -> Invocation | None:
        """Keep a completion, then hand out the next invocation claimed ahead; None when
        there is none: the batch has ended, and its completions (:meth:`written`) are
        to be written with the next claim. ``give_back`` runs first when the batch is
        :meth:`overdue` (the backend returns :meth:`given_back` to the queue)."""
        self.finish(invocation_id, result)
        if self.overdue():  # slow tasks: let other workers have what is ahead
            give_back()
        ahead = self.take()
        if ahead is None:
            self.ended()
        return ahead

    def finish(self, invocation_id: str, result: bytes) -> None:
        """Keep a completion to write with the batch's last one."""
        running = self.running
        started = running.started_at if running and running.id == invocation_id else None
        self.finished.append(Finished(invocation_id, result, started, time.time()))
        self.running = None

    def overdue(self) -> bool:
        """Invocations wait ahead, and the batch has run longer than :data:`GROW_WITHIN`:
        its tasks are not quick, and they should be given back for others to take."""
        return bool(self.ahead) and time.monotonic() - self.claimed_at >= GROW_WITHIN

    def ended(self) -> None:
        """The batch ended (its completions are being written): size the next one."""
        quick = time.monotonic() - self.claimed_at < GROW_WITHIN
        self.size = min(self.size * 2, self.limit) if quick else 1

    def written(self) -> list[Finished]:
        """The completions to write now, forgotten here."""
        finished, self.finished = self.finished, []
        return finished

    def given_back(self) -> list[str]:
        """The ids of the invocations claimed ahead, forgotten here (being given back)."""
        ids = [invocation.id for invocation in self.ahead]
        self.ahead.clear()
        return ids


#: the largest ``batch`` a backend URL may ask for
BATCH_MAX = 1000


def batch_limit(value: str, url: str) -> int:
    """A URL's ``batch=`` -> the most invocations a worker claims at once (1: one at a
    time, the default); a bad value is a :class:`~pprunner.errors.ConfigError`."""
    if not value.isdigit() or not 1 <= int(value) <= BATCH_MAX:
        raise ConfigError(f"bad batch {value!r} in {url!r}: a whole number from 1 to "
                          f"{BATCH_MAX}")
    return int(value)


def log_refused(finished: Iterable[Finished], done: Collection[str],
                refused: Callable[[str], None]) -> None:
    """Completions kept for a batch that were refused when written (their ids not in
    ``done``): the worker has moved on, so each is only logged, as the worker logs a
    refusal. ``refused(id)`` is the backend's check, which raises why (or returns: the
    worker's own write, whose reply was lost)."""
    for invocation_id in (f.invocation_id for f in finished if f.invocation_id not in done):
        try:
            refused(invocation_id)
        except IllegalTransition as exc:
            logger.warning("outcome refused, this runner no longer owns it: %s", exc)
