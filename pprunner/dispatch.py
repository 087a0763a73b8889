"""Push mode's side of the supervisor: calls a host hands in, given to idle workers.

A host (a framework's consumer, :class:`pprunner.Executor`) calls
:meth:`Dispatcher.submit` from any thread. The call waits here, in the
supervisor's process, until a worker is idle — a worker never holds more
than one — and goes to it over that worker's pipe. What happens to it comes
back as events (:mod:`pprunner.jobs`): :class:`~pprunner.jobs.Started` and
then one ending.

Events are delivered where the host wants them: on an event loop (register
:meth:`Dispatcher.fileno`, which becomes readable when events are due, and
call :meth:`Dispatcher.drain`), or on one dispatcher thread of pprunner's
(``deliver="thread"``). Either way a host's callbacks never run on the
supervisor's loop, so a slow callback cannot hold up deaths or deadlines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import attrs

from . import channel
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
)
from .pool import Child
from .spawn import describe_exit

logger = logging.getLogger("pprunner.dispatch")

Notify = Callable[[Event], None]


@attrs.define(eq=False)
class Job:
    """A submitted call and its sender, while the dispatcher has it."""

    call: Call
    notify: Notify
    attempts: int = 0


class Dispatcher:
    """Holds submitted calls and turns what workers report into events (module docstring).

    :param deliver: ``"thread"`` starts a dispatcher thread that delivers every
        event; ``"loop"`` leaves it to the host, which waits on :meth:`fileno`
        and calls :meth:`drain`.
    """

    def __init__(self, deliver: Literal["thread", "loop"] = "thread") -> None:
        self._lock = threading.Lock()
        self._queued: deque[Job] = deque()
        self._by_id: dict[str, Job] = {}
        self._events: deque[tuple[Notify, Event]] = deque()
        self._ready_read, self._ready_write = os.pipe()
        os.set_blocking(self._ready_read, False)
        os.set_blocking(self._ready_write, False)
        self._closed = False
        #: wakes the supervisor's loop; set when a supervisor takes this feed
        self.wake: Callable[[], None] = lambda: None
        #: the supervisor's plugins (job started/finished hooks), set with ``wake``
        self.plugins: Any = None
        self._thread: threading.Thread | None = None
        if deliver == "thread":
            self._thread = threading.Thread(target=self._deliver_forever,
                                            name="pprunner-dispatcher", daemon=True)
            self._thread.start()

    # -- the host's side (any thread) ----------------------------------------------

    def submit(self, call: Call, notify: Notify) -> None:
        """Queue ``call``; ``notify(event)`` hears what becomes of it."""
        with self._lock:
            if self._closed:
                raise PprunnerError("cannot submit: the supervisor has stopped")
            if call.id in self._by_id:
                raise ValueError(f"a call with id {call.id} is already submitted")
            job = self._by_id[call.id] = Job(call, notify)
            self._queued.append(job)
        self.wake()

    def cancel(self, call_id: str) -> bool:
        """Withdraw a call no worker has started; False if one has (or it is gone).

        The caller withdrew it, so no event follows: it hears nothing more of it.
        """
        with self._lock:
            job = self._by_id.get(call_id)
            if job is None or job not in self._queued:
                return False
            self._queued.remove(job)
            del self._by_id[call_id]
        return True

    @property
    def queued(self) -> int:
        """Calls waiting for an idle worker."""
        return len(self._queued)

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
            while os.read(self._ready_read, 4096):
                pass
        delivered = 0
        while True:
            try:
                notify, event = self._events.popleft()
            except IndexError:
                return delivered
            delivered += 1
            try:
                notify(event)
            except Exception:
                logger.exception("a callback for %r raised", event)

    # -- the supervisor's side (its loop thread) --------------------------------------

    backend = None
    tick = None

    def app_path(self) -> None:
        """No app: workers run what they are handed."""

    def boot(self, processes: int, stopping: Callable[[], bool], wake: Callable[[], None],
             plugins: Any) -> None:
        self.wake, self.plugins = wake, plugins

    def heartbeat(self, plugins: Any, runners: Sequence[RunnerInfo]) -> None:
        plugins.hook.pprunner_heartbeat(backend=None, runners=runners, at=time.time())

    def hand_out(self, children: Iterable[Child]) -> None:
        """Give queued calls to idle workers, oldest call first, one each; a call
        meant for one worker (``Call.runner_id``) waits for that one."""
        if not self._queued:
            return
        children = list(children)
        self._cancel_meant_for_others({c.info.id for c in children})
        for child in children:
            if not child.idle:
                continue
            with self._lock:
                job = self._take_for(child.info.id)
            if job is None:
                if not self._queued:
                    return
                continue
            try:
                sent = child.send(channel.RUN, job.call)
            except Exception as exc:  # pickling failed before a byte was written
                self._unsendable(job, exc)
                continue
            if not sent:
                with self._lock:
                    self._queued.appendleft(job)  # its sentinel will say it is gone
                continue
            job.attempts += 1
            child.call = job.call
            child.started(job.call.id, job.call.name, job.call.time_limit)
            assert child.info.pid is not None
            if self.plugins is not None:
                self.plugins.hook.pprunner_job_started(call=job.call, runner=child.info)
            self._emit(job, Started(job.call, child.info.pid, child.info.id, job.attempts))

    def _take_for(self, runner_id: str) -> Job | None:
        """The oldest queued job this worker may run (under the lock)."""
        for job in self._queued:
            if job.call.runner_id in (None, runner_id):
                self._queued.remove(job)
                return job
        return None

    def received(self, child: Child, message: tuple[Any, ...]) -> None:
        """A worker's ``note`` about its call, or its ``done``: the call returned or raised."""
        if message[0] == channel.NOTE:
            _, call_id, data = message
            noted = self._by_id.get(call_id)
            if noted is not None:
                self._emit(noted, Noted(noted.call, data, child.info.pid or 0))
            return
        _, call_id, returned, value, peak = message
        child.call = None
        child.finished(call_id, peak)
        job = self._finish(call_id)
        if job is None:
            return
        pid = child.info.pid or 0
        ending: Ending = (Finished(job.call, value, pid) if returned
                          else Failed(job.call, value, pid))
        self._end(job, child, ending)

    def worker_exited(self, child: Child, error: ErrorInfo | None) -> tuple[Call, ...]:
        """A worker died or stopped holding a call: run it again, or tell its sender.
        Calls queued for this worker alone can no longer start: they are cancelled."""
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
        elif job.attempts < call.max_attempts and call.runner_id is None:
            logger.warning("%s; running %s again (attempt %d of %d)", error.message, call,
                           job.attempts + 1, call.max_attempts)
            self._requeue(job)
        else:
            self._finish(call.id)
            signal_name, description = describe_exit(exitcode)
            self._end(job, child, Lost(call, pid, exitcode, signal_name, description))
        return (call,)

    def drained(self) -> bool:
        return False

    def stopping(self) -> None:
        """No new calls are handed out; queued ones are cancelled."""
        with self._lock:
            self._closed = True
            cancelled = list(self._queued)
            self._queued.clear()
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
        self._cancel_orphans(lambda runner_id: runner_id == child.info.id,
                             f"{child.who} exited before it could start it")

    def _cancel_meant_for_others(self, workers: set[str]) -> None:
        """A call submitted for a worker that had already exited would wait forever."""
        self._cancel_orphans(lambda runner_id: runner_id is not None and runner_id not in workers,
                             "its worker is not running (it exited before the call came)")

    def _cancel_orphans(self, orphaned: Callable[[str | None], bool], reason: str) -> None:
        with self._lock:
            orphans = [j for j in self._queued if orphaned(j.call.runner_id)]
            for job in orphans:
                self._queued.remove(job)
                del self._by_id[job.call.id]
        for job in orphans:
            self._emit(job, Cancelled(job.call, reason))

    def _requeue(self, job: Job) -> None:
        with self._lock:
            self._queued.appendleft(job)

    def _finish(self, call_id: str) -> Job | None:
        with self._lock:
            return self._by_id.pop(call_id, None)

    def _end(self, job: Job, child: Child, ending: Ending) -> None:
        if self.plugins is not None:
            self.plugins.hook.pprunner_job_finished(call=job.call, runner=child.info,
                                                    ending=ending)
        self._emit(job, ending)

    def _emit(self, job: Job, event: Event) -> None:
        self._events.append((job.notify, event))
        self._signal_ready()  # every time: a check of "was it empty" would race with drain

    def _signal_ready(self, stop: bool = False) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: already readable
            os.write(self._ready_write, b"s" if stop else b"\0")

    def _deliver_forever(self) -> None:
        while True:
            select.select([self._ready_read], [], [])
            try:
                stop = b"s" in os.read(self._ready_read, 4096)
            except BlockingIOError:
                stop = False
            except OSError:
                return
            self.drain()
            if stop:
                return
