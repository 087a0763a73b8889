"""The third job source: a host's own consumer runs inside each worker.

Some hosts' worker processes consume from the host's broker themselves
(Dramatiq, Huey, pynenc's runner loop). For them neither pull mode
(a pprunner backend) nor push mode (the parent hands over one call at a
time) fits: the host plugin gives pprunner a :class:`Consumer`, made in each
worker by a :class:`~pprunner.jobs.Call` (as an initializer is), which runs
the host's own loop. Around each job it runs, the loop says which one, in
the host's ids (:meth:`HostJobs.running`), so the supervisor knows what every
worker holds: it enforces hard time limits, recycles workers after their
jobs, and when a worker dies hands each job it held to the plugin's
``settle`` (:class:`~pprunner.hostfeed.HostFeed`, the supervisor's side),
which ends it in the host's terms at once (requeue, fail, retry). Claims
happen in every worker in parallel, as with the host's own processes; idle
workers wait on the host's broker.

Some brokers deliver a dead worker's job again by themselves (RabbitMQ
requeues a dropped connection's unacked messages), uncounted and beyond the
plugin's reach. Such a plugin settles the job all the same and has ``settle``
return :attr:`Redelivery.DROP`; its consumer, given a job the broker marks as
redelivered, asks :meth:`HostJobs.redelivery_settled` and drops the job when
the supervisor says it was settled, so the death counts once, in the host's
terms, and the job does not also run again uncounted.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import signal
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from . import channel, log
from .errors import SoftTimeLimitExceeded
from .held import HeldJob
from .proctitle import set_title

if TYPE_CHECKING:
    from .invocation import ErrorInfo

logger = logging.getLogger("pprunner.worker")

#: seconds a redelivered job waits for the supervisor's verdict before it runs anyway
REDELIVERY_VERDICT_TIMEOUT = 10.0


@attrs.frozen
class HostJob:
    """A job a host's consumer ran, as its worker reported it: the host's own id and
    name, and what the host needs to settle it (its message, say)."""

    id: str
    name: str
    data: Any = None


class Redelivery(enum.Enum):
    """What ``settle`` returns for a job the host's broker delivers again by itself."""

    #: settled here: the broker's own redelivery of the job must not run (a worker's
    #: :meth:`HostJobs.redelivery_settled` answers True for it, once)
    DROP = "drop"


#: ``settle(job, error, retry)``, in the supervisor: end ``job``, whose worker died, in
#: the host's terms. ``error`` is None when the supervisor stopped the worker (hand the
#: job back without charging an attempt); ``retry`` is False when a retry cannot help
#: (the job was killed at its hard time limit, or on a host's request). Returns None,
#: or :attr:`Redelivery.DROP` when the broker will deliver the dead worker's job again
#: by itself and that delivery must be dropped.
Settle = Callable[[HostJob, "ErrorInfo | None", bool], "Redelivery | None"]


class Consumer(Protocol):
    """A host's consumer in one worker process (the module docstring)."""

    def consume(self, jobs: HostJobs) -> None:
        """Run the host's loop: claim from its broker, run each job inside
        ``jobs.running(...)``; return once :meth:`stop` was called and what runs
        has ended."""

    def stop(self) -> None:
        """Claim nothing more and let :meth:`consume` return after the jobs that run
        now. Called from another thread."""


