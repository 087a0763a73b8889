"""Push mode's side of the supervisor: calls a host hands in, given to idle workers.

A host (a framework's consumer, :class:`pprunner.Executor`) calls
:meth:`Dispatcher.submit` from any thread. The call waits here, in the
supervisor's process, until a worker is idle — a worker never holds more
than one — and goes to it over that worker's pipe. What happens to it comes
back as events (:mod:`pprunner.jobs`): :class:`~pprunner.jobs.Started` and
then one ending.

Events are delivered where the host wants them: on an event loop (register
:meth:`Dispatcher.fileno`, which becomes readable when events are due, and
call :meth:`Dispatcher.drain`), on one dispatcher thread of pprunner's
(``deliver="thread"``), or at once on the supervisor's own loop thread
(``deliver="supervisor"``: no thread hand-off, for callbacks that only set a
future and return, as ``concurrent.futures`` executors run theirs; a slow one
would hold up deaths and deadlines).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs

from . import channel
from .child import Child, Kill
from .errors import PprunnerError
from .invocation import ErrorInfo, RunnerInfo
from .jobs import (
    Call,
    Cancelled,
    Ending,
    Event,
    Failed,
    Finished,
    Lost,
    Noted,
    RemoteError,
    Started,
    TimedOut,
    Waiting,
)
from .pool import Pool
from .spawn import describe_exit

logger = logging.getLogger("pprunner.dispatch")

Notify = Callable[[Event], None]

#: why a call meant for a worker that had already exited never starts
_ORPHANED = "its worker is not running (it exited before the call came)"


@attrs.define(eq=False)
class Job:
    """A submitted call and its sender, while the dispatcher has it."""

    call: Call
    notify: Notify
    attempts: int = 0
    #: waiting in the queue (False once handed out or withdrawn: a withdrawn job stays
    #: in the deque until it reaches the front, so a cancel costs no scan)
    queued: bool = False


class Dispatcher:
    """Holds submitted calls and turns what workers report into events (module docstring).

    :param deliver: ``"thread"`` starts a dispatcher thread that delivers every
        event; ``"loop"`` leaves it to the host, which waits on :meth:`fileno`
        and calls :meth:`drain`; ``"supervisor"`` calls each callback at once in
        the supervisor's loop thread (quick callbacks only).
    :param report_waits: also deliver :class:`~pprunner.jobs.Waiting` events, when a
        call's worker starts and stops lending its slot (a host that keeps its own
        count of free slots, as Celery's consumer does, lends it too).
    :param calls_from_main: calls may name functions of the supervisor's
        ``__main__`` (a script's own functions, as with the standard library's
        pools), so spawned workers are started by multiprocessing, which prepares
        ``__main__`` in them. A host whose calls and initializer are functions of
        importable modules (the Celery, RQ and pynenc plugins) passes False: on
        Linux its workers then start as :mod:`pprunner.launch` starts pull-mode
        ones, without multiprocessing's resource tracker process.
    """

    def __init__(self, deliver: Literal["thread", "loop", "supervisor"] = "thread", *,
                 report_waits: bool = False, calls_from_main: bool = True) -> None:
        if deliver not in ("thread", "loop", "supervisor"):
            raise ValueError(f"deliver must be 'thread', 'loop' or 'supervisor', "
                             f"not {deliver!r}")
        self.calls_from_main = calls_from_main
        self._deliver_at_once = deliver == "supervisor"
        self._report_waits = report_waits
        self._lock = threading.Lock()
        self._queued: deque[Job] = deque()
        #: how many queued calls are meant for one worker (``Call.runner_id``), and the
        #: workers that have exited (a call meant for one of them can never start)
        self._meant_for_one = 0
        self._gone: set[str] = set()
        #: withdrawn jobs still in the deque (skipped when they reach its front)
        self._withdrawn = 0
        self._by_id: dict[str, Job] = {}
        self._events: deque[tuple[Notify, Event]] = deque()
        self._ready_read, self._ready_write = os.pipe()
        os.set_blocking(self._ready_read, False)
        os.set_blocking(self._ready_write, False)
        #: the ready pipe has been written since the last drain emptied it
        self._due = False
        #: the dispatcher thread was told to stop (a b"s" on the ready pipe)
        self._stop_seen = False
        self._closed = False
        #: calls a host asked to kill, by id, with why (carried out by the supervisor's loop)
        self._kills: dict[str, str] = {}
        #: wakes the supervisor's loop; set when a supervisor takes this feed
        self.wake: Callable[[], None] = lambda: None
        #: the supervisor's plugins (job started/finished hooks), set with ``wake``, and
        #: whether any implements those hooks
        self.plugins: Any = None
        #: the supervisor's pool, set with ``wake``: told when a worker's call ends
        self.pool: Pool | None = None
        self._observed = False
        self._thread: threading.Thread | None = None
        if deliver == "thread":
            self._thread = threading.Thread(target=self._deliver_forever,
                                            name="pprunner-dispatcher", daemon=True)
            self._thread.start()

    # -- the host's side (any thread) ----------------------------------------------

    def submit(self, call: Call, notify: Notify) -> None:
        """Queue ``call``; ``notify(event)`` hears what becomes of it.

        Through the ``pprunner_enqueue`` hook once a supervisor took this feed: the
        call queued, and named in the events, is the one the hook sent, with the
        headers its plugins added (tracing's context)."""
        if self.plugins is None:
            self._queue(call, notify)
        else:
            self.plugins.send_new(call, lambda sent: self._queue(sent, notify))

    def _queue(self, call: Call, notify: Notify) -> None:
        with self._lock:
            if self._closed:
                raise PprunnerError("cannot submit: the supervisor has stopped")
            if call.id in self._by_id:
                raise ValueError(f"a call with id {call.id} is already submitted")
            if call.runner_id in self._gone:  # meant for a worker that has exited
                orphan = Job(call, notify)
            else:
                orphan = None
                job = self._by_id[call.id] = Job(call, notify)
                # behind others that all wait for any worker: then no worker is idle
                behind_others = self.queued > 0 and not self._meant_for_one
                self._enqueue(job)
        if orphan is not None:
            self._emit(orphan, Cancelled(call, _ORPHANED))
            return
        # The loop leaves calls queued only while no worker is idle, and looks at the
        # queue again whenever one becomes idle: a call behind others needs no wake-up
        # (saves a pipe write in the submitting thread per call under load).
        if not behind_others:
            self.wake()

    def cancel(self, call_id: str) -> bool:
        """Withdraw a call no worker has started; False if one has (or it is gone).

        The caller withdrew it, so no event follows: it hears nothing more of it.
        """
        with self._lock:
            job = self._by_id.get(call_id)
            if job is None or not job.queued:
                return False
            self._dequeue(job)
            del self._by_id[call_id]
        return True

    def kill(self, call_id: str, reason: str) -> bool:
        """SIGKILL the worker running ``call_id`` (a host's "stop this job", Celery's
        ``terminate_job``, RQ's ``kill_horse``); False if no worker has started it.

        The worker is replaced; the call is not run again whatever its
        ``max_attempts``: its sender hears :class:`Lost`, and the supervisor's log
        gives ``reason`` for the kill. Safe from any thread: the loop carries it out.
        """
        with self._lock:
            job = self._by_id.get(call_id)
            if job is None or job.queued:
                return False
            self._kills[call_id] = reason
        self.wake()
        return True

    @property
    def queued(self) -> int:
        """Calls waiting for an idle worker."""
        return len(self._queued) - self._withdrawn

    @property
    def outstanding(self) -> int:
        """Calls submitted and not ended yet (queued or running)."""
        return len(self._by_id)

    def fileno(self) -> int:
        """Readable when events are due: register it in an event loop, then :meth:`drain`."""
        return self._ready_read

    def drain(self) -> int:
        """Deliver every due event in this thread; returns how many."""
        with contextlib.suppress(BlockingIOError, OSError):
            while data := os.read(self._ready_read, 4096):
                self._stop_seen = self._stop_seen or b"s" in data
        self._due = False  # after emptying the pipe, before taking events: see _emit
        delivered = 0
        while True:
            try:
                notify, event = self._events.popleft()
            except IndexError:
                return delivered
            delivered += 1
            _notify(notify, event)

    # -- the supervisor's side (its loop thread) --------------------------------------

    backend = None
    tick = None
    #: a worker's report is the end of a call, whose sender waits for it: read at once
    report_delay = 0.0
    #: workers run the calls handed to them, no host's consumer
    consumer = None

    def app_path(self) -> None:
        """No app: workers run what they are handed."""

    def boot(self, pool: Pool, stopping: Callable[[], bool], wake: Callable[[], None],
             plugins: Any) -> None:
        self.pool, self.wake, self.plugins = pool, wake, plugins
        # a hook call costs microseconds even with no implementation: skip it then
        self._observed = bool(plugins.hook.pprunner_job_started.get_hookimpls()
                              or plugins.hook.pprunner_job_finished.get_hookimpls())

    def heartbeat(self, plugins: Any, runners: Sequence[RunnerInfo]) -> None:
        plugins.hook.pprunner_heartbeat(backend=None, runners=runners, at=time.time())

    def hand_out(self, pool: Pool) -> None:
        """Carry out kills asked for; give queued calls to the pool's idle workers,
        oldest call first, one each; a call meant for one worker (``Call.runner_id``)
        waits for that one, and is cancelled if that worker is not in the pool."""
        if self._kills:
            self._carry_out_kills(pool)
        if not self._queued:
            return
        if self._meant_for_one:  # a call for a worker that is not (or no longer) there
            self._cancel_meant_for_others(set(pool.workers))
        for child in list(pool.idle()):
            with self._lock:
                job = self._take_for(child.info.id)
            if job is None:
                if not self._queued:
                    return
                continue
            try:
                sent = child.send(channel.Run(job.call))
            except Exception as exc:  # pickling failed before a byte was written
                self._unsendable(job, exc)
                continue
            if not sent:
                self._requeue(job)  # its sentinel will say it is gone
                continue
            job.attempts += 1
            pool.assign(child, job.call)
            assert child.info.pid is not None
            if self._observed:
                self.plugins.hook.pprunner_job_started(call=job.call, runner=child.info)
            self._emit(job, Started(job.call, child.info.pid, child.info.id, job.attempts))

    def _carry_out_kills(self, pool: Pool) -> None:
        with self._lock:
            kills, self._kills = self._kills, {}
        for child in list(pool.holding(kills)):
            assert child.call is not None
            pool.kill(child, Kill(ErrorInfo("Killed", kills[child.call.id]), retry=False))

    def _take_for(self, runner_id: str) -> Job | None:
        """The oldest queued job this worker may run (under the lock). With no call
        meant for one worker queued, that is the first: the common case stays O(1)."""
        if not self._meant_for_one:
            while self._queued:
                job = self._queued.popleft()
                if job.queued:
                    job.queued = False
                    return job
                self._withdrawn -= 1
            return None
        for job in self._queued:  # calls meant for one worker: a few, scanned
            if job.queued and job.call.runner_id in (None, runner_id):
                self._queued.remove(job)
                job.queued = False
                if job.call.runner_id is not None:
                    self._meant_for_one -= 1
                return job
        return None

    def on_note(self, child: Child, message: channel.Note) -> None:
        """The running call tells its sender something."""
        noted = self._by_id.get(message.call_id)
        if noted is not None:
            self._emit(noted, Noted(noted.call, message.data, child.info.pid or 0))

    def job_waiting(self, child: Child, waiting: bool) -> None:
        """The call ``child`` runs blocks, or stops blocking, in ``lend_slot()``: its
        sender hears it when it asked to (``report_waits``)."""
        if self._report_waits and child.call is not None:
            with self._lock:
                job = self._by_id.get(child.call.id)
            if job is not None:
                self._emit(job, Waiting(job.call, child.info.pid or 0, waiting))

    def on_done(self, child: Child, message: channel.Done) -> None:
        """The call ``child`` was handed returned or raised."""
        assert self.pool is not None
        self.pool.released(child, message.call_id, message.peak_memory)
        job = self._finish(message.call_id)
        if job is None:
            return
        pid = child.info.pid or 0
        ending: Ending = (Finished(job.call, message.value, pid) if message.returned
                          else Failed(job.call, message.value, pid))
        self._end(job, child, ending)

    def on_cache_request(self, child: Child, message: channel.CacheRequest) -> None:
        child.refuse_cache_request()

    def drop_redelivery(self, job_id: str) -> bool:
        """Never: only host-consumed workers ask (a pushed call comes from here alone)."""
        return False

    def worker_exited(self, child: Child, error: ErrorInfo | None) -> tuple[Call, ...]:
        """A worker died or stopped holding a call: run it again, or tell its sender.
        Calls queued for this worker alone can no longer start: they are cancelled."""
        self._gone.add(child.info.id)
        self._cancel_meant_for(child)
        call = child.call
        if call is None:
            return ()
        job = self._by_id.get(call.id)
        if job is None:
            return (call,)
        pid = child.info.pid or 0
        exitcode = child.process.exitcode
        if error is None and (self._closed or call.runner_id is not None):
            # a stop that could not wait for it, or its only worker is gone
            self._finish(call.id)
            self._emit(job, Cancelled(call, "the supervisor stopped while it ran"
                                      if self._closed else f"{child.who} exited while it ran"))
        elif error is None:  # asked to go (retired): it goes back, the attempt uncharged
            job.attempts -= 1
            self._requeue(job)
        elif child.kill is not None and child.kill.job_id == call.id:
            assert call.time_limit is not None
            self._finish(call.id)
            self._end(job, child, TimedOut(call, pid, call.time_limit))
        elif (job.attempts < call.max_attempts and call.runner_id is None
              and (child.kill is None or child.kill.retry)):
            logger.warning("%s; running %s again (attempt %d of %d)", error.message, call,
                           job.attempts + 1, call.max_attempts)
            self._requeue(job)
        else:
            self._finish(call.id)
            signal_name, description = describe_exit(exitcode, child.signals_sent)
            self._end(job, child, Lost(call, pid, exitcode, signal_name, description))
        return (call,)

    def drained(self) -> bool:
        return False

    def stopping(self) -> None:
        """No new calls are handed out; queued ones are cancelled."""
        with self._lock:
            self._closed = True
            cancelled = [job for job in self._queued if job.queued]
            self._queued.clear()
            self._meant_for_one = self._withdrawn = 0
            for job in cancelled:
                del self._by_id[job.call.id]
        for job in cancelled:
            self._emit(job, Cancelled(job.call, "the supervisor stopped before running it"))

    def close(self, runner_ids: list[str], backend_lost: bool) -> None:
        """The supervisor ended: whatever was not ended yet is cancelled."""
        self.stopping()
        with self._lock:
            left = list(self._by_id.values())
            self._by_id.clear()
        for job in left:
            self._emit(job, Cancelled(job.call, "the supervisor stopped while it ran"))

    def shutdown(self) -> None:
        """Deliver what is due and stop the dispatcher thread (if there is one)."""
        with self._lock:
            self._closed = True
        if self._thread is not None:
            self._signal_ready(stop=True)
            self._thread.join()
            self._thread = None
        self.drain()
        for fd in (self._ready_read, self._ready_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._ready_read = self._ready_write = -1  # closed once: the numbers may be reused

    # -- internals ------------------------------------------------------------------

    def _unsendable(self, job: Job, error: Exception) -> None:
        """The call (its function, an argument) does not pickle: it fails unstarted,
        with that error, as with the standard library's pool. Raising would end the
        supervisor's loop and every other call with it; the worker is still idle."""
        self._finish(job.call.id)
        self._emit(job, Failed(job.call, RemoteError(
            type(error).__name__, f"{job.call.name} cannot be sent to a worker: {error}",
            exception=error.with_traceback(None)), 0))

    def _cancel_meant_for(self, child: Child) -> None:
        if self._meant_for_one:
            self._cancel_orphans(lambda runner_id: runner_id == child.info.id,
                                 f"{child.who} exited before it could start it")

    def _cancel_meant_for_others(self, workers: set[str]) -> None:
        self._cancel_orphans(lambda runner_id: runner_id is not None and runner_id not in workers,
                             _ORPHANED)

    def _cancel_orphans(self, orphaned: Callable[[str | None], bool], reason: str) -> None:
        with self._lock:
            orphans = [j for j in self._queued if j.queued and orphaned(j.call.runner_id)]
            for job in orphans:
                self._dequeue(job)
                del self._by_id[job.call.id]
        for job in orphans:
            self._emit(job, Cancelled(job.call, reason))

    def _requeue(self, job: Job) -> None:
        with self._lock:
            self._enqueue(job, front=True)

    def _enqueue(self, job: Job, front: bool = False) -> None:
        """Queue a job (under the lock), counting those meant for one worker."""
        if front:
            self._queued.appendleft(job)
        else:
            self._queued.append(job)
        job.queued = True
        if job.call.runner_id is not None:
            self._meant_for_one += 1

    def _dequeue(self, job: Job) -> None:
        """Take a queued job out (under the lock): marked, left for the front to skip,
        so withdrawing many (``shutdown(cancel_futures=True)``) is linear, not quadratic."""
        job.queued = False
        self._withdrawn += 1
        if job.call.runner_id is not None:
            self._meant_for_one -= 1

    def _finish(self, call_id: str) -> Job | None:
        with self._lock:
            return self._by_id.pop(call_id, None)

    def _end(self, job: Job, child: Child, ending: Ending) -> None:
        if self._observed:
            self.plugins.hook.pprunner_job_finished(call=job.call, runner=child.info,
                                                    ending=ending)
        self._emit(job, ending)

    def _emit(self, job: Job, event: Event) -> None:
        """Deliver ``event`` at once (``deliver="supervisor"``), or queue it and write
        the ready pipe unless a write is already due.

        ``drain`` empties the pipe, then clears ``_due``, then takes events. An
        emitter that finds ``_due`` set appended its event before that clear, so
        the drain takes it; one that finds it clear writes. Under load a drain
        takes several events for one write (10,000 calls: ~13,000 writes instead of
        20,000, each a GIL hand-off in the supervisor's loop thread).
        """
        if self._deliver_at_once:
            _notify(job.notify, event)
            return
        self._events.append((job.notify, event))
        if not self._due:
            self._due = True
            self._signal_ready()

    def _signal_ready(self, stop: bool = False) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: already readable
            os.write(self._ready_write, b"s" if stop else b"\0")

    def _deliver_forever(self) -> None:
        # the stop byte is looked for by drain, which empties the pipe: a stop written
        # between a read here and drain's own read is not lost
        while not self._stop_seen:
            select.select([self._ready_read], [], [])
            self.drain()


def _notify(notify: Notify, event: Event) -> None:
    """A host's callback: its error is logged, never let into pprunner's loops."""
    try:
        notify(event)
    except Exception:
        logger.exception("a callback for %r raised", event)
