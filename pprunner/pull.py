"""Pull mode's side of the supervisor: workers claim invocations from the app's backend.

The supervisor hands nothing out; it records heartbeats, takes back what a
dead worker owned (:meth:`Backend.reroute`), does the backend's upkeep
(:mod:`pprunner.upkeep`) and, in burst mode, says when the queue is drained.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import channel, runtime
from .backend import Backend
from .cache import CacheStore
from .child import Child
from .errors import BackendError, ConfigError, PprunnerError
from .invocation import ErrorInfo, Invocation, RunnerInfo
from .pool import Pool
from .progress import BurstProgress
from .task import App
from .upkeep import Upkeep

logger = logging.getLogger("pprunner.supervisor")

#: longest pause between burst-mode checks of the queue
BURST_TICK = 0.05


class BackendFeed:
    """The app's backend as the supervisor's source of work (see the module docstring)."""

    #: workers import the app by its path, never anything of the supervisor's __main__
    calls_from_main = False
    #: workers claim invocations, they run no host's consumer
    consumer = None
    #: a worker reports only what the loop must act on (hard limits, memory): at once
    report_delay = 0.0

    def __init__(self, app: App, supervisor_id: str, *, burst: bool, progress: bool) -> None:
        self.app = app
        self.burst = burst
        self._supervisor_id = supervisor_id
        #: a burst run's count of what ended since it began (its summary's numbers too)
        self.progress = BurstProgress(app.backend, enabled=progress) if burst else None
        self._next_burst_check = 0.0
        self._upkeep = Upkeep(app.backend, app.config, supervisor_id)
        #: how the app's producers wait out outages, restored when the supervisor ends
        self._producer_patience: Callable[[float], bool] = lambda outage_s: True
        #: ``runner_cache``, kept here and served over each worker's pipe
        self.cache = CacheStore()

    @property
    def backend(self) -> Backend:
        return self.app.backend

    @property
    def tick(self) -> float | None:
        """How often the loop must look at the queue (burst mode), None: no need."""
        return BURST_TICK if self.burst else None

    def app_path(self) -> str:
        """Where workers find the app; fails early for an app they cannot import."""
        return self.app.locate()

    def boot(self, pool: Pool, stopping: Callable[[], bool], wake: Callable[[], None],
             plugins: Any) -> None:
        """Check what would otherwise fail in every worker: the backend, the serializers."""
        backend = self.backend
        if pool.processes and not backend.supports_processes:
            raise ConfigError(
                f"the backend {backend.url!r} keeps invocations inside one process and cannot "
                "be shared with worker processes; use processes=0 (--inline) or a backend "
                "such as sqlite://")
        self.app.codec.check()  # an unknown or missing serializer fails here, not in a worker
        # sockets and doorbell folders of SIGKILLed processes would pile up otherwise; and
        # a runtime folder that is not this user's alone stops the boot here (push mode
        # uses none: its supervisor has no control socket and no waiters)
        runtime.prune()
        self._producer_patience = backend.keep_waiting
        backend.keep_waiting = lambda outage_s: not stopping()
        try:
            counts = backend.counts()
        except PprunnerError:
            raise
        except Exception as exc:
            raise BackendError(f"cannot use backend {backend.url!r}: {exc}") from exc
        if self.progress is not None:
            self.progress.begin(counts)  # before any worker can end an invocation

    def heartbeat(self, plugins: Any, runners: Sequence[RunnerInfo]) -> None:
        plugins.hook.pprunner_heartbeat(backend=self.backend, runners=runners, at=time.time())
        self._upkeep()

    def on_cache_request(self, child: Child, message: channel.CacheRequest) -> None:
        child.send(channel.CacheAnswer(*self.cache.answer(message.request)))

    def on_done(self, child: Child, message: channel.Done | channel.Note) -> None:
        logger.warning("%s reported a pushed call, which pull mode never hands out",
                       child.who)

    on_note = on_done

    def job_waiting(self, child: Child, waiting: bool) -> None:
        """Nothing to do: the supervisor lends the slot; nobody else needs to know."""

    def drop_redelivery(self, job_id: str) -> bool:
        """Never: only host-consumed workers ask (a backend's claims are not redelivered
        behind the supervisor's back)."""
        return False

    def hand_out(self, pool: Pool) -> None:
        """Nothing to hand out: workers claim for themselves."""

    def worker_exited(self, child: Child, error: ErrorInfo | None) -> tuple[Invocation, ...]:
        """Hand back what the dead worker owned; returns it as it is afterwards."""
        retry = child.kill is None or child.kill.retry
        held = self.backend.reroute(child.info.id, error, retry=retry)
        self.backend.forget_runners([child.info.id])
        return tuple(held)

    def drained(self) -> bool:
        """Burst mode: nothing is PENDING, RUNNING or PAUSED any more."""
        if self.progress is None or time.monotonic() < self._next_burst_check:
            return False
        self._next_burst_check = time.monotonic() + BURST_TICK
        return self.progress.update() == 0

    def stopping(self) -> None:
        self.backend.wakeup()  # idle workers blocked in a claim notice the stop at once

    def close(self, runner_ids: list[str], backend_lost: bool) -> None:
        if not backend_lost:
            owned = self.backend.owned_by(runner_ids)
            if owned:
                logger.error("invocations still owned after stopping: %s", owned)
            self.backend.forget_runners([self._supervisor_id])
        self.backend.keep_waiting = self._producer_patience  # the app's producers' again
        if self.progress is not None:
            self.progress.close()