class HostJobs:
    """A host consumer's line to its supervisor, in one worker process."""

    def __init__(self, slot: int, supervision: Any,
                 lend_slot: Callable[[], contextlib.AbstractContextManager[None]]
                 = contextlib.nullcontext, held: HeldJob | None = None) -> None:
        self.slot = slot
        self._supervision = supervision
        #: where a job without a hard limit is recorded instead of reported (one at a
        #: time; None: every job is reported), and the id of the one recorded now
        self._held = held
        self._held_id: str | None = None
        #: around a wait inside a job for work other workers do (a host's documented
        #: blocking read of another job's result): this worker's slot is lent meanwhile,
        #: so a pool whose every worker waits cannot deadlock
        #: (:meth:`~pprunner.worker.WorkerContext.lend_slot`)
        self.lend_slot = lend_slot
        #: the counts behind recycling, kept by one thread at a time
        self._counting = threading.Lock()
        #: set once the supervisor retired this worker, or it got a SIGTERM
        self.stopping = threading.Event()
        #: the job whose soft time limit runs now (one at a time: a SIGALRM timer)
        self._soft_limited: str | None = None
        #: redelivered jobs waiting for the supervisor's verdict, and the verdicts
        self._verdicts: dict[str, tuple[threading.Event, list[bool]]] = {}
        self._asking = threading.Lock()

    def running(self, job_id: str, name: str, *, time_limit: float | None = None,
                soft_time_limit: float | None = None,
                data: Any = None) -> contextlib.AbstractContextManager[None]:
        """Around one job the consumer runs (from any of its threads): the supervisor
        learns the worker holds it, kills the worker past ``time_limit`` seconds and,
        if the worker dies meanwhile, settles the job with ``data`` (which must
        pickle). After it, the worker asks to be recycled when a limit is reached.

        ``soft_time_limit``: :class:`~pprunner.errors.SoftTimeLimitExceeded` is
        raised in the job after that many seconds; only for a job run in the thread
        that called ``consume()`` (signals reach no other), one at a time."""
        return _Running(self, job_id, name, time_limit, soft_time_limit, data)

    def started(self, job_id: str, name: str, *, time_limit: float | None = None,
                soft_time_limit: float | None = None, data: Any = None) -> None:
        """:meth:`running`'s start, for a host whose hooks split it in two (a
        middleware's before and after); each ``started`` needs its ``finished``."""
        if not self._hold(job_id, name, time_limit, data):
            self._supervision.channel.send(channel.Started(job_id, name, time_limit, False,
                                                           data))
        if soft_time_limit:
            self._soft_limited = name
            signal.setitimer(signal.ITIMER_REAL, soft_time_limit)
        set_title(f"pprunner worker {self.slot}: {name}")

    def finished(self, job_id: str) -> None:
        """:meth:`running`'s end: the job is no longer the worker's."""
        if self._soft_limited is not None:  # cleared first: a late SIGALRM does nothing
            self._soft_limited = None
            signal.setitimer(signal.ITIMER_REAL, 0)
        peak = channel.peak_rss()
        with self._counting:
            recorded = job_id == self._held_id
            if recorded:
                self._held_id = None
                self._held.release()  # type: ignore[union-attr]
            # a recorded job's end is reported only with a new peak (memory limits)
            if not recorded or peak > self._supervision.reported_peak:
                self._supervision.channel.send(channel.Finished(job_id, peak))
                self._supervision.reported_peak = max(peak, self._supervision.reported_peak)
            self._supervision.ended()
        set_title(f"pprunner worker {self.slot}: idle")

    def redelivery_settled(self, job_id: str, timeout: float = REDELIVERY_VERDICT_TIMEOUT
                           ) -> bool:
        """For a job the host's broker delivered again by itself: True when a worker
        that died holding it was settled already (``settle`` returned
        :attr:`Redelivery.DROP`), so this delivery must be dropped unrun (acked, in the
        host's terms). False otherwise (run it: a job the dead worker had only
        prefetched, a stop, a broker's redelivery for another reason), and when no
        answer came within ``timeout`` seconds."""
        with self._asking:
            pending = self._verdicts.setdefault(job_id, (threading.Event(), []))
        self._supervision.channel.send(channel.RedeliveryCheck(job_id))
        answered = pending[0].wait(timeout)
        with self._asking:
            self._verdicts.pop(job_id, None)
        return answered and pending[1][0]

    def on_redelivery_verdict(self, verdict: channel.RedeliveryVerdict) -> None:
        """The supervisor's answer to :meth:`redelivery_settled` (the listener thread)."""
        with self._asking:
            pending = self._verdicts.get(verdict.job_id)
        if pending is not None:
            pending[1].append(verdict.drop)
            pending[0].set()

    def _hold(self, job_id: str, name: str, time_limit: float | None, data: Any) -> bool:
        """Record the job in the held-job memory rather than report it, when it has no
        hard limit (which the supervisor keeps), nothing else is recorded now (another
        thread's job) and it fits."""
        if self._held is None or time_limit is not None:
            return False
        with self._counting:
            if self._held_id is not None or not self._held.hold(job_id, name, data):
                return False
            self._held_id = job_id
            return True

    def soft_limit_reached(self, signum: int, frame: types.FrameType | None) -> None:
        """SIGALRM handler: the running job's soft time limit ran out."""
        name, self._soft_limited = self._soft_limited, None
        if name is not None:
            raise SoftTimeLimitExceeded(f"soft time limit exceeded by {name}")


class _Running:
    """:meth:`HostJobs.running`'s context: a class rather than a generator, as it is
    entered for every job (a fast host's jobs take a few hundred microseconds)."""

    __slots__ = ("_data", "_job_id", "_jobs", "_name", "_scope", "_soft_time_limit",
                 "_time_limit")

    def __init__(self, jobs: HostJobs, job_id: str, name: str, time_limit: float | None,
                 soft_time_limit: float | None, data: Any) -> None:
        self._jobs, self._job_id, self._name = jobs, job_id, name
        self._time_limit, self._soft_time_limit, self._data = time_limit, soft_time_limit, data

    def __enter__(self) -> None:
        self._jobs.started(self._job_id, self._name, time_limit=self._time_limit,
                           soft_time_limit=self._soft_time_limit, data=self._data)
        self._scope = log.enter_invocation(self._job_id)

    def __exit__(self, *exc_info: object) -> None:
        try:
            log.leave_invocation(self._scope)
        finally:
            self._jobs.finished(self._job_id)


def serve(consumer: Consumer, jobs: HostJobs, reports: channel.WorkerChannel) -> None:
    """Run ``consumer`` until the supervisor retires this worker (it stops after what
    it runs) or a SIGTERM asks the same."""

    def stop() -> None:
        if not jobs.stopping.is_set():
            jobs.stopping.set()
            consumer.stop()

    def listen() -> None:
        while not isinstance(message := reports.receive(timeout=None), channel.Retire):
            if isinstance(message, channel.RedeliveryVerdict):
                jobs.on_redelivery_verdict(message)
        logger.info("retiring as the supervisor asked")
        stop()

    threading.Thread(target=listen, name="pprunner-retire", daemon=True).start()
    # the handler only starts a thread: consumer.stop() may take locks the consume loop,
    # interrupted in this thread, holds
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(
        target=stop, name="pprunner-sigterm", daemon=True).start())
    signal.signal(signal.SIGALRM, jobs.soft_limit_reached)
    set_title(f"pprunner worker {jobs.slot}: idle")
    consumer.consume(jobs)
