"""What the supervisor knows of each worker, and when it may start another.

:class:`Child` follows one worker process through its channel messages:
booted or not, the invocation it runs and the hard deadline for it, its
peak memory, whether it asked to be recycled. :class:`CrashLoop` spaces out
respawns of workers that die before they boot and says when to give up.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from typing import Any

import attrs

from . import channel
from .invocation import ErrorInfo, RunnerInfo
from .spawn import WorkerProcess

logger = logging.getLogger("pprunner.supervisor")

#: first pause before respawning a worker that died at boot; doubles each time
RESPAWN_DELAY = 0.1
#: the longest pause between such respawns
RESPAWN_DELAY_MAX = 30.0


@attrs.frozen
class Running:
    """The invocation a worker reported it started."""

    invocation_id: str
    task: str
    started: float  #: ``time.monotonic()`` when the report arrived
    deadline: float | None  #: when the hard time limit runs out


@attrs.define
class Child:
    """A worker process and what the supervisor knows of it."""

    info: RunnerInfo
    process: WorkerProcess
    connection: Any
    spawned: float = attrs.Factory(time.monotonic)
    booted: bool = False
    boot_error: str | None = None
    #: what it runs, outermost first (more than one while a task waits, nested)
    running: list[Running] = attrs.Factory(list)
    peak_memory: int = 0
    #: why it should be replaced (it asked, a reload, a scale-down); None: it should not
    retire_reason: str | None = None
    #: False for a scale-down: retire without a replacement
    replace: bool = True
    #: the runner id of the worker started to take its place
    replacement: str | None = None
    #: ``retire`` was sent
    retiring: bool = False
    #: the supervisor asked it to stop; what it held is handed back, not charged
    requested_stop: bool = False
    #: why the supervisor killed it (time limit, boot timeout), as the invocation's error
    kill_error: ErrorInfo | None = None
    #: the task whose hard time limit made the supervisor kill it
    killed_for_task: str | None = None
    #: each signal the supervisor sent it, with why: its death by one of them is
    #: described as the supervisor's doing, never as "perhaps out of memory?"
    signals_sent: dict[int, str] = attrs.Factory(dict)

    @property
    def who(self) -> str:
        return f"worker {self.info.slot} (runner {self.info.id}, pid {self.info.pid})"

    def receive(self) -> None:
        """Take in every message waiting on the channel."""
        try:
            while self.connection.poll():
                self._handle(self.connection.recv())
        except (EOFError, OSError):
            pass  # it is exiting; the sentinel will say so

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == channel.READY:
            self.booted = True
            self.peak_memory = message[1]
        elif kind == channel.BOOT_FAILED:
            self.boot_error = message[1]
        elif kind == channel.STARTED:
            _, invocation_id, task, limit = message
            now = time.monotonic()
            self.running.append(Running(invocation_id, task, now,
                                        None if limit is None else now + limit))
        elif kind == channel.FINISHED:
            self.running = [r for r in self.running if r.invocation_id != message[1]]
            self.peak_memory = message[2]
        elif kind == channel.RECYCLE and self.retire_reason is None:
            self.retire_reason = message[1]

    def retire(self) -> None:
        """Tell it to finish its current invocation and exit."""
        self.retiring = self.requested_stop = True
        with contextlib.suppress(OSError, EOFError):
            self.connection.send((channel.RETIRE,))

    def kill_for(self, error: ErrorInfo, task: str | None = None) -> None:
        """SIGKILL it, recording why for the invocations it holds."""
        if self.kill_error is None:
            self.kill_error, self.killed_for_task = error, task
            logger.warning("%s: %s; killing it", self.who, error.message)
            self.kill(error.message)

    def terminate(self, why: str) -> None:
        """SIGTERM it (it hands back what it runs and exits); ``why`` describes its end."""
        self.signals_sent.setdefault(signal.SIGTERM, why)
        self.process.terminate()

    def kill(self, why: str) -> None:
        """SIGKILL it; ``why`` describes its end. The only way the supervisor kills."""
        self.signals_sent.setdefault(signal.SIGKILL, why)
        self.process.kill()

    def deadline(self, boot_timeout: float) -> float | None:
        """The next moment something must happen to it (boot or time limit)."""
        if not self.booted:
            return self.spawned + boot_timeout
        return min((r.deadline for r in self.running if r.deadline is not None), default=None)


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
