"""What the supervisor knows of each worker, and when it may start another.

:class:`Child` follows one worker process through its life (:class:`Phase`)
and its channel messages: booted or not, the job it runs and the hard
deadline for it, its peak memory, whether it should retire and why the
supervisor killed it if it did. :class:`CrashLoop` spaces out respawns of
workers that die before they boot and says when to give up.
"""

from __future__ import annotations

import enum
import logging
import os
import pickle
import signal
import time
from typing import Any

import attrs

from . import channel
from .invocation import ErrorInfo, RunnerInfo
from .jobs import Call, RemoteError
from .spawn import WorkerProcess

logger = logging.getLogger("pprunner.supervisor")

#: first pause before respawning a worker that died at boot; doubles each time
RESPAWN_DELAY = 0.1
#: the longest pause between such respawns
RESPAWN_DELAY_MAX = 30.0


class Phase(enum.Enum):
    """Where a worker is in its life, as its supervisor sees it."""

    #: spawned, loading the app; not ready yet
    BOOTING = "booting"
    #: ready: it runs jobs
    SERVING = "serving"
    #: told to finish its current job and exit (recycled, reloaded, scaled down)
    RETIRING = "retiring"
    #: the supervisor is stopping it (shutdown); what it holds is handed back
    STOPPING = "stopping"


@attrs.frozen
class Running:
    """A job the supervisor knows a worker runs (reported, or handed out by it)."""

    job_id: str
    name: str
    started: float  #: ``time.monotonic()`` when it started
    deadline: float | None  #: when the hard time limit runs out
    #: retry rather than fail it if the hard limit kills the worker (the task's policy)
    retry_on_limit: bool = False


@attrs.frozen
class Kill:
    """Why the supervisor killed a worker: the error its jobs end with."""

    error: ErrorInfo
    #: whether what it held may be tried again
    retry: bool = True
    #: the job whose hard time limit ran out, if that was the reason
    job_id: str | None = None
    #: the worker's exit cause (:attr:`~pprunner.spawn.WorkerExit.cause`)
    cause: str = "killed"


@attrs.define
class Retirement:
    """Why a worker should be replaced, and by which worker."""

    reason: str
    #: False for a scale-down: retire without a replacement
    replace: bool = True
    #: the runner id of the worker started to take its place
    replacement: str | None = None
    #: the worker asked for it (max_tasks_per_child or max_memory_per_child reached):
    #: in push mode it is handed nothing more, so the limit holds as a host's pool
    #: keeps it, while its replacement boots
    at_limit: bool = False
    #: the worker asked to go now (``replace_after_job``): it is handed nothing more,
    #: and it is replaced without waiting for its replacement to boot
    at_once: bool = False


