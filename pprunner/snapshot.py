"""One look at a store, as ``pprunner status`` and ``pprunner top`` show it.

Both commands read the runners, what each holds and the counts by status
through :func:`look`, and judge a runner lost by the same rule
(:func:`~pprunner.liveness.lost_because`), so the two can never disagree.
``top`` asks for more: the last minute's endings (its rates), the latest
failures and the resident memory of the processes on this host.
"""

from __future__ import annotations

import time

import attrs

from .backend import Admin
from .invocation import Invocation, RunnerInfo, RunnerKind, Status, this_host
from .liveness import lost_because

#: seconds over which ``top`` counts endings for its rates
RATE_WINDOW = 60.0
#: worker phases (``RunnerInfo.phase``) that say more than what the worker holds
_PHASES_SHOWN = frozenset({"booting", "spare", "retiring", "stopping"})


@attrs.frozen
class RunnerView:
    """A runner as the commands show it: its record, whether it is lost, what it holds."""

    runner: RunnerInfo
    lost_because: str | None
    #: what it owns (RUNNING or PAUSED), in enqueue order: a task's nested children last
    held: tuple[Invocation, ...]
    #: resident bytes of its process; None on another host, when gone, or not asked for
    memory: int | None = None

    @property
    def state(self) -> str:
        """``LOST``; ``alive`` for a supervisor; for a worker its phase when it is
        booting, retiring or stopping, else ``busy`` (it runs an invocation),
        ``waiting`` (all it holds is PAUSED, waiting for others) or ``idle``."""
        if self.lost_because:
            return "LOST"
        if self.runner.kind is RunnerKind.SUPERVISOR:
            return "alive"
        if self.runner.phase in _PHASES_SHOWN:
            return self.runner.phase
        if any(i.status is Status.RUNNING for i in self.held):
            return "busy"
        return "waiting" if self.held else "idle"

    @property
    def current(self) -> Invocation | None:
        """The invocation it is running now: the innermost RUNNING one (a task that
        waits runs the awaited ones nested inside it), else the last it holds."""
        running = [i for i in self.held if i.status is Status.RUNNING]
        candidates = running or self.held
        return candidates[-1] if candidates else None


@attrs.frozen
class Snapshot:
    """What one look at the store saw, at ``taken_at`` (wall time)."""

    taken_at: float
    runners: tuple[RunnerView, ...]
    counts: dict[Status, int]
    #: SUCCESS and FAILED endings in the RATE_WINDOW before ``taken_at`` (top only)
    ended: dict[Status, int] = attrs.Factory(dict)
    #: the latest failures, the last to fail first (top only)
    failures: tuple[Invocation, ...] = ()

    @property
    def supervisors(self) -> list[RunnerView]:
        return [v for v in self.runners if v.runner.kind is RunnerKind.SUPERVISOR]

    @property
    def workers(self) -> list[RunnerView]:
        """Workers and inline runners, by supervisor and slot."""
        order = {v.runner.id: n for n, v in enumerate(self.supervisors)}
        return sorted((v for v in self.runners if v.runner.kind is not RunnerKind.SUPERVISOR),
                      key=lambda v: (order.get(v.runner.supervisor, len(order)),
                                     v.runner.slot, v.runner.started_at))

    def rate(self, status: Status) -> float:
        """Endings per second in ``status`` over the last RATE_WINDOW seconds."""
        return self.ended.get(status, 0) / RATE_WINDOW


def look(backend: Admin, dead_after: float, *, recent_failures: int | None = None) -> Snapshot:
    """Read the store once. With ``recent_failures`` (what ``top`` asks), also the
    last minute's endings, that many latest failures and local processes' memory."""
    runners = backend.runners()
    held: dict[str | None, list[Invocation]] = {}
    for invocation in backend.owned_by(r.id for r in runners):
        held.setdefault(invocation.owner, []).append(invocation)
    counts = backend.counts()
    now = time.time()
    detailed = recent_failures is not None
    here = this_host()
    views = []
    for runner in runners:
        lost = lost_because(runner, now=now, dead_after=dead_after)
        memory = resident_memory(runner.pid) if detailed and not lost and \
            runner.host == here else None
        views.append(RunnerView(runner, lost, tuple(held.get(runner.id, ())), memory))
    if not detailed:
        return Snapshot(now, tuple(views), counts)
    return Snapshot(now, tuple(views), counts, backend.ended_since(now - RATE_WINDOW),
                    tuple(backend.latest_failures(recent_failures or 0)))


def resident_memory(pid: int) -> int | None:
    """Resident bytes of the process ``pid`` on this host; None when it cannot be read."""
    import psutil  # here: ``pprunner run`` imports this module and never needs it (~10 ms)

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None
