"""The worker: a loop that claims one invocation at a time and runs it.

:func:`main` is the entry point of a worker process (the supervisor's spawn
hook starts it); :class:`Worker` is the loop itself, also used in-process by
inline mode (``--processes 0``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import random
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pluggy
import psutil

from . import channel, log
from .backend import Backend
from .channel import WorkerChannel
from .errors import AppLoadError, NotOwner, PluginError, SerializationError, SoftTimeLimitExceeded
from .exitcodes import ExitCode
from .invocation import ErrorInfo, Invocation, Returned, Status
from .proctitle import set_title
from .retries import retry_delay
from .spawn import WorkerSpec, close_inherited_fd
from .task import App, Task, load_app

logger = logging.getLogger("pprunner.worker")

#: seconds a worker whose supervisor vanished gets to hand back its
#: invocation before it exits regardless
ORPHAN_GRACE = 2.0


class WorkerTerminated(BaseException):
    """Raised inside a running task when the worker is told to stop now (SIGTERM).

    A BaseException so that a task's ``except Exception`` does not swallow it.
    """


@attrs.define(repr=False)
class WorkerContext:
    """What a running task and the worker-side hooks can reach.

    ``pprunner.current_context()`` returns it inside a task (None elsewhere).
    """

    app: App
    runner_id: str
    slot: int
    #: shared by all workers of one supervisor (a plain dict inline)
    runner_cache: Any
    stop_event: Any
    #: the invocations being run, outermost first: more than one while a
    #: waiting task runs what it waits for (the nested wait strategy)
    stack: list[Invocation] = attrs.Factory(list)
    #: runs one more invocation nested in the current one (set by the Worker)
    run_nested: Callable[[Invocation], None] = attrs.field(default=None, repr=False)

    @property
    def invocation(self) -> Invocation | None:
        """The invocation running now (the innermost), None between invocations."""
        return self.stack[-1] if self.stack else None

    @property
    def depth(self) -> int:
        return len(self.stack)

    @property
    def backend(self) -> Backend:
        return self.app.backend

    def __repr__(self) -> str:
        return f"<WorkerContext {self.runner_id} slot={self.slot}>"

    def wait_for(self, invocation_ids: Sequence[str], timeout: float | None,
                 strategy: str | None = None) -> list[Invocation]:
        """Wait for other invocations from inside the running one (pause-on-wait hook)."""
        assert self.invocation is not None
        done: list[Invocation] | None = self.app.plugins.hook.pprunner_pause_on_wait(
            context=self, waiter=self.invocation, invocation_ids=list(invocation_ids),
            timeout=timeout, strategy=strategy or self.app.config.wait_strategy)
        if done is None:
            raise PluginError(f"no pprunner_pause_on_wait implementation answered for "
                              f"strategy {strategy or self.app.config.wait_strategy!r}")
        return done


_current: WorkerContext | None = None


def current_context() -> WorkerContext | None:
    """The running task's WorkerContext, or None outside a worker."""
    return _current


@attrs.frozen
class Retrying:
    """An attempt that failed but earned another one after ``delay`` seconds."""

    error: ErrorInfo
    delay: float


