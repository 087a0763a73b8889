"""The ``memory://`` backend: invocations in a dict, for tests and inline runs.

It lives inside one process, so the supervisor refuses to combine it with
worker processes (``supports_processes = False``); use ``--inline``.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

import pprunner
from pprunner.backend import (
    Admin,
    Pausing,
    Recovery,
    check_owner_change,
    missing,
    requeued,
    rerouted,
)
from pprunner.invocation import (
    OWNED_STATUSES,
    ErrorInfo,
    Invocation,
    RunnerInfo,
    Status,
    counts_template,
    ended_template,
)


class MemoryBackend(Pausing, Admin, Recovery):
    """Every capability: the suite runs every contract test against it."""

    supports_processes = False
    notifies_final = True

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._invocations: dict[str, Invocation] = {}
        #: (enqueue order, id): a rerouted invocation returns to its old place
        self._pending: list[tuple[int, str]] = []
        self._order: dict[str, int] = {}
        self._runners: dict[str, RunnerInfo] = {}
        self._changed = threading.Condition()
        self._wakeups = 0

    def enqueue(self, invocation: Invocation) -> None:
        with self._changed:
            self._invocations[invocation.id] = invocation
            self._order[invocation.id] = len(self._order)
            heapq.heappush(self._pending, (self._order[invocation.id], invocation.id))
            self._changed.notify_all()

    def claim(self, runner_id: str, timeout: float) -> Invocation | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            wakeups = self._wakeups
            while (due := self._due()) is None:
                left = deadline - time.monotonic()
                if left <= 0 or self._wakeups != wakeups:
                    return None
                self._changed.wait(min(left, self._next_due()))
            return self._take(due, runner_id)

    def _take(self, entry: tuple[int, str], runner_id: str) -> Invocation:
        self._pending.remove(entry)
        heapq.heapify(self._pending)
        pending = self._invocations[entry[1]]
        claimed = attrs.evolve(pending, status=Status.RUNNING, owner=runner_id,
                               attempts=pending.attempts + 1, started_at=time.time())
        self._invocations[claimed.id] = claimed
        return claimed

    def _due(self, wanted: Callable[[tuple[int, str]], bool] = lambda entry: True,
             ) -> tuple[int, str] | None:
        """The oldest pending entry that may run now (among the ``wanted`` ones)."""
        now = time.time()
        for entry in sorted(filter(wanted, self._pending)):
            not_before = self._invocations[entry[1]].not_before
            if not_before is None or not_before <= now:
                return entry
        return None

    def _next_due(self) -> float:
        """Seconds until the earliest delayed pending invocation may run."""
        delays = [i.not_before - time.time() for _, id_ in self._pending
                  if (i := self._invocations[id_]).not_before is not None]
        return max(min(delays, default=3600.0), 0.001)

    def wait_any(self, invocation_ids: Sequence[str], timeout: float) -> None:
        """Every change notifies ``_changed``: wait on it until one of them ended."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(i not in self._invocations or self._invocations[i].status.is_final
                          for i in invocation_ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

    def wakeup(self) -> None:
        with self._changed:
            self._wakeups += 1
            self._changed.notify_all()

    def _finish(self, invocation_id: str, runner_id: str, new: Status, **changes: Any) -> None:
        with self._changed:
            current = self.get(invocation_id)
            check_owner_change(current, runner_id, new)
            self._invocations[invocation_id] = attrs.evolve(current, status=new, **changes)
            self._changed.notify_all()

    def complete(self, invocation_id: str, runner_id: str, result: bytes) -> None:
        self._finish(invocation_id, runner_id, Status.SUCCESS, result=result,
                     finished_at=time.time())

    def fail(self, invocation_id: str, runner_id: str, error: ErrorInfo) -> None:
        self._finish(invocation_id, runner_id, Status.FAILED, error=error,
                     finished_at=time.time(), history=(*self.get(invocation_id).history, error))

    def retry(self, invocation_id: str, runner_id: str, error: ErrorInfo,
              not_before: float) -> None:
        self._finish(invocation_id, runner_id, Status.PENDING, owner=None, error=error,
                     not_before=not_before, started_at=None,
                     history=(*self.get(invocation_id).history, error))
        with self._changed:
            heapq.heappush(self._pending, (self._order[invocation_id], invocation_id))
            self._changed.notify_all()

    def requeue(self, invocation_ids: Iterable[str] | None) -> list[Invocation]:
        with self._changed:
            wanted = set(self._invocations if invocation_ids is None else invocation_ids)
            done = []
            for invocation_id in sorted(wanted, key=lambda i: self._order.get(i, -1)):
                current = self._invocations.get(invocation_id)
                if current is None or current.status is not Status.FAILED:
                    continue
                after = self._invocations[invocation_id] = requeued(current)
                heapq.heappush(self._pending, (self._order[invocation_id], invocation_id))
                done.append(after)
            self._changed.notify_all()
            return done

    def purge(self, finished_before: float, limit: int) -> int:
        with self._changed:
            doomed = sorted((i.finished_at, i.id) for i in self._invocations.values()
                            if i.status.is_final and i.finished_at is not None
                            and i.finished_at < finished_before)[:limit]
            for _, invocation_id in doomed:
                del self._invocations[invocation_id]
            return len(doomed)

    def pause(self, invocation_id: str, runner_id: str,
              waiting_for: Sequence[str] = ()) -> None:
        self._finish(invocation_id, runner_id, Status.PAUSED, waiting_for=tuple(waiting_for))

    def resume(self, invocation_id: str, runner_id: str) -> None:
        self._finish(invocation_id, runner_id, Status.RUNNING, waiting_for=())

    def claim_one_of(self, runner_id: str, invocation_ids: Sequence[str]) -> Invocation | None:
        wanted = set(invocation_ids)
        with self._changed:
            due = self._due(lambda entry: entry[1] in wanted)
            return None if due is None else self._take(due, runner_id)

    def reroute(self, runner_id: str, error: ErrorInfo | None, *,
                retry: bool = True) -> list[Invocation]:
        with self._changed:
            result = []
            for invocation in self.owned_by([runner_id]):
                after = rerouted(invocation, error, time.time(), retry)
                self._invocations[after.id] = after
                if after.status is Status.PENDING:
                    heapq.heappush(self._pending, (self._order[after.id], after.id))
                result.append(after)
            self._changed.notify_all()
            return result

    def recover(self, runner_id: str, older_than: float,
                error: ErrorInfo) -> list[Invocation] | None:
        with self._changed:
            runner = self._runners.get(runner_id)
            if runner is None or runner.heartbeat_at >= time.time() - older_than:
                return None
            del self._runners[runner_id]
            return self.reroute(runner_id, error)

    def owned_by(self, runner_ids: Iterable[str]) -> list[Invocation]:
        wanted = set(runner_ids)
        with self._changed:
            return [i for i in self._invocations.values()
                    if i.owner in wanted and i.status in OWNED_STATUSES]

    def record_heartbeats(self, runners: Sequence[RunnerInfo], at: float) -> None:
        with self._changed:
            for runner in runners:
                self._runners[runner.id] = attrs.evolve(runner, heartbeat_at=at)

    def forget_runners(self, runner_ids: Iterable[str]) -> None:
        with self._changed:
            for runner_id in runner_ids:
                self._runners.pop(runner_id, None)

    def runners(self) -> list[RunnerInfo]:
        with self._changed:
            return sorted(self._runners.values(), key=lambda r: r.started_at)

    def stale_runners(self, older_than: float) -> list[RunnerInfo]:
        limit = time.time() - older_than
        return [r for r in self.runners() if r.heartbeat_at < limit]

    def get(self, invocation_id: str) -> Invocation:
        try:
            return self._invocations[invocation_id]
        except KeyError:
            raise missing(invocation_id) from None

    def invocations(self, status: Status, limit: int) -> list[Invocation]:
        with self._changed:
            chosen = [i for i in self._invocations.values() if i.status is status]
        chosen.sort(key=lambda i: self._order[i.id], reverse=True)
        return chosen[:limit]

    def ended_since(self, since: float) -> dict[Status, int]:
        ended = ended_template()
        with self._changed:
            for invocation in self._invocations.values():
                if invocation.status.is_final and (invocation.finished_at or 0.0) >= since:
                    ended[invocation.status] += 1
        return ended

    def latest_failures(self, limit: int) -> list[Invocation]:
        with self._changed:
            failed = [i for i in self._invocations.values() if i.status is Status.FAILED]
        failed.sort(key=lambda i: i.finished_at or 0.0, reverse=True)
        return failed[:limit]

    def counts(self) -> dict[Status, int]:
        counts = counts_template()
        with self._changed:
            for invocation in self._invocations.values():
                counts[invocation.status] += 1
        return counts


@pprunner.hookimpl
def pprunner_register_backends(register: Callable[..., None]) -> None:
    register("memory", MemoryBackend)
