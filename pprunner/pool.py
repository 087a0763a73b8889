"""The pool: the supervisor's worker table, and each worker's whole life.

The :class:`Pool` is the only owner of the workers (:class:`~pprunner.child.Child`
records): it spawns them, counts them against the configured size plus the
slots lent to waiting jobs, recycles them without a capacity gap, enforces
boot timeouts and hard time limits, kills with a recorded reason and takes
the dead out of the table. Feeds ask it for idle workers and tell it a job
was assigned or released (:meth:`Pool.assign`, :meth:`Pool.released`);
nothing else writes a worker's fields. :class:`CrashLoop` spaces out respawns
of workers that die before they boot and says when to give up.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from . import process_group
from .child import Child, Kill, Phase, Retirement
from .invocation import RunnerInfo, RunnerKind
from .jobs import Call
from .spawn import SPARE_SLOT, WorkerSpec

logger = logging.getLogger("pprunner.supervisor")

#: first pause before respawning a worker that died at boot; doubles each time
RESPAWN_DELAY = 0.1
#: the longest pause between such respawns
RESPAWN_DELAY_MAX = 30.0
#: seconds a slot given back by a wait stays with its extra worker, for the next wait
LEND_LINGER = 2.0


def new_runner_id() -> str:
    return os.urandom(6).hex()


class Pool:
    """``processes`` workers, each in one slot, and what becomes of them.

    :param spec_for: the spec a new worker starts from, given its runner id, its
        slot and its end of the pipe (the supervisor's boot made the rest of it).
    :param watch: called with each new worker, ``unwatch`` with each one taken
        out: the supervisor's loop waits on their pipes and process sentinels.
    """

    def __init__(self, processes: int, *, supervisor_id: str, config: Any, plugins: Any,
                 mp: Any, spec_for: Callable[[str, int, Any], WorkerSpec],
                 watch: Callable[[Child], None], unwatch: Callable[[Child], None]) -> None:
        self.processes = processes
        self.supervisor_id = supervisor_id
        self.config = config
        self.plugins = plugins
        self.crash_loop = CrashLoop(config.crash_loop_period)
        self.workers: dict[str, Child] = {}
        self._mp = mp
        self._spec_for = spec_for
        self._watch = watch
        self._unwatch = unwatch
        #: since when more workers hold slots than the target (waits ended meanwhile)
        self._excess_since: float | None = None

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self.workers.values()))  # a copy: hosts ask from their own thread

    def __len__(self) -> int:
        return len(self.workers)

    # -- what feeds ask and tell -------------------------------------------------------

    def idle(self) -> Iterator[Child]:
        """Workers ready for a pushed call, in slot order of their spawning."""
        return (c for c in self.workers.values() if c.idle)

    def assign(self, child: Child, call: Call) -> None:
        """``child`` was handed ``call``: it is busy, and the call's hard time limit runs."""
        child.call = call
        if call.time_limit:
            child.started(call.id, call.name, call.time_limit)

    def released(self, child: Child, call_id: str, peak_memory: int) -> None:
        """The call ``child`` was handed ended: it is idle again (unless retiring)."""
        child.call = None
        child.finished(call_id, peak_memory)

    def kill(self, child: Child, kill: Kill) -> None:
        """SIGKILL ``child``; what it holds ends with ``kill``'s error."""
        child.kill_for(kill)

    def holding(self, call_ids: set[str] | dict[str, Any]) -> Iterator[Child]:
        """Workers running one of ``call_ids``."""
        return (c for c in self.workers.values() if c.call is not None and c.call.id in call_ids)

    def holding_job(self, job_id: str) -> Iterator[Child]:
        """Workers that reported running ``job_id`` (host-consumed mode)."""
        return (c for c in list(self.workers.values())
                if any(r.job_id == job_id for r in c.running))

    def __contains__(self, child: object) -> bool:
        return isinstance(child, Child) and self.workers.get(child.info.id) is child

    # -- the workers' lives (the supervisor's loop) ------------------------------------

    def spawn(self, slot: int) -> Child:
        """Start a worker in ``slot``; it counts as booting until it reports ready."""
        runner_id = new_runner_id()
        ours, theirs = self._mp.Pipe()
        spec = self._spec_for(runner_id, slot, theirs)
        process = self.plugins.hook.pprunner_spawn_worker(spec=spec,
                                                          start_method=self.config.start_method)
        theirs.close()  # the child has its own copy now
        info = RunnerInfo(id=runner_id, kind=RunnerKind.WORKER, pid=process.pid,
                          supervisor=self.supervisor_id, slot=slot)
        child = self.workers[runner_id] = Child(info, process, ours, held=spec.held)
        self._watch(child)
        self.plugins.hook.pprunner_worker_started(runner=info)
        logger.debug("spawned worker %d as runner %s, pid %s", slot, runner_id, process.pid)
        return child

    def remove(self, child: Child) -> None:
        """Take an exited worker out of the table and release what it used."""
        del self.workers[child.info.id]
        self._unwatch(child)
        child.process.join()
        child.connection.close()
        if child.held is not None:
            self._take_held_job(child)
        if child.killed_group is not None:
            process_group.reap_group(child.killed_group)

    def _take_held_job(self, child: Child) -> None:
        """The job ``child`` recorded in its held-job memory (:mod:`pprunner.held`) joins
        those it reported, for the feed to settle; the memory is released."""
        held, child.held = child.held, None
        assert held is not None
        try:
            recorded = held.read()
        except Exception:
            logger.exception("%s recorded a job that cannot be read; it is not settled",
                             child.who)
            recorded = None
        finally:
            held.close()
        if recorded is not None:
            job_id, name, data = recorded
            child.started(job_id, name, None, data=data)

    def exited(self) -> list[Child]:
        """Workers whose process has ended and that are still in the table."""
        return [c for c in self.workers.values() if c.process.exitcode is not None]

    def booted(self) -> int:
        """How many workers in a slot have booted (spares not counted)."""
        return sum(c.booted and not c.spare for c in self.workers.values())

    def serving(self) -> int:
        return sum(c.phase is Phase.SERVING for c in self.workers.values())

    def all_booted(self) -> bool:
        """There are workers in slots and every one has booted (a spare may still boot)."""
        in_slots = [c for c in self.workers.values() if not c.spare]
        return bool(in_slots) and all(c.booted for c in in_slots)

    def runners(self) -> list[RunnerInfo]:
        """Each worker whose process is alive by OS-level check, with its phase (what
        ``pprunner top`` shows as booting or retiring)."""
        return [attrs.evolve(c.info, phase=c.phase.value) for c in self if c.process.is_alive()]

    def next_moment(self) -> float | None:
        """The next moment something must happen to a worker: a boot timeout, a hard
        time limit, a respawn the crash-loop back-off holds."""
        moments = [c.deadline(self.config.boot_timeout) for c in self.workers.values()]
        if self._slots_held() < self.target() or self._spares() < self.config.spare_workers:
            moments.append(self.crash_loop.next_spawn)
        if self._excess_since is not None:
            moments.append(self._excess_since + LEND_LINGER)
        return min((m for m in moments if m is not None), default=None)

    def enforce_limits(self) -> None:
        """Kill workers past their boot timeout or their job's hard time limit."""
        now = time.monotonic()
        for child in self.workers.values():
            kill = child.overdue(now, self.config.boot_timeout)
            if kill is not None:
                child.kill_for(kill)
        if any(c.booted for c in self.workers.values()):  # the dead are reaped next
            self.crash_loop.healthy()

    def tend(self) -> None:
        """After the dead are reaped: give lent slots back, recycle, respawn to size."""
        self._take_back_lent()
        self._recycle()
        self._respawn()
        self._keep_spares()

    @property
    def max_lent_slots(self) -> int:
        """How many workers may run beyond ``processes`` while others wait."""
        bound = self.config.max_lent_slots
        return self.processes if bound is None else bound

    def target(self) -> int:
        """How many workers should hold a slot: ``processes``, plus one for each
        worker whose job waits in ``lend_slot()``, up to ``max_lent_slots``."""
        waiting = sum(c.waiting for c in self.workers.values())
        return self.processes + min(waiting, self.max_lent_slots)

    def _recycle(self) -> None:
        """Replace workers that should retire, one at a time, without losing capacity.

        The replacement is started first; the old worker is told to retire
        only once the new one has booted, and it finishes what it runs. One
        replacement boots at a time; a retiring worker still busy with a long
        job does not hold up the others, and idle workers go first. A worker
        that asked to go at once (``replace_after_job``) goes without waiting.
        """
        self._retire_at_once()
        if any(not c.booted for c in self.workers.values() if not c.spare):
            return
        candidates = [c for c in self.workers.values()
                      if c.retirement is not None and c.phase is Phase.SERVING]
        if not candidates:
            return
        child = min(candidates, key=lambda c: c.busy)
        retirement = child.retirement
        assert retirement is not None
        if not retirement.replace:
            logger.info("%s retires: %s", child.who, retirement.reason)
            child.retire()
            return
        if retirement.replacement not in self.workers:
            replacement = self._fill(child.info.slot)
            retirement.replacement = None if replacement is None else replacement.info.id
        if retirement.replacement is not None and self.workers[retirement.replacement].booted:
            logger.info("%s retires (%s); worker %s takes its place", child.who,
                        retirement.reason, retirement.replacement)
            child.retire()

    def _retire_at_once(self) -> None:
        """Retire every worker that asked to be replaced now, starting its replacement
        in the same breath: it is handed nothing more, so its slot would stay empty
        until the replacement boots either way."""
        for child in list(self.workers.values()):
            retirement = child.retirement
            if retirement is None or not retirement.at_once or child.phase is not Phase.SERVING:
                continue
            replacement = self._fill(child.info.slot) if retirement.replace else None
            if replacement is not None:
                retirement.replacement = replacement.info.id
            logger.info("%s retires at once (%s)%s", child.who, retirement.reason,
                        f"; worker {retirement.replacement} takes its place"
                        if retirement.replacement else "")
            child.retire()

    def _respawn(self) -> None:
        """Start workers until as many hold a slot as the target, in the lowest free
        slots (a worker being replaced shares its slot with its replacement)."""
        target = self.target()
        used = {c.info.slot for c in self.workers.values()}
        held = self._slots_held()
        slot = SPARE_SLOT
        while held < target:
            slot += 1
            if slot in used:
                continue
            if self._fill(slot) is None:
                return
            held += 1

    def _fill(self, slot: int) -> Child | None:
        """A worker for ``slot``: a booted spare takes it at once, or a new worker is
        spawned into it; None while the crash-loop back-off holds spawns."""
        spare = next((c for c in self.workers.values() if c.phase is Phase.SPARE), None)
        if spare is not None:
            logger.info("%s takes slot %d", spare.who, slot)
            spare.serve(slot)
            return spare
        return self.spawn(slot) if self.crash_loop.may_spawn() else None

    def _keep_spares(self) -> None:
        """Boot spares up to ``spare_workers``, once every worker in a slot has booted:
        a spare must not slow the pool's own start."""
        missing = self.config.spare_workers - self._spares()
        if missing <= 0 or any(not c.booted for c in self.workers.values() if not c.spare):
            return
        for _ in range(missing):
            if not self.crash_loop.may_spawn():
                return
            self.spawn(SPARE_SLOT)

    def _slots_held(self) -> int:
        return len({c.info.slot for c in self.workers.values() if c.holds_slot})

    def _spares(self) -> int:
        """Spares booting or waiting for a slot."""
        return sum(c.spare and c.phase in (Phase.BOOTING, Phase.SPARE)
                   for c in self.workers.values())

    def _take_back_lent(self) -> None:
        """Waits ended: once the pool has had more workers than its target for
        ``LEND_LINGER`` seconds, retire those beyond it, without replacement, as a
        scale-down does (each finishes its job first; idle ones go first). A waiting
        worker is never one of them. The linger keeps the extra worker for a job
        that waits for one result after another (pynenc's ``result`` in a loop),
        which would otherwise retire it and start (boot) another for each wait."""
        keep = [c for c in self.workers.values() if c.holds_slot]
        excess = len({c.info.slot for c in keep}) - self.target()
        if excess <= 0:
            self._excess_since = None
            return
        now = time.monotonic()
        if self._excess_since is None:
            self._excess_since = now
        if now - self._excess_since < LEND_LINGER:
            return
        spare = sorted((c for c in keep if c.retirement is None and not c.waiting),
                       key=lambda c: (c.busy, -c.info.slot))
        for child in spare[:excess]:
            child.retirement = Retirement("its lent slot was given back", replace=False)

    # -- commands ----------------------------------------------------------------------

    def scale(self, processes: int) -> None:
        """Grow or shrink to ``processes``; the workers beyond it retire gracefully."""
        logger.info("scaling from %d to %d workers", self.processes, processes)
        self.processes = processes
        for child in self.workers.values():
            if child.info.slot > processes and not child.requested_stop:
                child.retirement = Retirement("scaled down", replace=False)

    def reload(self) -> None:
        """Replace every worker, one at a time (see :meth:`_recycle`)."""
        logger.info("reloading: replacing %d workers one by one", len(self.workers))
        for child in self.workers.values():
            if not child.requested_stop and child.retirement is None:
                child.retirement = Retirement("reload", stale=True)

    def signal_worker(self, pid: int, signum: int, why: str) -> None:
        child = next((c for c in self.workers.values() if c.info.pid == pid), None)
        if child is None:
            logger.warning("no worker with pid %d to send %s to (%s)", pid,
                           signal.Signals(signum).name, why)
            return
        logger.info("sending %s to %s: %s", signal.Signals(signum).name, child.who, why)
        child.signal(signum, why)

    # -- stopping ------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Tell every worker to finish (or hand back) what it runs and exit; one still
        booting holds nothing and cannot hear a SIGTERM, so it is killed."""
        for child in self.workers.values():
            if child.phase is Phase.BOOTING:
                child.signal(signal.SIGKILL, "stopping while it was still booting")
            child.stop()

    def signal_all(self, signum: int, why: str) -> None:
        for child in self.workers.values():
            child.signal(signum, why)

    def abandon(self, why: str, grace: float) -> None:
        """End every worker without waiting for what it holds (the backend is gone):
        SIGTERM, then SIGKILL after ``grace`` seconds; the table is emptied."""
        children = list(self.workers.values())
        for child in children:
            child.phase = Phase.STOPPING
            child.signal(signal.SIGTERM, why)
        deadline = time.monotonic() + grace
        for child in children:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.exitcode is None:
                child.signal(signal.SIGKILL, f"still running {grace:g} s after SIGTERM")
                child.process.join()
        self.workers.clear()


@attrs.define
class CrashLoop:
    """Backs off respawns of workers that die before booting; gives up after ``period``.

    A worker that boots resets the back-off; time with at least one booted
    worker alive counts as healthy. Deaths of booted workers (a task that
    crashes them) are not a crash loop: ``max_attempts`` deals with those.
    """

    period: float
    failures: int = 0
    cause: str = ""
    next_spawn: float = 0.0
    last_healthy: float = attrs.Factory(time.monotonic)

    def booted(self) -> None:
        self.failures = 0
        self.next_spawn = 0.0

    def healthy(self) -> None:
        self.last_healthy = time.monotonic()

    def died_at_boot(self, cause: str) -> None:
        self.failures += 1
        self.cause = cause
        delay = min(RESPAWN_DELAY * 2 ** (self.failures - 1), RESPAWN_DELAY_MAX)
        self.next_spawn = time.monotonic() + delay
        logger.warning("a worker died before booting (%s); next start in %.1f s", cause, delay)

    def may_spawn(self) -> bool:
        return time.monotonic() >= self.next_spawn

    def given_up(self) -> bool:
        return self.failures > 0 and time.monotonic() - self.last_healthy > self.period
