"""A pull-mode supervisor's chores on the shared backend, beside its own workers.

Taking back what runners of vanished supervisors held (a backend that
declares :class:`~pprunner.backend.Recovery`), and deleting invocations
that finished long ago (one that declares :class:`~pprunner.backend.Admin`).
Each runs now and then from the heartbeat, at its own pace, and never holds
the supervisor's loop for long; a backend without the capability is simply
spared the chore.
"""

from __future__ import annotations

import logging
import time

import attrs

from .backend import Admin, Backend, Recovery, purge_finished
from .config import Config
from .invocation import ErrorInfo

logger = logging.getLogger("pprunner.supervisor")

#: how often the supervisor deletes what finished over ``keep_finished`` ago (more often
#: when keep_finished is short), and the longest one such purge may hold up the loop
PURGE_EVERY, PURGE_SLICE = 60.0, 0.2


@attrs.define
class Upkeep:
    """Recovery of lost runners and purging of old invocations, each on its own clock."""

    backend: Backend
    config: Config
    #: this supervisor's runner id: its own runners are never "lost"
    supervisor_id: str
    _next_recovery: float = 0.0
    _next_purge: float = 0.0

    def __call__(self) -> None:
        self.recover_lost_runners()
        self.purge_finished()

    def recover_lost_runners(self) -> None:
        """Take back what runners of vanished supervisors held (a host lost, a SIGKILL
        of a whole process group), once their heartbeats are ``dead_after`` old.

        The backend makes each recovery atomic and conditional, so when several
        supervisors look at once exactly one acts, and a runner whose heartbeat
        came back keeps what it runs.
        """
        now = time.monotonic()
        if now < self._next_recovery or not isinstance(self.backend, Recovery):
            return
        dead_after = self.config.dead_after
        self._next_recovery = now + max(dead_after / 4, self.config.heartbeat_interval)
        # after an outage, silence proves nothing until everyone could heartbeat, and
        # another supervisor's retries may bring it back up to retry_pause_max later
        if time.time() - self.backend.outage_ended_at < dead_after + self.backend.retry_pause_max:
            return
        for runner in self.backend.stale_runners(dead_after):
            if runner.supervisor == self.supervisor_id:
                continue
            silent = time.time() - runner.heartbeat_at
            error = ErrorInfo("RunnerLost", f"{runner.kind} {runner.id} on {runner.host} "
                              f"(pid {runner.pid}) stopped heartbeating {silent:.0f} s ago")
            recovered = self.backend.recover(runner.id, dead_after, error)
            if recovered is not None:
                logger.warning("%s; took back %d invocation(s): %s", error.message,
                               len(recovered), ", ".join(i.id for i in recovered) or "-")

    def purge_finished(self) -> None:
        """Delete invocations that finished over ``keep_finished`` ago (0: keep them all),
        a slice at a time: what is left waits for the next heartbeat."""
        keep = self.config.keep_finished
        now = time.monotonic()
        if not keep or now < self._next_purge or not isinstance(self.backend, Admin):
            return
        purged, all_gone = purge_finished(self.backend, time.time() - keep,
                                          until=now + PURGE_SLICE)
        self._next_purge = now + (min(PURGE_EVERY, keep / 2) if all_gone else 0.0)
        if purged:
            logger.info("deleted %d invocation(s) that finished over %g s ago (keep_finished)",
                        purged, keep)
