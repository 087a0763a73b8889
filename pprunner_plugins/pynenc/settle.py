"""The supervisor's side: settle a dead or stopped worker's invocation at once.

Workers claim for themselves (:mod:`.child`); the supervisor hears which
invocation each one runs and, when a worker ends under one, hands it here
(pprunner's host-consumed ``settle``). It goes back through pynenc's own
status rules (:mod:`.recovery`) in the same loop iteration, not after
pynenc's ten-minute dead-runner bound:

- the runner stopped the worker (``error`` None): ``KILLED`` then
  ``REROUTED``, pynenc's stop contract;
- its hard time limit killed it (``retry`` False): it fails with
  ``TimeLimitExceeded``, or retries when the task's ``retry_for`` covers it;
- it died: rerouted, unless its workers already died ``max_attempts`` times
  under it, counted from pynenc's own history (each death left a
  ``*_RECOVERY`` record), when it fails with ``WorkerLost`` (a poison
  invocation).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pynenc.runner.runner_context import RunnerContext

from pprunner.consuming import HostJob
from pprunner.errors import TimeLimitExceeded, WorkerLost

from . import recovery

if TYPE_CHECKING:
    from pprunner.invocation import ErrorInfo

logger = logging.getLogger("pprunner.pynenc")


class Settler:
    """``settle(job, error, retry)`` for a runner's workers (module docstring)."""

    def __init__(self, runner: Any, max_attempts: int) -> None:
        self.runner = runner
        self.max_attempts = max_attempts

    def settle(self, job: HostJob, error: ErrorInfo | None, retry: bool) -> None:
        owner = RunnerContext.from_json(job.data)
        if error is None:
            self.runner._kill_and_reroute(job.id, runner_ctx=owner)
        elif not retry:
            logger.warning("invocation:%s: %s; its worker was killed", job.id, error.message)
            recovery.fail(self.runner, job.id, TimeLimitExceeded(
                f"invocation:{job.id} {error.message}; its worker (pid {owner.pid}) was "
                f"killed and replaced"), owner)
        else:
            self._after_death(job, error, owner)

    def _after_death(self, job: HostJob, error: ErrorInfo, owner: RunnerContext) -> None:
        deaths = recovery.deaths(self.runner, job.id) + 1
        if deaths >= self.max_attempts:
            logger.error("invocation:%s: %s; its workers died %s under it, so it fails "
                         "(pprunner_max_attempts %d)", job.id, error.message, times(deaths),
                         self.max_attempts)
            recovery.fail(self.runner, job.id, WorkerLost(
                f"{error.message} (invocation:{job.id}); its workers died {times(deaths)} "
                f"under it", pid=owner.pid), owner)
            return
        was = recovery.after_death(self.runner, job.id, owner)
        logger.warning("invocation:%s: %s (%s); rerouted at once (death %d of %d allowed)",
                       job.id, error.message, was, deaths, self.max_attempts - 1)


def times(count: int) -> str:
    """``once``, ``twice``, ``3 times``: how often, as a sentence says it."""
    return {1: "once", 2: "twice"}.get(count, f"{count} times")
