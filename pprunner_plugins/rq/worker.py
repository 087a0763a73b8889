"""``pprunner_plugins.rq.Worker``: an RQ worker whose work horse persists.

RQ's ``Worker.execute_job`` is kept as it is: ``prepare_execution``, then
``fork_work_horse``, then ``monitor_work_horse``. Only the horse changes:
``fork_work_horse`` hands the job to a pprunner-supervised horse (push mode,
one horse per worker) instead of forking, and ``wait_for_horse`` waits for
that horse to report the job's end (or its death) instead of for its exit
status. RQ's ``monitor_work_horse`` therefore still does everything it does
for a forked horse — heartbeats every ``job_monitoring_interval``, a stopped
job, a horse killed under a job (``handle_work_horse_killed`` then
``handle_job_failure``, so ``Retry`` decides) — from an exit status the
horse's death (or its report) stands for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
from collections.abc import Iterator
from typing import Any

from rq.connections import parse_connection
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.timeouts import JobTimeoutException
from rq.worker import Worker as RQWorker

from pprunner import config as config_module
from pprunner.dispatch import Dispatcher
from pprunner.jobs import Call, Cancelled, Event, Failed, Finished, Lost, Started, TimedOut
from pprunner.supervisor import Supervisor

from . import compat, horse
from .peers import Peers

logger = logging.getLogger("pprunner.rq")

#: what ``SpawnWorker`` hands its horses, read from the worker; and ``dead_after``, for
#: a horse that keeps its dead worker's sign of life while it finishes its job
HORSE_ATTRIBUTES = ("job_class", "queue_class", "death_penalty_class", "_exc_handlers",
                    "default_result_ttl", "job_monitoring_interval", "log_job_description",
                    "log_result_lifespan", "disable_default_exception_handler", "dead_after")


#: seconds between looks at a kill asked for while the horse boots
BOOT_POLL = 0.05


class HorseUnavailable(Exception):
    """No work horse could be started: the worker stops (its job is handed back)."""


def _setting(value: Any, variable: str, kind: type, default: Any) -> Any:
    """A keyword argument, else the environment variable, else the default."""
    if value is not None:
        return kind(value)
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not a valid {kind.__name__}") from None


class Worker(RQWorker):
    """An RQ ``Worker`` whose work horse is a persistent process kept across jobs.

    Use it through RQ's CLI: ``rq worker -w pprunner_plugins.rq.Worker`` or
    ``rq worker-pool -w pprunner_plugins.rq.Worker -n 4``. RQ's CLI passes no
    options to a worker class, so pprunner's own are keyword arguments here or
    environment variables, named after RQ's ``--max-jobs``:

    :param max_jobs_per_horse: replace a horse after this many jobs
        (``RQ_MAX_JOBS_PER_HORSE``; 0: never). RQ forks one horse per job.
    :param max_memory_per_horse: replace a horse whose resident memory after a
        job exceeds this many MiB (``RQ_MAX_MEMORY_PER_HORSE``; 0: never).
    :param dead_after: seconds without a sign of life after which other
        pprunner workers hand back this worker's started jobs
        (``RQ_DEAD_WORKER_AFTER``, default 3).
    :param metrics_port: serve Prometheus metrics of this worker's horse on this
        port (``RQ_METRICS_PORT``; ``FIRST-LAST`` under ``rq worker-pool``: each
        worker takes the first free one; needs ``pprunner[prometheus]``).

    A job's timeout is enforced twice: RQ's death penalty raises
    ``JobTimeoutException`` in the horse at ``job.timeout`` (RQ's own
    failure path and traceback), and pprunner kills the horse
    ``horse_kill_grace`` seconds later if it could not raise it (native code),
    where RQ's monitor would wait ``job.timeout + 60`` s; the job then fails
    through the same ``JobTimeoutException`` path, from the worker. Either
    way the horse is replaced before the next job.
    """

    #: seconds after a job's timeout before pprunner kills a horse that did not end it
    horse_kill_grace = 1.0

    def __init__(self, *args: Any, max_jobs_per_horse: int | None = None,
                 max_memory_per_horse: int | None = None, dead_after: float | None = None,
                 metrics_port: str | int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_jobs_per_horse = _setting(max_jobs_per_horse, "RQ_MAX_JOBS_PER_HORSE", int, 0)
        self.max_memory_per_horse = _setting(max_memory_per_horse, "RQ_MAX_MEMORY_PER_HORSE",
                                             int, 0)
        self.dead_after = _setting(dead_after, "RQ_DEAD_WORKER_AFTER", float, 3.0)
        self.metrics_port = _setting(metrics_port, "RQ_METRICS_PORT", str, None)
        self._supervisor: Supervisor | None = None
        self._dispatcher: Dispatcher | None = None
        self._peers: Peers | None = None
        #: the job in the horse: its call, what the dispatcher said of it, RQ's objects
        self._call: Call | None = None
        self._events: list[Event] = []
        self._running: tuple[Any, Any, Any] | None = None
        #: why the horse running the job is to be killed (RQ's kill_horse), until it is
        self._kill_reason: str | None = None
        #: the horse booted (the handshake is done)
        self._booted = False
        #: a cold shutdown is under way: later signals must not cut its hand-back short
        self._cold = False

    # -- life of the worker ---------------------------------------------------------

    def bootstrap(self, logging_level: str | None = "INFO",
                  date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
                  log_format: str = DEFAULT_LOGGING_FORMAT) -> None:
        """RQ's bootstrap, then the horse is started: the worker registers and listens
        for commands as soon as RQ's does, and the horse boots while the worker waits
        for a job. The first job waits for the boot (:meth:`_handshake`), as it would
        wait for RQ's fork."""
        super().bootstrap(logging_level, date_format, log_format)
        try:
            self._start_horse((logging_level, date_format, log_format))
            self._peers = Peers(self, self.dead_after)
            self._peers.join()
        except BaseException:
            self.teardown()
            raise

    def teardown(self) -> None:
        if not self.is_horse:
            self._stop_horse()
            if self._peers is not None:
                self._peers.leave()
        super().teardown()

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """RQ's cold shutdown (kill the horse, exit); once it began, further signals
        are ignored so that the job is handed back (:meth:`teardown`) in full."""
        if self._cold:
            return
        try:
            super().request_force_stop(signum, frame)
        except SystemExit:
            self._cold = True
            raise

    def unsubscribe(self) -> None:
        """RQ's, without waiting out redis-py's pubsub thread, which waits for a
        message 60 s at a time. RQ unsubscribes, then stops the thread with a join
        that redis-py 8.2 does not bound: a thread that read the reply and went back
        to its wait before the stop held the worker's exit for up to a minute. Here
        the thread is told to stop first, so the reply ends it, and the join is
        bounded (it is a daemon thread: one still waiting does not hold the exit)."""
        if self.pubsub_thread is None or self.pubsub is None:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name,
                      self.pubsub_channel_name)
        compat.stop_without_join(self.pubsub_thread)
        self.pubsub.unsubscribe()
        self.pubsub_thread.join(timeout=1)
        self.pubsub.close()

    def _install_signal_handlers(self) -> None:
        """RQ's (SIGINT, SIGTERM), and SIGHUP: a rolling reload, as ``pprunner run``'s.
        RQ's forked horse imports edited job code on the next job; a persistent one
        keeps what it imported, so a new horse boots (importing the code afresh)
        while the old one finishes its job, and takes the jobs after it."""
        super()._install_signal_handlers()
        signal.signal(signal.SIGHUP, self.request_reload)

    def request_reload(self, signum: int, frame: Any) -> None:
        if self._supervisor is not None:
            self._supervisor.reload()

    def _start_horse(self, logging: tuple[str | None, str, str]) -> None:
        horse.use_rq_logging(*logging)
        settings = horse.HorseSettings(
            worker_class=type(self), name=self.name, queues=tuple(self.queue_names()),
            connection=parse_connection(self.connection), serializer=self._serializer_arg,
            attributes={name: getattr(self, name) for name in HORSE_ATTRIBUTES},
            logging=logging)
        try:
            pickle.dumps(settings)
        except Exception as exc:
            raise ValueError(f"worker {self.name}: its settings cannot be handed to a work "
                             f"horse (everything must be importable by name): {exc}") from exc
        level = logging[0] if isinstance(logging[0], str) else "INFO"
        # a fresh interpreter, not a fork of the template: with the template three of
        # RQ's own tests fail (kill-horse and shutdown commands, a retry's scheduling;
        # RQ 3.0): a kill-horse sent 0.25 s after the start finds no job running. The
        # likely cause, not proven: the template boots (imports) in this thread, which
        # delays work() by that much, where a spawned horse boots beside it
        config = config_module.resolve([("pprunner_plugins.rq.Worker", {
            "processes": 1, "log_level": level.upper(), "start_method": "spawn",
            "max_tasks_per_child": self.max_jobs_per_horse,
            "max_memory_per_child": self.max_memory_per_horse,
            "metrics_port": self.metrics_port})])
        # the horse runs horse.run_job and boots with horse.boot: nothing of __main__
        self._dispatcher = Dispatcher(deliver="loop", calls_from_main=False)
        self._supervisor = Supervisor(dispatcher=self._dispatcher, config=config,
                                      initializer=Call(horse.boot, (settings,),
                                                       name="pprunner_plugins.rq.horse.boot"))
        self._supervisor.start()
        # RQ acts on a horse while it exists (kill-horse): this one does, booting
        self._horse_pid = self._horse_pids()[0]

    def _handshake(self) -> bool:
        """Wait for the horse to boot, once: the boot handshake. A horse that cannot
        boot is retried with back-off until pprunner gives up (``crash_loop_period``),
        then the worker fails with the reason (its job is handed back). RQ's signal
        handlers stay in place meanwhile: a stop is RQ's, as during a fork. False:
        the job was killed meanwhile (:meth:`kill_horse`), and is not to run."""
        assert self._supervisor is not None
        while not self._booted and self._kill_reason is None:
            if self._supervisor.wait_until_ready(timeout=BOOT_POLL):
                self._booted = True
                self.log.info("Worker %s: work horse pid %s ready", self.name,
                              ", ".join(map(str, self._horse_pids())))
            elif not self._supervisor.running:
                raise HorseUnavailable(f"worker {self.name}: no work horse could boot: "
                                       f"{self._supervisor.failure or 'the supervisor stopped'}")
        return self._kill_reason is None

    def _horse_pids(self) -> list[int]:
        assert self._supervisor is not None
        return [r.pid for r in self._supervisor.live_runners() if r.kind == "worker"]

    def _stop_horse(self) -> None:
        """Stop the horse: at once if a job is still out (a cold shutdown: the job is
        handed back by :meth:`Peers.leave`), else after it exits by itself."""
        if self._supervisor is not None:
            self._supervisor.stop(immediate=self._call is not None)
            self._supervisor = None
            self._booted = False
        if self._dispatcher is not None:
            self._dispatcher.shutdown()
            self._dispatcher = None

    # -- RQ's horse interface -------------------------------------------------------------

    def fork_work_horse(self, job: Any, queue: Any) -> None:
        """Hand the job to the horse (RQ forks a new one here). A worker used without
        its ``work()`` loop (RQ's tests do) starts its horse here, and a job without
        an execution (RQ's fork needs none) gets one."""
        if self._supervisor is None:
            self._start_horse((None, DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT))
        execution = self.execution or self.prepare_execution(job)
        self._running = (job, queue, execution)
        if not self._handshake():
            return  # killed before it ran: see wait_for_horse
        assert self._dispatcher is not None
        timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
        self._call, self._events = Call(
            horse.run_job, (job.id, queue.name, execution.id, execution.created_at.timestamp()),
            time_limit=None if timeout == -1 else timeout + self.horse_kill_grace,
            id=job.id, name=f"rq job {job.id}", task_name=job.func_name), []
        self._dispatcher.submit(self._call, self._events.append)

    def wait_for_horse(self) -> tuple[int | None, int | None, Any]:
        """Wait until the horse ends the job: ``(pid, exit status, None)`` as
        ``os.wait4`` would give for a forked horse (no rusage). A horse that
        reported the job's end stands for status 0; a dead one for its own, and a
        job killed before the horse (still booting) was handed it for SIGKILL."""
        if self._running is None or self._dispatcher is None:
            return None, None, None
        if self._call is None:
            self._running = self._kill_reason = None
            return self.horse_pid, signal.SIGKILL, None
        while True:
            ending = self._take_ending()
            if ending is not None:
                break
            select.select([self._dispatcher.fileno()], [], [])
            with _signals_held():
                self._dispatcher.drain()
        self._call = None
        try:
            return self._status(ending)
        finally:
            self._running = self._kill_reason = None

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """SIGKILL the horse running the job, and its process group (what the job
        started), as RQ does (stop-job, kill-horse, cold shutdown); the supervisor
        replaces it. A job handed over but not started yet (the horse still boots)
        is killed as it starts. Another signal is sent as it is (``HerokuWorker``'s
        SIGRTMIN)."""
        if self._running is None or self._dispatcher is None:
            return
        if sig != signal.SIGKILL:
            if self._call is not None and self.horse_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.horse_pid, sig)
            return
        job = self._running[0]
        self._kill_reason = (f"RQ worker {self.name} killed the horse running rq job {job.id} "
                             f"({signal.Signals(sig).name})")
        self._kill_started()

    def _kill_started(self) -> None:
        """Carry out a kill asked for, once the horse has started the job."""
        assert self._dispatcher is not None
        if self._call is None or self._kill_reason is None:
            return
        if not self._dispatcher.kill(self._call.id, self._kill_reason):
            return  # not started yet
        self._kill_reason = None  # the horse leads its own group: the job's children die too

    # -- internals ------------------------------------------------------------------

    def _take_ending(self) -> Event | None:
        while self._events:
            event = self._events.pop(0)
            if isinstance(event, Started):
                self._horse_pid = event.pid
                self.procline(f"Horse {event.pid} runs {event.call.name}")
                self._kill_started()
                continue
            return event
        return None

    def _status(self, ending: Event) -> tuple[int | None, int | None, Any]:
        pid = getattr(ending, "pid", None)
        if isinstance(ending, Finished):
            return pid, os.EX_OK, None
        if isinstance(ending, Lost):
            code = ending.exitcode or 0
            return pid, -code if code < 0 else code << 8, None
        if isinstance(ending, Failed):  # RQ's horse exits 1 when perform_job raises
            self.log.error("Worker %s: horse %s: %s raised outside the job: %s: %s\n%s",
                           self.name, pid, ending.call.name, ending.error.type,
                           ending.error.message, ending.error.traceback)
            return pid, 1 << 8, None
        if isinstance(ending, TimedOut):
            self._timed_out(ending)
            return pid, os.EX_OK, None
        assert isinstance(ending, Cancelled)
        failure = self._supervisor.failure if self._supervisor is not None else None
        raise HorseUnavailable(f"worker {self.name}: no work horse could run "
                               f"{ending.call.name}: {failure or ending.reason}")

    def _timed_out(self, ending: TimedOut) -> None:
        """The horse did not end the job at its timeout and was killed: the job fails
        as RQ's ``JobTimeoutException`` path has it, from here."""
        assert self._running is not None
        job, queue, execution = self._running
        seconds = ending.limit - self.horse_kill_grace
        self.log.warning("Worker %s: horse %s did not end job %s at its timeout (%g s); "
                         "killed and replaced", self.name, ending.pid, job.id, seconds)
        error = JobTimeoutException(f"Task exceeded maximum timeout value ({seconds:g} seconds)")
        compat.finalize_failure(self, job, queue, execution, (JobTimeoutException, error, None))


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold RQ's signals (its monitor's SIGALRM, a shutdown's SIGINT/SIGTERM) while
    events are taken from the dispatcher, so none is lost halfway; they run after."""
    held = {signal.SIGALRM, signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