@attrs.define
class Supervision:
    """What a worker process owes its supervisor around each invocation:
    reports for the hard time limit and diagnostics, the soft time limit,
    and asking to be recycled (tasks done, memory)."""

    channel: WorkerChannel
    #: recycle after this many invocations (jitter included); 0: never
    max_tasks: int = 0
    #: recycle when resident memory after an invocation exceeds this (bytes); 0: never
    max_memory: int = 0
    done: int = 0
    asked: bool = False
    #: the peak memory last reported
    reported_peak: int = 0
    #: per running invocation: whether the supervisor was told (it has a hard
    #: limit), and the enclosing soft-limit timer (seconds left, when suspended)
    _frames: list[tuple[bool, float, float]] = attrs.Factory(list)
    #: whether the soft-limit timer (ITIMER_REAL) runs now; while it does not, starting
    #: and finishing an invocation without a soft limit makes no timer system call
    _timer_runs: bool = False

    def started(self, invocation: Invocation, task: Task[Any, Any] | None) -> None:
        """Only invocations with a hard time limit are reported: the supervisor
        needs to know nothing else, and a report per task would cost throughput."""
        limit = task.time_limit if task else None
        if limit:
            self.channel.send(channel.STARTED, invocation.id, invocation.task, limit)
        soft = task.soft_time_limit if task else None
        left = 0.0
        if soft or self._timer_runs:  # set this one's, suspending an enclosing one's
            left, _ = signal.setitimer(signal.ITIMER_REAL, soft or 0)
            self._timer_runs = bool(soft)
        self._frames.append((bool(limit), left, time.monotonic()))

    def finished(self, invocation: Invocation) -> None:
        reported, left, suspended = self._frames.pop()
        peak = channel.peak_rss()
        if reported or peak > self.reported_peak:
            self.channel.send(channel.FINISHED, invocation.id, peak)
            self.reported_peak = peak
        if left:  # an enclosing invocation's soft limit keeps running, minus the time spent
            signal.setitimer(signal.ITIMER_REAL,
                             max(left - (time.monotonic() - suspended), 0.001))
            self._timer_runs = True
        elif self._timer_runs:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._timer_runs = False
        self.done += 1
        reason = None if self.asked else self._recycle_reason()
        if reason:
            self.asked = True
            logger.info("asking to be recycled: %s", reason)
            self.channel.send(channel.RECYCLE, reason)

    def _recycle_reason(self) -> str | None:
        if self.max_tasks and self.done >= self.max_tasks:
            return f"max_tasks_per_child reached ({self.done} invocations)"
        if self.max_memory:
            rss = psutil.Process().memory_info().rss
            if rss > self.max_memory:
                return (f"resident memory {rss / 2**20:.0f} MiB exceeds max_memory_per_child "
                        f"({self.max_memory / 2**20:.0f} MiB)")
        return None