@attrs.define
class Child:
    """A worker process and what the supervisor knows of it."""

    info: RunnerInfo
    process: WorkerProcess
    connection: Any
    spawned: float = attrs.Factory(time.monotonic)
    phase: Phase = Phase.BOOTING
    boot_error: str | None = None
    #: what it runs under a hard time limit, outermost first (more than one while a
    #: task waits, nested): the deadlines the supervisor enforces
    running: list[Running] = attrs.Factory(list)
    #: push mode: the call it was handed (a worker holds at most one)
    call: Call | None = None
    peak_memory: int = 0
    #: its job blocks in ``lend_slot()``: the supervisor runs another worker meanwhile
    waiting: bool = False
    retirement: Retirement | None = None
    kill: Kill | None = None
    _ready: channel.Readiness | None = None
    #: each signal the supervisor sent it, with why: its death by one of them is
    #: described as the supervisor's doing, never as "perhaps out of memory?"
    signals_sent: dict[int, str] = attrs.Factory(dict)

    @property
    def who(self) -> str:
        return f"worker {self.info.slot} (runner {self.info.id}, pid {self.info.pid})"

    @property
    def booted(self) -> bool:
        return self.phase is not Phase.BOOTING

    @property
    def requested_stop(self) -> bool:
        """The supervisor asked it to go: what it held is handed back, not charged."""
        return self.phase in (Phase.RETIRING, Phase.STOPPING)

    @property
    def killed_from_outside(self) -> bool:
        """It died of a signal the supervisor did not send (the OOM killer, a
        SIGTERM to the whole process group): a death, even when it was asked to go."""
        exitcode = self.process.exitcode
        return exitcode is not None and exitcode < 0 and -exitcode not in self.signals_sent

    @property
    def idle(self) -> bool:
        """Ready for a pushed call: serving, holding none, not retiring at a limit or at once."""
        retirement = self.retirement
        return (self.phase is Phase.SERVING and self.call is None and self.kill is None
                and not self.waiting
                and (retirement is None or not (retirement.at_limit or retirement.at_once)))

    @property
    def holds_slot(self) -> bool:
        """It counts towards the pool's size: alive and not on its way out for good (a
        worker being replaced shares its slot with its replacement)."""
        retirement = self.retirement
        return (self.phase in (Phase.BOOTING, Phase.SERVING)
                and (retirement is None or retirement.replace))

    def receive(self) -> list[tuple[Any, ...]]:
        """Take in every message waiting on the channel; return those about pushed
        calls (``done``, ``note``, ``waiting``) and ``runner_cache`` requests, which are
        the feed's to handle."""
        results = []
        try:
            while self._readiness().wait():
                data = self.connection.recv_bytes()
                try:
                    message = pickle.loads(data)
                except Exception as exc:
                    message = self._undecodable(exc)
                    if message is None:
                        continue
                if message[0] in (channel.DONE, channel.NOTE, channel.CACHE):
                    results.append(message)
                elif message[0] == channel.WAITING:
                    self.waiting = bool(message[1])
                    results.append(message)
                else:
                    self._handle(message)
        except (EOFError, OSError):
            pass  # it is exiting; the sentinel will say so
        return results

    def _readiness(self) -> channel.Readiness:
        if self._ready is None:
            self._ready = channel.Readiness(self.connection)
        return self._ready

    def _undecodable(self, error: Exception) -> tuple[Any, ...] | None:
        """A message that pickled in the worker but does not unpickle here. Every
        message but a pushed call's ``done`` is plain data, so it is the result of
        the call this worker holds: that call fails with the error, rather than
        the supervisor's loop (and every other call with it)."""
        if self.call is None:
            logger.error("%s sent a message that cannot be unpickled: %s", self.who, error)
            return None
        return (channel.DONE, self.call.id, False, RemoteError(
            type(error).__name__, f"the result of {self.call.name} cannot be unpickled in "
            f"the supervisor's process: {error}"), 0)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == channel.READY:
            if self.phase is Phase.BOOTING:
                self.phase = Phase.SERVING
            self.peak_memory = message[1]
        elif kind == channel.BOOT_FAILED:
            self.boot_error = message[1]
        elif kind == channel.STARTED:
            _, invocation_id, task, limit, retry_on_limit = message
            self.started(invocation_id, task, limit, retry_on_limit)
        elif kind == channel.FINISHED:
            self.finished(message[1], message[2])
        elif kind == channel.RECYCLE:
            at_once = len(message) > 2 and bool(message[2])
            if self.retirement is None:
                self.retirement = Retirement(message[1], at_limit=True, at_once=at_once)
            elif at_once:
                self.retirement.at_once, self.retirement.reason = True, message[1]

    def started(self, job_id: str, name: str, limit: float | None,
                retry_on_limit: bool = False) -> None:
        now = time.monotonic()
        self.running.append(Running(job_id, name, now, None if limit is None else now + limit,
                                    retry_on_limit))

    def finished(self, job_id: str, peak_memory: int) -> None:
        if self.running:
            self.running = [r for r in self.running if r.job_id != job_id]
        self.peak_memory = max(self.peak_memory, peak_memory)

    def send(self, *message: Any) -> bool:
        """Send on its channel; False when it is gone (its sentinel will say so). A
        value that does not pickle raises, before anything is written."""
        data = channel.encode(message)
        try:
            self.connection.send_bytes(data)
        except (OSError, EOFError):
            return False
        return True

    def retire(self) -> None:
        """Tell it to finish its current job and exit."""
        self.phase = Phase.RETIRING
        self.send(channel.RETIRE)

    def stop(self) -> None:
        """Tell it to finish (or hand back) its current job and exit: a shutdown."""
        if self.phase is not Phase.RETIRING:
            self.send(channel.RETIRE)
        self.phase = Phase.STOPPING

    def kill_for(self, kill: Kill) -> None:
        """SIGKILL it, recording why for the jobs it holds."""
        if self.kill is None:
            self.kill = kill
            logger.warning("%s: %s; killing it", self.who, kill.error.message)
            self.signal(signal.SIGKILL, kill.error.message)

    def signal(self, signum: int, why: str) -> None:
        """SIGTERM (it hands back what it runs and exits), SIGKILL, or any other
        signal a host asks for (:meth:`Supervisor.signal_worker`); ``why``
        describes its end. The only way the supervisor signals a worker."""
        self.signals_sent.setdefault(signum, why)
        if signum == signal.SIGKILL:
            self.process.kill()
        elif signum == signal.SIGTERM:
            self.process.terminate()
        elif self.process.pid is not None and self.process.exitcode is None:
            os.kill(self.process.pid, signum)

    def overdue(self, now: float, boot_timeout: float) -> Kill | None:
        """Why it must be killed now (boot timeout, a job's hard limit), if it must."""
        if self.phase is Phase.BOOTING and now - self.spawned > boot_timeout:
            return Kill(ErrorInfo("BootTimeout", f"did not report ready within "
                                  f"{boot_timeout:g} s"), cause="boot_timeout")
        for running in self.running:
            if running.deadline is not None and now > running.deadline:
                limit = running.deadline - running.started
                return Kill(ErrorInfo("TimeLimitExceeded", f"{running.name} exceeded its "
                                      f"hard time limit of {limit:g} s"),
                            retry=running.retry_on_limit, job_id=running.job_id,
                            cause="time_limit")
        return None

    def exit_cause(self) -> str:
        """Why it exited, once it has (see :attr:`~pprunner.spawn.WorkerExit.cause`)."""
        exitcode = self.process.exitcode
        if self.kill is not None:
            return self.kill.cause
        if exitcode is not None and exitcode < 0 and -exitcode in self.signals_sent:
            return "stopped" if self.phase is Phase.STOPPING else "killed"
        if exitcode:
            return "signal" if exitcode < 0 else "exit_code"
        if self.phase is Phase.STOPPING:
            return "stopped"
        if self.phase is Phase.RETIRING:
            retirement = self.retirement
            at_limit = retirement is not None and (retirement.at_limit or retirement.at_once)
            return "recycled" if at_limit else "retired"
        return "exit_code"

    def deadline(self, boot_timeout: float) -> float | None:
        """The next moment something must happen to it (boot or time limit)."""
        if self.phase is Phase.BOOTING:
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
