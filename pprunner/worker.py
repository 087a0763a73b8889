"""The worker: a loop that runs one job at a time.

A job is an :class:`~pprunner.invocation.Invocation` claimed from the app's
backend (pull mode) or a :class:`~pprunner.jobs.Call` its supervisor handed
it (push mode); one loop serves both, a :class:`JobSource` says where jobs
come from and where outcomes go. :func:`main` is the entry point of a worker
process (the supervisor's spawn hook starts it); :class:`Worker` is the loop
itself, also used in-process by inline mode (``--processes 0``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import logging
import os
import pickle
import random
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import attrs
import pluggy

from . import channel, consuming, log, plugins
from . import config as config_module
from .backend import Backend
from .cache import RunnerCache
from .channel import WorkerChannel
from .config import Config
from .errors import (
    AppLoadError,
    NotOwner,
    PluginError,
    PprunnerError,
    SerializationError,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from .exitcodes import ExitCode
from .invocation import ErrorInfo, Invocation, Returned, Status
from .jobs import Call, RemoteError, Runnable
from .plugins import Plugins, announce, get_plugin_manager
from .proctitle import set_title
from .retries import retry_delay
from .spawn import SPARE_SLOT, WorkerSpec, close_inherited_fd
from .task import App, load_app

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
    """What a running job and the worker-side hooks can reach.

    ``pprunner.current_context()`` returns it inside a task (None elsewhere).
    In push mode there is no App: ``app`` is None and ``config``/``plugins``
    are the supervisor's.
    """

    app: App | None
    runner_id: str
    slot: int
    #: shared by all workers of one pull-mode supervisor (:class:`~pprunner.cache.RunnerCache`;
    #: a plain dict inline; None in push mode, whose hosts keep their own state)
    runner_cache: Any
    stop_event: Any
    config: Config = attrs.field(default=attrs.Factory(lambda self: self.app.config,
                                                        takes_self=True))
    plugins: Plugins = attrs.field(default=attrs.Factory(lambda self: self.app.plugins,
                                                          takes_self=True))
    #: the jobs being run, outermost first: more than one while a waiting task
    #: runs what it waits for (the nested wait strategy)
    stack: list[Invocation | Call] = attrs.Factory(list)
    #: runs one more invocation nested in the current one (set by the Worker)
    run_nested: Callable[[Invocation], None] = attrs.field(default=None, repr=False)
    #: the pipe to the supervisor (worker processes only; None inline)
    channel: WorkerChannel | None = attrs.field(default=None, repr=False)
    #: the id of the supervisor this worker belongs to (its own runner id inline)
    supervisor_id: str = ""
    #: asks for this process to be replaced once the current job ends (set by the Worker)
    _replace: Callable[[str], None] = attrs.field(default=lambda reason: None, repr=False,
                                                  init=False)
    #: tells the supervisor the job starts (True) or stops (False) waiting (set by the Worker)
    _waiting: Callable[[bool], None] = attrs.field(default=lambda waiting: None, repr=False,
                                                   init=False)
    #: how many ``lend_slot()`` blocks are open (only the outermost one reports)
    _lending: int = attrs.field(default=0, repr=False, init=False)

    @property
    def job(self) -> Invocation | Call | None:
        """The job running now (the innermost), None between jobs."""
        return self.stack[-1] if self.stack else None

    @property
    def invocation(self) -> Invocation | None:
        """The invocation running now (the innermost); None between jobs and in push mode."""
        job = self.job
        return job if isinstance(job, Invocation) else None

    @property
    def depth(self) -> int:
        return len(self.stack)

    @property
    def backend(self) -> Backend:
        if self.app is None:
            raise PprunnerError("a worker in push mode has no backend: its calls come "
                                "from its supervisor")
        return self.app.backend

    def __repr__(self) -> str:
        return f"<WorkerContext {self.runner_id} slot={self.slot}>"

    def replace_after_job(self, reason: str) -> None:
        """Have this worker process replaced as soon as the current job ends: it is
        handed no further job, and its replacement starts at once.

        For a job that ended in a state the process should not carry into the next
        one: an asynchronous exception (a host's own timeout) that may have broken
        a library's invariants halfway. Inline (no supervisor) it does nothing.
        """
        self._replace(reason)

    def note(self, data: Any) -> None:
        """Push mode: tell the sender of the running call something, as a
        :class:`~pprunner.jobs.Noted` event — for instance work the call took on
        in its host's name, which the host must take back if this worker dies.
        Sent at once and delivered before the call's ending; ``data`` must pickle."""
        outermost = self.stack[0] if self.stack else None
        if not isinstance(outermost, Call) or self.channel is None:
            raise PprunnerError("note() is for a pushed call running in a worker process")
        self.channel.send(channel.Note(outermost.id, data))

    @contextlib.contextmanager
    def lend_slot(self) -> Iterator[None]:
        """Around a blocking wait for work other workers do: while the block runs,
        this worker's slot is lent, so a pool whose every worker waits cannot
        deadlock on the work they wait for.

        In a worker process it tells the supervisor, which runs one more worker (a
        booted spare at once, else a new one) for as long as the wait lasts (at most
        ``max_lent_slots`` beyond ``processes``; past that bound the wait just
        blocks), and retires one when the slot has been given back for
        ``pprunner.pool.LEND_LINGER`` seconds: a job that waits several times in turn keeps the
        extra worker. The job keeps its own limits meanwhile (its hard time limit
        goes on running). Nested blocks lend once. Inline (no supervisor) it does
        nothing::

            with pprunner.current_context().lend_slot():
                value = host_result.get(timeout=60)
        """
        self._lending += 1
        try:
            # inside the try: a host's answer to the report may come as a signal whose
            # handler raises before the report's send returns (Celery's refused wait),
            # and the supervisor must then hear that the wait is over
            if self._lending == 1:
                self._waiting(True)
            yield
        finally:
            self._lending -= 1
            if self._lending == 0:
                self._waiting(False)

    def wait_for(self, invocation_ids: Sequence[str], timeout: float | None,
                 strategy: str | None = None) -> list[Invocation]:
        """Wait, inside the running invocation, for other invocations to end (the
        pause-on-wait hook); returns them, final, in the order asked."""
        assert self.invocation is not None
        return self._pause_on_wait(self.invocation, invocation_ids, None, timeout, strategy)

    def wait_for_host(self, waiter: consuming.HostJob | Call, job_ids: Sequence[str],
                      pending: Callable[[], Sequence[str]], timeout: float | None,
                      strategy: str | None = None) -> None:
        """Wait, inside a host's job (``waiter``), for other jobs of the host to end:
        ``pending()`` says which of ``job_ids`` (the host's ids) are not final yet,
        from the host's own store. The same hook and strategies as a pulled
        invocation's wait: by default the slot is lent while it waits. Raises
        :class:`~pprunner.errors.ResultTimeout` after ``timeout`` seconds."""
        self._pause_on_wait(waiter, job_ids, pending, timeout, strategy)

    def _pause_on_wait(self, waiter: Invocation | consuming.HostJob | Call, ids: Sequence[str],
                       pending: Callable[[], Sequence[str]] | None, timeout: float | None,
                       strategy: str | None) -> Any:
        chosen = strategy or self.config.wait_strategy
        done = self.plugins.hook.pprunner_pause_on_wait(
            context=self, waiter=waiter, invocation_ids=list(ids), timeout=timeout,
            strategy=chosen, pending=pending)
        if done is None:
            raise PluginError(f"no pprunner_pause_on_wait implementation answered for "
                              f"strategy {chosen!r}")
        return done


_current: WorkerContext | None = None


def current_context() -> WorkerContext | None:
    """The running task's WorkerContext, or None outside a worker."""
    return _current


@attrs.define
class _Orphaning:
    """What this worker does when its supervisor dies (:func:`finish_jobs_when_orphaned`)."""

    finish_job: bool = False
    on_orphaned: Callable[[], None] | None = None
    #: set while no job runs (between jobs, and before the first)
    idle: threading.Event = attrs.Factory(threading.Event)


_orphaning = _Orphaning()
_orphaning.idle.set()


def finish_jobs_when_orphaned(on_orphaned: Callable[[], None] | None = None) -> None:
    """Called in a worker process (a host's initializer): when the supervisor dies,
    the job that runs goes on to its end (within its ``time_limit``) and the worker
    then exits without taking another, instead of being interrupted at once. For a
    host whose job records its own outcome, as RQ's forked horse does when its
    worker is killed. ``on_orphaned`` runs (in a thread) as the job is left to end:
    the host may keep the signs of life its peers watch for that long."""
    _orphaning.finish_job = True
    _orphaning.on_orphaned = on_orphaned


def _finish_orphaned_job() -> None:
    """The supervisor is gone: with :func:`finish_jobs_when_orphaned`, wait for the
    running job to end, at most its time limit."""
    job = _current.job if _current is not None else None
    if not _orphaning.finish_job or job is None:
        return
    logger.warning("the supervisor is gone; finishing %s before stopping", job.id)
    if _orphaning.on_orphaned is not None:
        _orphaning.on_orphaned()
    _orphaning.idle.wait(getattr(job, "time_limit", None))


@attrs.frozen
class Retrying:
    """An attempt that failed but earned another one after ``delay`` seconds."""

    error: ErrorInfo
    delay: float


@attrs.frozen
class Limits:
    """A job's time limits, and its policy when the hard one kills its worker."""

    hard: float | None = None
    soft: float | None = None
    #: retry (rather than fail) an invocation whose worker was killed at the hard limit
    retry_on_hard: bool = False

    @classmethod
    def of(cls, job: Invocation | Call, app: App | None) -> Limits:
        if isinstance(job, Call):
            return cls(job.time_limit, job.soft_time_limit)
        task = app.tasks.get(job.task) if app is not None else None
        if task is None:
            return cls()
        return cls(task.time_limit, task.soft_time_limit,
                   any(issubclass(TimeLimitExceeded, kind) for kind in task.retry_on))


@attrs.define
class Supervision:
    """What a worker process owes its supervisor around each job: reports for
    the hard time limit and diagnostics, the soft time limit, and asking to
    be recycled (jobs done, memory)."""

    channel: WorkerChannel
    #: recycle after this many jobs (jitter included); 0: never
    max_tasks: int = 0
    #: recycle when resident memory after a job exceeds this (bytes); 0: never
    max_memory: int = 0
    done: int = 0
    asked: bool = False
    #: the peak memory last reported
    reported_peak: int = 0
    #: set by :meth:`WorkerContext.replace_after_job`: why to be replaced after this job
    replace_now: str | None = None
    #: per running job: whether the supervisor was told (it has a hard limit), and
    #: the enclosing soft-limit timer (seconds left, when suspended)
    _frames: list[tuple[bool, float, float]] = attrs.Factory(list)
    #: whether the soft-limit timer (ITIMER_REAL) runs now; while it does not, starting
    #: and finishing a job without a soft limit makes no timer system call
    _timer_runs: bool = False

    def started(self, job: Invocation | Call, limits: Limits) -> None:
        """Only pulled invocations with a hard time limit are reported: the supervisor
        needs to know nothing else (it handed pushed calls out itself), and a report
        per task would cost throughput."""
        report = bool(limits.hard) and isinstance(job, Invocation)
        if report:
            assert isinstance(job, Invocation) and limits.hard is not None
            self.channel.send(channel.Started(job.id, job.task, limits.hard,
                                              limits.retry_on_hard))
        left = 0.0
        if limits.soft or self._timer_runs:  # set this one's, suspending an enclosing one's
            left, _ = signal.setitimer(signal.ITIMER_REAL, limits.soft or 0)
            self._timer_runs = bool(limits.soft)
        self._frames.append((report, left, time.monotonic()))

    def finished(self, job: Invocation | Call) -> int:
        """Restore the enclosing soft limit, report what must be, ask to be recycled
        when due; returns the peak memory."""
        reported, left, suspended = self._frames.pop()
        peak = channel.peak_rss()
        if reported or (peak > self.reported_peak and isinstance(job, Invocation)):
            self.channel.send(channel.Finished(job.id, peak))
            self.reported_peak = peak
        if left:  # an enclosing job's soft limit keeps running, minus the time spent
            signal.setitimer(signal.ITIMER_REAL,
                             max(left - (time.monotonic() - suspended), 0.001))
            self._timer_runs = True
        elif self._timer_runs:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._timer_runs = False
        self.ended()
        return peak

    def ended(self) -> None:
        """A job ended: count it, and ask to be recycled (or replaced at once) when due."""
        self.done += 1
        if self.replace_now:  # before the job's report, so nothing more is handed to it
            logger.info("asking to be replaced at once: %s", self.replace_now)
            self.channel.send(channel.Recycle(self.replace_now, at_once=True))
            self.replace_now, self.asked = None, True
            return
        reason = None if self.asked else self._recycle_reason()
        if reason:
            self.asked = True
            logger.info("asking to be recycled: %s", reason)
            self.channel.send(channel.Recycle(reason))

    def _recycle_reason(self) -> str | None:
        if self.max_tasks and self.done >= self.max_tasks:
            return f"max_tasks_per_child reached ({self.done} jobs)"
        if self.max_memory:
            import psutil  # here: a worker with no memory limit never needs it

            rss = psutil.Process().memory_info().rss
            if rss > self.max_memory:
                return (f"resident memory {rss / 2**20:.0f} MiB exceeds max_memory_per_child "
                        f"({self.max_memory / 2**20:.0f} MiB)")
        return None


@attrs.frozen
class Ran:
    """How running a job went: what the task returned or raised, and for how long."""

    runnable: Runnable | None
    returned: Returned | None
    error: BaseException | None
    seconds: float


class JobSource(Protocol):
    """Where a worker's jobs come from, and where their outcomes go."""

    def next(self, timeout: float) -> Invocation | Call | None:
        """The next job, waiting up to ``timeout``; None when none came."""

    def report(self, job: Invocation | Call, ran: Ran, peak: int) -> str:
        """Record how ``job`` went; returns the outcome as
        :func:`~pprunner.hookspecs.pprunner_attempt_ended` names it."""

    def finished(self) -> bool:
        """True when the worker should exit (retire granted, burst drained)."""

    def hand_back(self) -> None:
        """Give back whatever this worker holds; it is stopping."""


@attrs.define
class ClaimedInvocations:
    """Pull mode: invocations claimed from the app's backend, outcomes stored there."""

    context: WorkerContext
    channel: WorkerChannel | None = None
    burst: bool = False
    _retired: bool = False
    #: claimed together with the last completion, to run next
    _next: Invocation | None = None
    #: set while stopping: the next completion claims nothing
    stopping: bool = False

    @property
    def backend(self) -> Backend:
        return self.context.backend

    @property
    def app(self) -> App:
        assert self.context.app is not None
        return self.context.app

    def next(self, timeout: float) -> Invocation | None:
        if self.channel is not None and isinstance(self.channel.receive(), channel.Retire):
            logger.info("retiring as the supervisor asked")
            self._retired = True
            return None
        invocation, self._next = self._next, None
        if invocation is None:
            invocation = self.backend.claim(self.context.runner_id, timeout)
        return invocation

    def finished(self) -> bool:
        return self._retired or (self.burst and not _unfinished(self.backend))

    def hand_back(self) -> None:
        self._next = None
        self.backend.reroute(self.context.runner_id, None)

    def report(self, job: Invocation | Call, ran: Ran, peak: int) -> str:
        assert isinstance(job, Invocation)
        outcome = self._outcome(job, ran)
        backend, runner_id, seconds = self.backend, self.context.runner_id, ran.seconds
        try:
            if isinstance(outcome, Retrying):
                backend.retry(job.id, runner_id, outcome.error, time.time() + outcome.delay)
                logger.warning("%s attempt %d/%d failed after %.3f s: %s: %s; retrying in "
                               "%.1f s", job.task, job.attempts, job.max_attempts, seconds,
                               outcome.error.type, outcome.error.message, outcome.delay)
                return "retried"
            if isinstance(outcome, ErrorInfo):
                backend.fail(job.id, runner_id, outcome)
                logger.warning("%s failed after %.3f s: %s: %s", job.task, seconds,
                               outcome.type, outcome.message)
                return "failed"
            if self.context.depth == 1 and not self.stopping:
                # idle after this one: complete and claim the next in one go
                self._next = backend.complete_and_claim(job.id, runner_id, outcome)
            else:
                backend.complete(job.id, runner_id, outcome)
            logger.debug("%s succeeded in %.3f s", job.task, seconds)
            return "succeeded"
        except NotOwner as exc:
            logger.warning("outcome refused, this runner no longer owns it: %s", exc)
            return "refused"

    def _outcome(self, invocation: Invocation, ran: Ran) -> bytes | ErrorInfo | Retrying:
        if ran.runnable is None:  # it could not be resolved: no retry can help
            assert ran.error is not None
            return ErrorInfo(type(ran.error).__name__, str(ran.error))
        if ran.error is not None:
            error = _task_error(ran.error)
            task = ran.runnable.task
            delay = None if task is None else retry_delay(task, invocation, ran.error)
            return error if delay is None else Retrying(error, delay)
        assert ran.returned is not None
        try:
            return self.app.codec.encode_result(invocation, ran.returned.value)
        except (SerializationError, PluginError) as exc:
            return ErrorInfo(type(exc).__name__, str(exc))


@attrs.define
class PushedCalls:
    """Push mode: calls the supervisor hands over the pipe, outcomes sent back on it."""

    channel: WorkerChannel
    _retired: bool = False

    def next(self, timeout: float) -> Call | None:
        message = self.channel.receive(timeout)
        if message is None:
            return None
        if isinstance(message, channel.Run):
            return message.call
        if isinstance(message, channel.Retire):
            self._retired = True
        return None

    def finished(self) -> bool:
        return self._retired

    def hand_back(self) -> None:
        """Nothing to give back: the supervisor knows what it handed out."""

    def report(self, job: Invocation | Call, ran: Ran, peak: int) -> str:
        if ran.error is None:
            assert ran.returned is not None
            try:
                self.channel.send(channel.Done(job.id, True, ran.returned.value, peak))
                return "succeeded"
            except Exception as exc:  # the value does not pickle: the call fails
                error = RemoteError(type(exc).__name__,
                                    f"the result of {job} cannot be sent back: {exc}")
        elif ran.runnable is None:  # it could not be resolved: named as pull mode names it
            error = RemoteError(type(ran.error).__name__, str(ran.error))
        else:
            error = remote_error(ran.error)
        self.channel.send(channel.Done(job.id, False, error, peak))
        return "failed"


def remote_error(exc: BaseException) -> RemoteError:
    """The error as its sender will get it: the exception itself when it pickles
    (a host re-raises the task's own type), its type, message and traceback always."""
    info = _task_error(exc)
    try:
        pickle.loads(pickle.dumps(exc))
        carried: BaseException | None = exc.with_traceback(None)
    except Exception:
        carried = None
    return RemoteError(info.type, info.message, info.traceback, carried)


@attrs.define
class Worker:
    """Runs jobs from its source until stopped, one at a time."""

    context: WorkerContext
    jobs: JobSource
    #: called between jobs (inline mode records heartbeats with it)
    between: Callable[[], None] = lambda: None
    #: set in worker processes; None inline
    supervision: Supervision | None = None
    _in_task: bool = False
    _stopping: bool = False

    def __attrs_post_init__(self) -> None:
        self.context.run_nested = self.execute
        self.context._replace = self._replace_after_job
        self.context._waiting = self._report_waiting

    def _report_waiting(self, waiting: bool) -> None:
        if self.supervision is not None:
            self.supervision.channel.send(channel.Waiting(waiting))

    def _replace_after_job(self, reason: str) -> None:
        if self.supervision is not None:
            self.supervision.replace_now = reason

    def request_stop(self) -> None:
        self._stopping = True

    def terminate(self, signum: int = signal.SIGTERM, frame: types.FrameType | None = None) -> None:
        """SIGTERM handler: interrupt the running task, or just stop when idle."""
        self._stopping = True
        if self._in_task:
            raise WorkerTerminated(f"worker {self.context.runner_id} received a stop request")

    def soft_limit_reached(self, signum: int, frame: types.FrameType | None) -> None:
        """SIGALRM handler: the running job's soft time limit ran out."""
        job = self.context.job
        if self._in_task and job is not None:
            if isinstance(job, Invocation):
                raise SoftTimeLimitExceeded(f"soft time limit exceeded by {job.task}")
            raise (job.soft_limit_error or SoftTimeLimitExceeded)(
                f"soft time limit exceeded by {job.name}")

    def run(self) -> None:
        timeout = self.context.config.claim_timeout
        try:
            while not (self._stopping or self.context.stop_event.is_set()):
                self.between()
                job = self.jobs.next(timeout)
                if job is None:
                    if self.jobs.finished():
                        return
                    continue
                if self._stopping:
                    return  # taken as the stop came: handed back below
                self.execute(job)
        finally:
            if isinstance(self.jobs, ClaimedInvocations):
                self.jobs.stopping = True
            self.jobs.hand_back()

    def execute(self, job: Invocation | Call) -> None:
        """Run one job and report its outcome; never raises for task errors."""
        global _current
        context = self.context
        context.stack.append(job)
        _current = context
        outer_in_task = self._in_task
        name = job.task if isinstance(job, Invocation) else job.name
        set_title(f"pprunner worker {context.slot}: {name}")
        _orphaning.idle.clear()
        peak = 0
        hook = context.plugins.hook
        try:
            with log.invocation_scope(job.id):
                announce(hook.pprunner_attempt_started, job=job, context=context)
                if self.supervision is not None:
                    self.supervision.started(job, Limits.of(job, context.app))
                self._in_task = True
                try:
                    ran = self._run(job)
                finally:
                    self._in_task = outer_in_task
                    if self.supervision is not None:
                        peak = self.supervision.finished(job)
                outcome = self.jobs.report(job, ran, peak)
                announce(hook.pprunner_attempt_ended, job=job, context=context,
                         outcome=outcome, seconds=ran.seconds)
        except WorkerTerminated:
            if context.depth > 1:
                raise  # unwind to the outermost job, which hands everything back
            logger.info("stopped while running %s; handing it back", job.id)
            self._stopping = True
        finally:
            context.stack.pop()
            outer = context.job
            _current = context if outer else None
            if outer is None:
                _orphaning.idle.set()
            title = "idle" if outer is None else (
                outer.task if isinstance(outer, Invocation) else outer.name)
            set_title(f"pprunner worker {context.slot}: {title}")

    def _run(self, job: Invocation | Call) -> Ran:
        started = time.perf_counter()
        hook = self.context.plugins.hook
        try:
            runnable: Runnable | None = hook.pprunner_resolve_job(job=job, context=self.context)
        except WorkerTerminated:
            raise
        except Exception as exc:  # unknown task, undecodable payload: it cannot run at all
            return Ran(None, None, exc, time.perf_counter() - started)
        if runnable is None:
            return Ran(None, None, PluginError(f"no pprunner_resolve_job implementation "
                                               f"resolved {job!r}"), 0.0)
        try:
            returned: Returned = hook.pprunner_execute(
                task=runnable.task, invocation=job if isinstance(job, Invocation) else None,
                args=runnable.args, kwargs=runnable.kwargs, function=runnable.function,
                job=job, context=self.context)
        except WorkerTerminated:
            raise
        except BaseException as exc:  # the task's own error, whatever it is, fails the job
            return Ran(runnable, None, exc, time.perf_counter() - started)
        return Ran(runnable, returned, None, time.perf_counter() - started)


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
    """Entry point of a worker process (pynenc's ``persistent_process_main``).

    Pull mode (``spec.app_path`` set) imports the app and claims from its
    backend; push mode runs the calls its supervisor hands it. Either way the
    spec's ``initializer`` and the ``pprunner_worker_init`` hooks run before
    the worker reports ready, and the ``pprunner_worker_exit`` hooks when it ends.
    """
    reports = WorkerChannel(spec.channel)
    reports.send(channel.Hello())
    settings = spec.settings
    if settings["start_method"] == "fork":
        close_inherited_fd(spec.lifeline_writer_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    # a crash's traceback goes to standard error's descriptor: sys.stderr may be a host's
    # stand-in without one (a Celery worker's log proxy, which a forked child inherits)
    faulthandler.enable(file=2)
    log.setup(settings["log_level"], spec.runner_id)
    set_title(f"pprunner worker {spec.slot}: starting")
    watch_lifeline(spec.lifeline)
    if spec.plugin_entries:
        plugins.use_entries(spec.plugin_entries)
    try:
        context = _boot(spec, reports)
        consumer = None if spec.consumer is None else _make_consumer(spec.consumer)
    except AppLoadError as exc:
        logger.error("%s", exc)
        reports.send(channel.BootFailed(str(exc)))
        sys.exit(ExitCode.APP_LOAD_ERROR)
    except Exception as exc:
        logger.exception("worker %d failed to boot", spec.slot)
        reports.send(channel.BootFailed(f"{type(exc).__name__}: {exc}"))
        sys.exit(ExitCode.INTERNAL_ERROR)
    context.channel = reports
    max_tasks = settings["max_tasks_per_child"]
    if max_tasks:
        max_tasks += random.randint(0, settings["max_tasks_jitter"])
    supervision = Supervision(reports, max_tasks=max_tasks,
                              max_memory=settings["max_memory_per_child"] * 2**20)
    jobs: JobSource = (PushedCalls(reports) if context.app is None
                       else ClaimedInvocations(context, reports))
    worker = Worker(context, jobs, supervision=supervision)
    signal.signal(signal.SIGTERM, worker.terminate)
    signal.signal(signal.SIGALRM, worker.soft_limit_reached)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    reports.send(channel.Ready(channel.peak_rss()))
    logger.info("worker %d ready (%s)", spec.slot, f"app {spec.app_path}" if spec.app_path
                else "host consumer" if consumer is not None else "push mode")
    try:
        if spec.slot == SPARE_SLOT and not _take_a_slot(context, reports):
            return
        if consumer is not None:
            global _current
            _current = context  # the host's jobs ask for it (to wait, to note)
            consuming.serve(consumer, consuming.HostJobs(context.slot, supervision,
                                                         context.lend_slot, spec.held), reports)
            return
        set_title(f"pprunner worker {context.slot}: idle")
        worker.run()
    finally:
        context.plugins.hook.pprunner_worker_exit(context=context)
        if context.app is not None:
            context.app.close()
        logger.info("worker %d stopped", context.slot)


def _take_a_slot(context: WorkerContext, reports: WorkerChannel) -> bool:
    """A spare: booted, it waits, holding nothing, until the pool gives it a slot
    (True) or retires it (False). A SIGTERM meanwhile ends it at once."""
    set_title("pprunner worker spare: ready to take a slot")
    serving = signal.signal(signal.SIGTERM, _exit_holding_nothing)
    while True:
        message = reports.receive(timeout=None)
        if isinstance(message, channel.Serve):
            context.slot = message.slot
            signal.signal(signal.SIGTERM, serving)
            logger.info("the spare takes slot %d", message.slot)
            return True
        if isinstance(message, channel.Retire):
            return False


def _exit_holding_nothing(signum: int, frame: types.FrameType | None) -> None:
    raise SystemExit(0)


def _boot(spec: WorkerSpec, reports: WorkerChannel) -> WorkerContext:
    """Load the app (pull mode), run the initializer and the init hooks.

    An initializer that raises is an :class:`AppLoadError`: every worker would
    fail the same way, so the supervisor stops instead of respawning.
    """
    settings = spec.settings
    if spec.app_path is None:
        config = config_module.resolve([("the supervisor", settings)])
        context = WorkerContext(app=None, runner_id=spec.runner_id, slot=spec.slot,
                                runner_cache=None, stop_event=spec.stop_event,
                                config=config, plugins=get_plugin_manager().configure(config),
                                supervisor_id=spec.supervisor_id)
    else:
        app = load_app(spec.app_path)
        app.configure(source="the supervisor", **settings)
        # open it now: a backend that cannot be reached is a boot failure; once running, a
        # worker waits out any outage, since what it holds must be stored when it is over
        app.backend.keep_waiting = lambda outage_s: True
        context = WorkerContext(app=app, runner_id=spec.runner_id, slot=spec.slot,
                                runner_cache=RunnerCache(reports.ask_cache),
                                stop_event=spec.stop_event, supervisor_id=spec.supervisor_id)
    for name in spec.plugin_modules:
        if context.plugins.manager.get_plugin(name) is None:
            context.plugins.manager.register(importlib.import_module(name), name=name)
    if spec.prepare is not None:
        try:
            prepare_once(spec.prepare)
        except Exception as exc:
            logger.exception("preparing with %s raised", spec.prepare.name)
            raise AppLoadError(f"the worker preparation {spec.prepare.name} raised "
                               f"{type(exc).__name__}: {exc}") from exc
    if spec.initializer is not None:
        global _current
        _current = context  # the initializer may ask which worker it prepares (its slot)
        try:
            spec.initializer.function(*spec.initializer.args, **spec.initializer.kwargs)
        except Exception as exc:
            logger.exception("the initializer %s raised", spec.initializer.name)
            raise AppLoadError(f"the worker initializer {spec.initializer.name} raised "
                               f"{type(exc).__name__}: {exc}") from exc
        finally:
            _current = None
    context.plugins.hook.pprunner_worker_init(context=context)
    return context


#: the ``prepare`` call this process (or the template it was forked from) has made
_prepared: Call | None = None


def prepare_once(prepare: Call) -> None:
    """Call a spec's ``prepare`` unless this process already did, or inherited it done."""
    global _prepared
    if prepare != _prepared:
        prepare.function(*prepare.args, **prepare.kwargs)
        _prepared = prepare


def _make_consumer(maker: Call) -> consuming.Consumer:
    """The host's consumer (host-consumed mode); a maker that raises would raise in
    every worker, so it is an :class:`AppLoadError`, as an initializer's is."""
    try:
        consumer: consuming.Consumer = maker.function(*maker.args, **maker.kwargs)
    except Exception as exc:
        logger.exception("making the host's consumer with %s raised", maker.name)
        raise AppLoadError(f"the host's consumer {maker.name} raised "
                           f"{type(exc).__name__}: {exc}") from exc
    return consumer


def watch_lifeline(lifeline: Any) -> None:
    """Stop this process when the supervisor is gone (its end of the pipe closes).

    A blocking read in a daemon thread: no polling, and it works whatever
    killed the supervisor, SIGKILL included. The worker gets SIGTERM, hands
    back what it runs, and is forced out after :data:`ORPHAN_GRACE` seconds
    (after its job's end, with :func:`finish_jobs_when_orphaned`).
    """
    def wait_for_eof() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv_bytes()
        _finish_orphaned_job()
        logger.warning("the supervisor is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE)
        os._exit(ExitCode.INTERRUPTED)

    threading.Thread(target=wait_for_eof, name="pprunner-lifeline", daemon=True).start()
