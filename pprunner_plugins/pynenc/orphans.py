"""Invocations left behind by a runner that died on this host, taken back now.

The supervisor settles a worker's death at once (:mod:`.settle`), but nothing
settles the runner's own: when its process is SIGKILLed (``kill -9``, the OOM
killer, a crashed interpreter) its workers exit, as workers never outlive their
supervisor, and what they held stays ``RUNNING`` (or ``PENDING``, ``PAUSED``,
``RESUMED``) under runner ids nobody heartbeats any more. pynenc takes those back only once
a runner has been silent for ``runner_considered_dead_after_minutes`` (10) and
its recovery task comes round (every 15 minutes).

On one host we need not wait: a runner id is dead *now* when its context was
stored from this host, no heartbeat came for it for :data:`SILENCE` seconds,
and its process is gone (no process has its pid, or the one that has it
started after the id was registered: the pid was reused). The heartbeat
condition keeps a live runner in another PID namespace under the same host
name (a container that shares the host's name) from being judged by pids this
one cannot see. Every ``PprunnerRunner`` sweeps at its start and then every
:data:`SWEEP_INTERVAL` seconds, so the next runner, or a peer on the same host,
reroutes a dead runner's invocations within seconds, by the paths a worker's
death takes (:func:`.recovery.after_death`). Runners of other hosts, and this
runner's own workers (settled by its supervisor), are left alone.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import attrs
import psutil
from pynenc.invocation.status import InvocationStatus

from . import recovery

if TYPE_CHECKING:
    from pynenc.runner.runner_context import RunnerContext

logger = logging.getLogger("pprunner.pynenc")

#: seconds between two sweeps (the first one is at the runner's start)
SWEEP_INTERVAL = 1.0
#: seconds without a heartbeat before a runner id whose process is gone is dead; a
#: live runner reports its workers' heartbeats every loop (about 0.2 s)
SILENCE = 3.0
#: a process's start time is known to the second (the boot time is whole seconds)
CLOCK_SLACK = 1.0
#: the statuses in which an invocation has an owner that must finish or give it back
OWNED = [InvocationStatus.PENDING, InvocationStatus.RUNNING, InvocationStatus.PAUSED,
         InvocationStatus.RESUMED]
_OWNED_VALUES = {status.value for status in OWNED}
#: invocation ids read per query
PAGE = 500


@attrs.define
class OrphanSweep:
    """Finds this host's dead runner ids and reroutes what they held (module docstring)."""

    runner: Any
    hostname: str = attrs.Factory(socket.gethostname)
    #: runner ids settled for good: swept dead ones, other hosts', this runner's own
    judged: set[str] = attrs.Factory(set)
    next_sweep: float = 0.0

    def maybe_sweep(self) -> None:
        """Sweep if :data:`SWEEP_INTERVAL` has passed; a store that fails is tried again
        at the next sweep, and never stops the runner."""
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_INTERVAL
        try:
            self.sweep()
        except Exception as exc:
            logger.error("looking for dead runners on this host failed (%s: %s); trying "
                         "again in %g s", type(exc).__name__, exc, SWEEP_INTERVAL)

    def sweep(self) -> list[str]:
        """Reroute what this host's dead runner ids held; returns the invocation ids."""
        dead = self._dead_owners()
        if not dead:
            return []
        rerouted = [i for i in self._owned_invocations() if self._take_back(i, dead)]
        self.judged.update(dead)  # a dead runner claims nothing more: one sweep does
        return rerouted

    def _dead_owners(self) -> dict[str, RunnerContext]:
        app, now = self.runner.app, time.time()
        dead: dict[str, RunnerContext] = {}
        for info in app.orchestrator.get_active_runners():
            if info.runner_id in self.judged or \
                    now - info.last_heartbeat.timestamp() < SILENCE:
                continue
            ctx = app.state_backend.get_runner_context(info.runner_id)
            if ctx is None or ctx.hostname != self.hostname or \
                    ctx.root_runner_id == self.runner.runner_id:
                self.judged.add(info.runner_id)
            elif not process_alive(ctx.pid, registered_at=info.creation_time.timestamp()):
                dead[info.runner_id] = ctx
        return dead

    def _owned_invocations(self) -> list[str]:
        """Every invocation that has an owner, read in full before any is rerouted
        (rerouting reorders the pages)."""
        orchestrator = self.runner.app.orchestrator
        found: list[str] = []
        while page := orchestrator.get_invocation_ids_paginated(
                statuses=OWNED, limit=PAGE, offset=len(found)):
            found.extend(page)
            if len(page) < PAGE:
                break
        return found

    def _take_back(self, invocation_id: str, dead: dict[str, RunnerContext]) -> bool:
        record = self.runner.app.orchestrator.get_invocation_status_record(invocation_id)
        owner = dead.get(record.runner_id or "")
        if owner is None:
            return False
        was = recovery.after_death(self.runner, invocation_id, owner)
        if was not in _OWNED_VALUES:  # a peer on this host took it back first
            return False
        logger.warning("invocation:%s was %s under runner %s (%s, pid %d on this host), whose "
                       "process is gone; rerouted now", invocation_id, was, owner.runner_id,
                       owner.runner_cls, owner.pid)
        return True


def process_alive(pid: int, registered_at: float) -> bool:
    """Whether the process that registered a runner id at ``registered_at`` (epoch
    seconds) still runs: a process with its pid that started later reused the pid."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.create_time() <= registered_at + CLOCK_SLACK
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # it cannot be read from here: pynenc's own bound decides
        return True