@attrs.define
class Worker:
    """Claims and runs invocations until the stop event is set."""

    context: WorkerContext
    #: called between invocations (inline mode records heartbeats with it)
    between: Callable[[], None] = lambda: None
    #: set in worker processes; None inline
    supervision: Supervision | None = None
    _in_task: bool = False
    _stopping: bool = False
    #: claimed together with the last completion, to run next
    _next: Invocation | None = None

    def __attrs_post_init__(self) -> None:
        self.context.run_nested = self.execute

    @property
    def app(self) -> App:
        return self.context.app

    def request_stop(self) -> None:
        self._stopping = True

    def terminate(self, signum: int = signal.SIGTERM, frame: types.FrameType | None = None) -> None:
        """SIGTERM handler: interrupt the running task, or just stop when idle."""
        self._stopping = True
        if self._in_task:
            raise WorkerTerminated(f"worker {self.context.runner_id} received a stop request")

    def soft_limit_reached(self, signum: int, frame: types.FrameType | None) -> None:
        """SIGALRM handler: the running task's soft time limit ran out."""
        if self._in_task and self.context.invocation is not None:
            task = self.context.invocation.task
            raise SoftTimeLimitExceeded(f"soft time limit exceeded by {task}")

    def _retire_granted(self) -> bool:
        if self.supervision is None or not self.supervision.channel.retire_granted():
            return False
        logger.info("retiring as the supervisor asked")
        return True

    def run(self, *, burst: bool = False) -> None:
        backend = self.app.backend
        timeout = self.app.config.claim_timeout
        try:
            while not (self._stopping or self.context.stop_event.is_set()):
                self.between()
                if self._retire_granted():
                    return
                invocation, self._next = self._next, None
                if invocation is None:
                    invocation = backend.claim(self.context.runner_id, timeout)
                if invocation is not None and self._stopping:
                    self._next = invocation  # claimed as the stop came: handed back below
                    return
                if invocation is not None:
                    self.execute(invocation)
                elif burst and not _unfinished(backend):
                    return
        finally:
            if self._next is not None:
                backend.reroute(self.context.runner_id, None)
                self._next = None

    def execute(self, invocation: Invocation) -> None:
        """Run one claimed invocation and record its outcome; never raises for task errors."""
        global _current
        context = self.context
        context.stack.append(invocation)
        _current = context
        outer_in_task = self._in_task
        set_title(f"pprunner worker {context.slot}: {invocation.task}")
        task = self.app.tasks.get(invocation.task)
        started = time.perf_counter()
        try:
            with log.invocation_scope(invocation.id):
                if self.supervision is not None:
                    self.supervision.started(invocation, task)
                self._in_task = True
                try:
                    outcome = self._run(invocation, task)
                finally:
                    self._in_task = outer_in_task
                    if self.supervision is not None:
                        self.supervision.finished(invocation)
                self._record(invocation, outcome, time.perf_counter() - started)
        except WorkerTerminated:
            if context.depth > 1:
                raise  # unwind to the outermost invocation, which hands everything back
            handed = context.backend.reroute(context.runner_id, None)
            logger.info("stopped while running %s; handed back %d invocation(s)",
                        invocation.id, len(handed))
            self._stopping = True
        finally:
            context.stack.pop()
            outer = context.invocation
            _current = context if outer else None
            set_title(f"pprunner worker {context.slot}: {outer.task if outer else 'idle'}")

    def _run(self, invocation: Invocation,
             task: Task[Any, Any] | None) -> bytes | ErrorInfo | Retrying:
        if task is None:
            return ErrorInfo("UnknownTask", f"task {invocation.task!r} is not registered in app "
                             f"{self.app.name!r}; registered: {', '.join(sorted(self.app.tasks))}")
        try:
            args, kwargs = self.app.codec.decode_call(invocation)
        except (SerializationError, PluginError) as exc:
            return ErrorInfo(type(exc).__name__, str(exc))
        try:
            returned: Returned = self.app.plugins.hook.pprunner_execute(
                task=task, invocation=invocation, args=args, kwargs=kwargs, context=self.context)
        except WorkerTerminated:
            raise
        except BaseException as exc:  # the task's own error, whatever it is, fails the invocation
            delay = retry_delay(task, invocation, exc)
            error = _task_error(exc)
            return error if delay is None else Retrying(error, delay)
        try:
            return self.app.codec.encode_result(invocation, returned.value)
        except (SerializationError, PluginError) as exc:
            return ErrorInfo(type(exc).__name__, str(exc))

    def _record(self, invocation: Invocation, outcome: bytes | ErrorInfo | Retrying,
                seconds: float) -> None:
        backend, runner_id = self.context.backend, self.context.runner_id
        try:
            if isinstance(outcome, Retrying):
                backend.retry(invocation.id, runner_id, outcome.error,
                              time.time() + outcome.delay)
                logger.warning("%s attempt %d/%d failed after %.3f s: %s: %s; retrying in "
                               "%.1f s", invocation.task, invocation.attempts,
                               invocation.max_attempts, seconds, outcome.error.type,
                               outcome.error.message, outcome.delay)
            elif isinstance(outcome, ErrorInfo):
                backend.fail(invocation.id, runner_id, outcome)
                logger.warning("%s failed after %.3f s: %s: %s", invocation.task, seconds,
                               outcome.type, outcome.message)
            elif self.context.depth == 1 and not self._stopping:
                # idle after this one: complete and claim the next in one go
                self._next = backend.complete_and_claim(invocation.id, runner_id, outcome)
                logger.debug("%s succeeded in %.3f s", invocation.task, seconds)
            else:
                backend.complete(invocation.id, runner_id, outcome)
                logger.debug("%s succeeded in %.3f s", invocation.task, seconds)
        except NotOwner as exc:
            logger.warning("outcome refused, this runner no longer owns it: %s", exc)


