"""What the supervisor knows of one worker: :class:`Child`.

A child follows one worker process through its life (:class:`Phase`) and
its channel messages: booted or not, the job it runs and the hard deadline
for it, its peak memory, whether it should retire and why the supervisor
killed it if it did. Only the :class:`~pprunner.pool.Pool` changes a
child; feeds and the supervisor ask the pool.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import time
from typing import Any

import attrs

from . import channel, process_group
from .errors import PprunnerError
from .held import HeldJob
from .invocation import ErrorInfo, RunnerInfo
from .jobs import Call, RemoteError
from .spawn import SPARE_SLOT, WorkerProcess

logger = logging.getLogger("pprunner.supervisor")


class Phase(enum.Enum):
    """Where a worker is in its life, as its supervisor sees it."""

    #: spawned, loading the app; not ready yet
    BOOTING = "booting"
    #: a spare: booted, holding no slot, waiting to take one (``spare_workers``)
    SPARE = "spare"
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
    #: what a host needs to settle it if the worker dies (host-consumed jobs)
    data: Any = None


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
    #: a reload: it runs the code it imported before, so in push mode it is handed
    #: nothing more, and the first call after the reload runs the new code
    stale: bool = False


@attrs.define
class Child:
    """A worker process and what the supervisor knows of it."""

    info: RunnerInfo
    process: WorkerProcess
    connection: Any
    spawned: float = attrs.Factory(time.monotonic)
    phase: Phase = Phase.BOOTING
    #: its own code runs (it said :class:`~pprunner.channel.Hello`): it got through the
    #: start method's preparation, which fails the same way for every worker when it fails
    said_hello: bool = False
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
    #: the process group it led, SIGKILLed with it: what is left of it is reaped
    killed_group: int | None = None
    #: host-consumed: the job it runs without a hard limit, which it records here rather
    #: than report (:mod:`pprunner.held`); read when it dies
    held: HeldJob | None = None

    @property
    def who(self) -> str:
        return f"worker {self.info.slot} (runner {self.info.id}, pid {self.info.pid})"

    @property
    def booted(self) -> bool:
        return self.phase is not Phase.BOOTING

    @property
    def spare(self) -> bool:
        """Spawned as a spare and not given a slot yet (booting or booted)."""
        return self.info.slot == SPARE_SLOT

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
    def busy(self) -> bool:
        """It runs a job: one it reported or recorded, or a call it was handed."""
        return (bool(self.running) or self.call is not None
                or (self.held is not None and self.held.holding))

    @property
    def idle(self) -> bool:
        """Ready for a pushed call: serving, holding none, not retiring at a limit or at once."""
        retirement = self.retirement
        return (self.phase is Phase.SERVING and self.call is None and self.kill is None
                and not self.waiting
                and (retirement is None
                     or not (retirement.at_limit or retirement.at_once or retirement.stale)))

    @property
    def holds_slot(self) -> bool:
        """It counts towards the pool's size: alive and not on its way out for good (a
        worker being replaced shares its slot with its replacement)."""
        retirement = self.retirement
        return (self.phase in (Phase.BOOTING, Phase.SERVING) and not self.spare
                and (retirement is None or retirement.replace))

    def receive(self) -> list[channel.Message]:
        """Every message waiting on its channel, in order (the supervisor routes each
        to its receiver)."""
        messages = []
        try:
            while self._readiness().wait():
                data = self.connection.recv_bytes()
                try:
                    messages.append(channel.decode(data))
                except Exception as exc:
                    undecodable = self._undecodable(exc)
                    if undecodable is not None:
                        messages.append(undecodable)
        except (EOFError, OSError):
            pass  # it is exiting; the sentinel will say so
        return messages

    def _readiness(self) -> channel.Readiness:
        if self._ready is None:
            self._ready = channel.Readiness(self.connection)
        return self._ready

    def _undecodable(self, error: Exception) -> channel.Done | None:
        """A message that pickled in the worker but does not unpickle here. Every
        message but a pushed call's ``Done`` is plain data, so it is the result of
        the call this worker holds."""
        name = self.call.name if self.call is not None else "its call"
        return self.held_call_failed(RemoteError(
            type(error).__name__, f"the result of {name} cannot be unpickled in the "
            f"supervisor's process: {error}"))

    def held_call_failed(self, error: RemoteError) -> channel.Done | None:
        """The ``Done`` that fails the call it holds with ``error`` (what it sent back
        does not unpickle here, or what it was handed does not unpickle there): that
        call fails, rather than the worker or the supervisor's loop (and every other
        call with it). None, and logged, when it holds none."""
        if self.call is None:
            logger.error("%s sent a message that cannot be unpickled: %s", self.who, error.message)
            return None
        return channel.Done(self.call.id, False, error, 0)

    # -- its reports about itself (see Supervisor.receivers) -----------------------

    def on_hello(self, message: channel.Hello) -> None:
        self.said_hello = True

    def on_ready(self, message: channel.Ready) -> None:
        if self.phase is Phase.BOOTING:
            self.phase = Phase.SPARE if self.spare else Phase.SERVING
        self.peak_memory = message.peak_memory

    def on_boot_failed(self, message: channel.BootFailed) -> None:
        self.boot_error = message.error

    def on_started(self, message: channel.Started) -> None:
        self.started(message.job_id, message.task, message.hard_limit, message.retry_on_limit,
                     message.data)

    def on_finished(self, message: channel.Finished) -> None:
        self.finished(message.job_id, message.peak_memory)

    def on_recycle(self, message: channel.Recycle) -> None:
        if self.retirement is None:
            self.retirement = Retirement(message.reason, at_limit=True, at_once=message.at_once)
        elif message.at_once:
            self.retirement.at_once, self.retirement.reason = True, message.reason

    def started(self, job_id: str, name: str, limit: float | None,
                retry_on_limit: bool = False, data: Any = None) -> None:
        now = time.monotonic()
        self.running.append(Running(job_id, name, now, None if limit is None else now + limit,
                                    retry_on_limit, data))

    def finished(self, job_id: str, peak_memory: int) -> None:
        if self.running:
            self.running = [r for r in self.running if r.job_id != job_id]
        self.peak_memory = max(self.peak_memory, peak_memory)

    def send(self, message: channel.Message) -> bool:
        """Send on its channel; False when it is gone (its sentinel will say so). A
        value that does not pickle raises, before anything is written."""
        data = channel.encode(message)
        try:
            self.connection.send_bytes(data)
        except (OSError, EOFError):
            return False
        return True

    def refuse_cache_request(self) -> None:
        """``runner_cache`` is pull mode's (its store lives beside the backend feed):
        the job that asked gets an error, rather than waiting for an answer."""
        self.send(channel.CacheAnswer(False, PprunnerError(
            "runner_cache is only available to invocations pulled from a backend")))

    def serve(self, slot: int) -> None:
        """A booted spare takes ``slot``: from now on it serves as any worker there."""
        self.info = attrs.evolve(self.info, slot=slot)
        self.phase = Phase.SERVING
        self.send(channel.Serve(slot))

    def retire(self) -> None:
        """Tell it to finish its current job and exit."""
        self.phase = Phase.RETIRING
        self.send(channel.Retire())

    def stop(self) -> None:
        """Tell it to finish (or hand back) its current job and exit: a shutdown."""
        if self.phase is not Phase.RETIRING:
            self.send(channel.Retire())
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
        describes its end. The only way the supervisor signals a worker.

        A worker that leads its own process group (an RQ horse does, as RQ's forked
        ones do) is SIGKILLed with its group: what its task started dies with it, at
        the same moment, rather than being orphaned first and killed after."""
        self.signals_sent.setdefault(signum, why)
        if signum == signal.SIGKILL:
            if not self._kill_own_group():
                self.process.kill()
        elif signum == signal.SIGTERM:
            self.process.terminate()
        elif self.process.pid is not None and self.process.exitcode is None:
            os.kill(self.process.pid, signum)

    def _kill_own_group(self) -> bool:
        """SIGKILL the worker's process group if the worker leads one; False if not."""
        pid = self.process.pid
        if self.process.exitcode is not None or pid is None:
            return False
        if not process_group.leads_own_group(pid):
            return False
        if not process_group.kill_group(pid):
            return False
        self.killed_group = pid
        return True

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
