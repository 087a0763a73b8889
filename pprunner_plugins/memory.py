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
from pprunner.backend import Backend, check_owner_change, missing, rerouted
from pprunner.invocation import (
    OWNED_STATUSES,
    ErrorInfo,
    Invocation,
    RunnerInfo,
    Status,
    counts_template,
)


class MemoryBackend(Backend):
    supports_processes = False

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
            while not self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or self._wakeups != wakeups:
                    return None
                self._changed.wait(left)
            pending = self._invocations[heapq.heappop(self._pending)[1]]
            claimed = attrs.evolve(pending, status=Status.RUNNING, owner=runner_id,
                                   attempts=pending.attempts + 1, started_at=time.time())
            self._invocations[claimed.id] = claimed
            return claimed

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
                     finished_at=time.time())

    def pause(self, invocation_id: str, runner_id: str) -> None:
        self._finish(invocation_id, runner_id, Status.PAUSED)

    def resume(self, invocation_id: str, runner_id: str) -> None:
        self._finish(invocation_id, runner_id, Status.RUNNING)

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

    def get(self, invocation_id: str) -> Invocation:
        try:
            return self._invocations[invocation_id]
        except KeyError:
            raise missing(invocation_id) from None

    def counts(self) -> dict[Status, int]:
        counts = counts_template()
        with self._changed:
            for invocation in self._invocations.values():
                counts[invocation.status] += 1
        return counts


@pprunner.hookimpl
def pprunner_register_backends(register: Callable[..., None]) -> None:
    register("memory", MemoryBackend)