def _unfinished(backend: Backend) -> int:
    counts = backend.counts()
    return counts[Status.PENDING] + counts[Status.RUNNING] + counts[Status.PAUSED]


_INTERNAL_DIRS = (os.path.dirname(pluggy.__file__), os.path.dirname(__file__))


def _task_error(exc: BaseException) -> ErrorInfo:
    """ErrorInfo whose traceback starts at the task, without pprunner's and pluggy's frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        tb = tb.tb_next
    return ErrorInfo.from_exception(exc.with_traceback(tb) if tb is not None else exc)


# ---------------------------------------------------------------------------
# the worker process
# ---------------------------------------------------------------------------


def main(spec: WorkerSpec) -> None:
    """Entry point of a worker process (pynenc's ``persistent_process_main``)."""
    settings = spec.settings
    if settings["start_method"] == "fork":
        close_inherited_fd(spec.lifeline_writer_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    faulthandler.enable()
    log.setup(settings["log_level"], spec.runner_id)
    set_title(f"pprunner worker {spec.slot}: starting")
    reports = WorkerChannel(spec.channel)
    watch_lifeline(spec.lifeline)
    try:
        app = load_app(spec.app_path)
        app.configure(source="the supervisor", **settings)
        # open it now: a backend that cannot be reached is a boot failure; once running, a
        # worker waits out any outage, since what it holds must be stored when it is over
        app.backend.keep_waiting = lambda outage_s: True
    except AppLoadError as exc:
        logger.error("%s", exc)
        reports.send(channel.BOOT_FAILED, str(exc))
        sys.exit(ExitCode.APP_LOAD_ERROR)
    except Exception as exc:
        logger.exception("worker %d failed to boot", spec.slot)
        reports.send(channel.BOOT_FAILED, f"{type(exc).__name__}: {exc}")
        sys.exit(ExitCode.INTERNAL_ERROR)
    context = WorkerContext(app=app, runner_id=spec.runner_id, slot=spec.slot,
                            runner_cache=spec.runner_cache, stop_event=spec.stop_event)
    max_tasks = settings["max_tasks_per_child"]
    if max_tasks:
        max_tasks += random.randint(0, settings["max_tasks_jitter"])
    worker = Worker(context, supervision=Supervision(
        reports, max_tasks=max_tasks, max_memory=settings["max_memory_per_child"] * 2**20))
    signal.signal(signal.SIGTERM, worker.terminate)
    signal.signal(signal.SIGALRM, worker.soft_limit_reached)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    reports.send(channel.READY, channel.peak_rss())
    logger.info("worker %d ready (app %s)", spec.slot, spec.app_path)
    set_title(f"pprunner worker {spec.slot}: idle")
    try:
        worker.run()
    finally:
        app.close()
    logger.info("worker %d stopped", spec.slot)


def watch_lifeline(lifeline: Any) -> None:
    """Stop this process when the supervisor is gone (its end of the pipe closes).

    A blocking read in a daemon thread: no polling, and it works whatever
    killed the supervisor, SIGKILL included. The worker gets SIGTERM, hands
    back what it runs, and is forced out after :data:`ORPHAN_GRACE` seconds.
    """
    def wait_for_eof() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv_bytes()
        logger.warning("the supervisor is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE)
        os._exit(ExitCode.INTERRUPTED)

    threading.Thread(target=wait_for_eof, name="pprunner-lifeline", daemon=True).start()


def guard_helper_process(lifeline: Any, writer_fd: int, start_method: str, log_level: str,
                         supervisor_id: str) -> None:
    """Initializer of the supervisor's helper processes (the runner-cache manager).

    They log in pprunner's format under their supervisor's id (their own pid
    tells them apart), like every other process of a run.
    """
    if start_method == "fork":
        close_inherited_fd(writer_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log.setup(log_level, supervisor_id)
    watch_lifeline(lifeline)
