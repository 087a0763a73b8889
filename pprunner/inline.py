"""Inline mode: claim and run in the supervisor's own process (``--processes 0``).

For debugging with breakpoints, and the only way to use the in-process
``memory://`` backend. No worker processes, so nothing to spawn, watch,
scale or recycle: the one worker loop runs here, heartbeating between tasks.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from .errors import ConfigError
from .exitcodes import ExitCode
from .invocation import RunnerInfo, RunnerKind
from .supervisor import Supervisor
from .task import App
from .worker import ClaimedInvocations, Worker, WorkerContext

logger = logging.getLogger("pprunner.supervisor")


class InlineSupervisor(Supervisor):
    """A supervisor with no worker processes: the same public face, and one worker
    loop in this process (``pprunner run --inline``, ``Supervisor.for_app`` for an
    app whose ``processes`` is 0)."""

    HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, app: App, **options: Any) -> None:
        super().__init__(app, 0, **options)
        assert self.app is not None
        context = WorkerContext(app=self.app, runner_id=self.id, slot=0, runner_cache={},
                                stop_event=threading.Event(), supervisor_id=self.id)
        self._worker = Worker(context, ClaimedInvocations(context, burst=self.burst),
                              between=self._heartbeat_now_and_then)
        self._last_beat = 0.0

    def scale_to(self, processes: int) -> None:
        raise ConfigError("an inline supervisor has no worker processes to scale")

    def reload(self) -> None:
        raise ConfigError("an inline supervisor has no worker processes to reload")

    def request_stop(self) -> None:
        self._stop_requested = True
        self._worker.request_stop()

    def live_runners(self) -> list[RunnerInfo]:
        return [RunnerInfo(id=self.id, kind=RunnerKind.INLINE, pid=os.getpid(),
                           supervisor=self.id, started_at=self.started_at)]

    def _queue_signal(self, signum: int, frame: Any) -> None:
        """No loop to queue for: the first signal stops after the current task, a
        second interrupts it (it is handed back)."""
        if self._stop_requested:
            self._immediate = True
            self.exit_code = ExitCode.INTERRUPTED
            self._worker.terminate(signum, frame)
        self.request_stop()

    def _boot(self) -> None:
        self._prepare()
        assert self.backend is not None
        logger.info("running inline (no worker processes), backend %s", self.backend.url)
        self.plugins.hook.pprunner_supervisor_started(supervisor=self.view,
                                                      options=self.options)

    def _supervise(self) -> None:
        try:
            if not self._stop_requested:
                self._worker.run()
            self.plugins.hook.pprunner_supervisor_stopping(supervisor=self.view)
        finally:
            self._close()

    def _heartbeat_now_and_then(self) -> None:
        if time.monotonic() - self._last_beat >= self.config.heartbeat_interval:
            self._heartbeat()
            self._last_beat = time.monotonic()
