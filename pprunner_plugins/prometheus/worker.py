"""The worker side: a pull-mode worker counts its own attempts and enqueues.

Registered by the switch (:mod:`pprunner_plugins.prometheus`) in each worker
of a supervisor whose metrics are on, and in an inline supervisor itself. It
writes to its process's :class:`~.tally.Tally` only: nothing is sent anywhere.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pprunner
from pprunner.invocation import Invocation

from .tally import ENQUEUED, OUTCOME_FIELDS, STARTED, Tally


class WorkerMetrics:
    """Attempts started and ended (with how long they took) and invocations
    enqueued by tasks, by task name."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def __repr__(self) -> str:
        return f"<WorkerMetrics {self.tally.path}>"

    @pprunner.hookimpl
    def pprunner_attempt_started(self, job: Invocation) -> None:
        self.tally.add(job.task, STARTED)

    @pprunner.hookimpl
    def pprunner_attempt_ended(self, job: Invocation, outcome: str, seconds: float) -> None:
        self.tally.ended(job.task, OUTCOME_FIELDS.get(outcome), seconds)

    @pprunner.hookimpl(wrapper=True)
    def pprunner_enqueue(self, job: Invocation) -> Generator[None, Any, Any]:
        """Only invocations reach it: it lives where tasks run, and a task's
        ``enqueue()`` stores an invocation. Counted once it is stored."""
        sent = yield
        self.tally.add(job.task, ENQUEUED)
        return sent
