"""What the dashboard shows and does, without the web: one store, looked at as
``pprunner top`` looks at it, and the operator's actions on it.

Every page and every browser tab that polls shares one look per ``interval``
(:meth:`Watch.snapshot`), so ten open tabs cost the store what one does. Each
look also leaves a point in a small ring (:class:`RatePoint`): the rates over
the last minutes that ``top``'s single number cannot show.
"""

from __future__ import annotations

import collections
import threading
import time

import attrs

from pprunner import control
from pprunner.backend import Admin, purge_finished
from pprunner.invocation import Invocation, Status
from pprunner.snapshot import Snapshot, look

#: points kept for the rates over time: at one look every 2 s, ten minutes
HISTORY_POINTS = 300
#: the most recent failures a search by task name looks through (newest first)
SEARCH_DEPTH = 1_000
#: seconds one purge request may spend deleting before it answers with what is left
PURGE_BUDGET = 5.0


@attrs.frozen
class RatePoint:
    """The rates one look saw: endings per second over the minute before ``at``."""

    at: float
    succeeded: float
    failed: float


@attrs.define
class Watch:
    """The store the dashboard reads and acts on, through the code the CLI uses:
    :func:`~pprunner.snapshot.look` (``status``, ``top``), ``Admin.requeue``
    (``retry``), :func:`~pprunner.backend.purge_finished` (``purge``) and
    :func:`~pprunner.control.scale` (``scale``)."""

    backend: Admin
    dead_after: float
    interval: float
    failures: int
    history: collections.deque[RatePoint] = attrs.Factory(
        lambda: collections.deque(maxlen=HISTORY_POINTS))
    _latest: Snapshot | None = None
    _lock: threading.Lock = attrs.Factory(threading.Lock)

    def snapshot(self) -> Snapshot:
        """The latest look, taken again when it is ``interval`` old (one reader at a
        time: a second request waits for the look in progress and shares it)."""
        with self._lock:
            latest = self._latest
            if latest is None or time.time() - latest.taken_at >= self.interval:
                latest = self._latest = look(self.backend, self.dead_after,
                                             recent_failures=self.failures)
                self.history.append(RatePoint(latest.taken_at, latest.rate(Status.SUCCESS),
                                              latest.rate(Status.FAILED)))
            return latest

    def search_failures(self, task: str) -> list[Invocation]:
        """Failures whose task name contains ``task`` (case-insensitive), among the
        latest :data:`SEARCH_DEPTH`: a store with a million failures answers as fast
        as one with a thousand."""
        wanted = task.strip().lower()
        with self._lock:
            failures = self.backend.latest_failures(SEARCH_DEPTH)
        return [i for i in failures if wanted in i.task.lower()]

    def retry(self, invocation_id: str) -> bool:
        """Requeue one FAILED invocation, as ``pprunner retry ID``; False when it is
        not FAILED (any more) or unknown."""
        with self._lock:
            return bool(self.backend.requeue([invocation_id]))

    def purge(self, older_than: float) -> tuple[int, bool]:
        """Delete what finished more than ``older_than`` seconds ago, as ``pprunner
        purge`` does, for at most :data:`PURGE_BUDGET` seconds: (how many went,
        whether all did)."""
        with self._lock:
            return purge_finished(self.backend, time.time() - older_than,
                                  until=time.monotonic() + PURGE_BUDGET)

    def scale(self, processes: int, supervisor_id: str) -> list[control.ScaleNotice]:
        """Ask one supervisor on this host for ``processes`` workers, as ``pprunner
        scale N --supervisor ID``."""
        with self._lock:
            return control.scale(self.backend, processes, dead_after=self.dead_after,
                                 supervisor_id=supervisor_id)
