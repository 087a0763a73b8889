"""A backend with the required core only, as a host framework's store may be, and an
app on it: the contract's core must run alone on it, and the callers that need a
capability must say so in one line instead of failing somewhere deep.

It keeps invocations in a dict, inside one process (``supports_processes`` is
False, as for ``memory://``), and relies on the contract's helpers for every
rule (:func:`~pprunner.backend.check_owner_change`,
:func:`~pprunner.backend.rerouted`, :func:`~pprunner.backend.missing`) and on the
core's defaults for the rest (waiting polls, ``complete_and_claim`` does one
call after the other). A delayed retry becomes due while a claim blocks only at
the claim's next look: ``claim_timeout`` bounds that, which is enough here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

import pprunner
from pprunner import App
from pprunner.backend import Backend, check_owner_change, missing, rerouted
from pprunner.invocation import (
    OWNED_STATUSES,
    ErrorInfo,
    Invocation,
    RunnerInfo,
    Status,
    counts_template,
)

SCHEME = "core"


class CoreOnlyBackend(Backend):
    supports_processes = False

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._invocations: dict[str, Invocation] = {}
        #: invocation id -> enqueue order: a rerouted one keeps its place
        self._order: dict[str, int] = {}
        self._changed = threading.Condition()
        self._wakeups = 0

    def enqueue(self, invocation: Invocation) -> None:
        with self._changed:
            self._order[invocation.id] = len(self._order)
            self._invocations[invocation.id] = invocation
            self._changed.notify_all()

    def claim(self, runner_id: str, timeout: float) -> Invocation | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            wakeups = self._wakeups
            while (due := self._oldest_due()) is None:
                left = deadline - time.monotonic()
                if left <= 0 or self._wakeups != wakeups:
                    return None
                self._changed.wait(left)
            claimed = attrs.evolve(due, status=Status.RUNNING, owner=runner_id,
                                   attempts=due.attempts + 1, started_at=time.time())
            self._invocations[due.id] = claimed
            return claimed

    def _oldest_due(self) -> Invocation | None:
        now = time.time()
        due = [i for i in self._invocations.values()
               if i.status is Status.PENDING and (i.not_before or 0) <= now]
        return min(due, key=lambda i: self._order[i.id], default=None)

    def wakeup(self) -> None:
        with self._changed:
            self._wakeups += 1
            self._changed.notify_all()

    def _change(self, invocation_id: str, runner_id: str, new: Status,
                error: ErrorInfo | None = None, **changes: Any) -> None:
        """The owner's change to ``new``; an ``error`` is recorded and joins the history."""
        with self._changed:
            current = self.get(invocation_id)
            check_owner_change(current, runner_id, new)
            if error is not None:
                changes.update(error=error, history=(*current.history, error))
            self._invocations[invocation_id] = attrs.evolve(current, status=new, **changes)
            self._changed.notify_all()

    def complete(self, invocation_id: str, runner_id: str, result: bytes) -> None:
        self._change(invocation_id, runner_id, Status.SUCCESS, result=result,
                     finished_at=time.time())

    def fail(self, invocation_id: str, runner_id: str, error: ErrorInfo) -> None:
        self._change(invocation_id, runner_id, Status.FAILED, error, finished_at=time.time())

    def retry(self, invocation_id: str, runner_id: str, error: ErrorInfo,
              not_before: float) -> None:
        self._change(invocation_id, runner_id, Status.PENDING, error, owner=None,
                     started_at=None, not_before=not_before)

    def reroute(self, runner_id: str, error: ErrorInfo | None, *,
                retry: bool = True) -> list[Invocation]:
        with self._changed:
            after = [rerouted(i, error, time.time(), retry) for i in self.owned_by([runner_id])]
            self._invocations.update((i.id, i) for i in after)
            self._changed.notify_all()
            return after

    def owned_by(self, runner_ids: Iterable[str]) -> list[Invocation]:
        wanted = set(runner_ids)
        with self._changed:
            return [i for i in self._invocations.values()
                    if i.owner in wanted and i.status in OWNED_STATUSES]

    def record_heartbeats(self, runners: Sequence[RunnerInfo], at: float) -> None:
        """Nothing reads heartbeats back without Admin or Recovery: none are kept."""

    def forget_runners(self, runner_ids: Iterable[str]) -> None:
        """No heartbeats are kept, so there is nothing to forget."""

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
    register(SCHEME, CoreOnlyBackend)


#: an app on the core-only backend (the scheme must be registered first: see the tests)
app = App(backend=f"{SCHEME}://", name="core-only")


@app.task
def double(x: int) -> int:
    return 2 * x


@app.task
def double_and_wait(x: int) -> int:
    """Waits for another invocation: on a backend without Pausing that is refused."""
    return double.enqueue(x).result(timeout=30)
