"""Progress of a ``--burst`` run: a bar on a terminal, a log line elsewhere.

What it counts is what the run's summary reports: invocations that ended
since the run began, measured against the store's counts at that moment, so
a store that already held finished invocations does not inflate either.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .backend import Backend
from .invocation import FINAL_STATUSES, Status

logger = logging.getLogger("pprunner.progress")

#: seconds between progress log lines when there is no terminal
LOG_EVERY = 5.0
UNFINISHED = (Status.PENDING, Status.RUNNING, Status.PAUSED)
#: the final statuses, in the order they are shown
ENDED = tuple(s for s in Status if s in FINAL_STATUSES)


class BurstProgress:
    """Counts what a burst run has finished since it started and what is left."""

    def __init__(self, backend: Backend, *, enabled: bool) -> None:
        self.backend = backend
        self.enabled = enabled
        self._baseline: dict[Status, int] | None = None
        self._bar: Any = None
        self._started = time.monotonic()
        self._logged = self._started

    def begin(self, counts: dict[Status, int]) -> None:
        """The store's counts before the run's first claim (else: at the first update)."""
        self._baseline = dict(counts)

    def ended(self, counts: dict[Status, int]) -> dict[Status, int]:
        """How many invocations ended in each final status since the run began."""
        if self._baseline is None:
            self.begin(counts)
        assert self._baseline is not None
        return {s: max(counts[s] - self._baseline[s], 0) for s in ENDED}

    def update(self) -> int:
        """Refresh the display; returns how many invocations are not final yet.

        The last one (nothing left) is always shown, so the display ends on the
        numbers the summary prints.
        """
        counts = self.backend.counts()
        done = sum(self.ended(counts).values())
        left = sum(counts[s] for s in UNFINISHED)
        if self.enabled:
            self._draw(done, done + left)
        elif left == 0 or time.monotonic() - self._logged >= LOG_EVERY:
            self._logged = time.monotonic()
            rate = done / max(self._logged - self._started, 1e-9)
            logger.info("burst: %d/%d done (%.0f/s)", done, done + left, rate)
        return left

    def _draw(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm  # only a terminal run needs it

            self._bar = tqdm(total=total, unit="task", desc="pprunner", dynamic_ncols=True)
        self._bar.total = total
        self._bar.update(done - self._bar.n)
        self._bar.refresh()  # at once, also when a log line erased it (see log.ERASE_LINE)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
