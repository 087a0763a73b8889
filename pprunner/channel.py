"""The pipe between the supervisor and each worker: small tuples, both ways.

Worker to supervisor: what the supervisor cannot see from outside — that
the worker booted, which invocation it runs since when (for the hard time
limit), its peak memory, that it wants to be recycled, and in push mode how
each call it was handed ended. Supervisor to worker: a call to run (push
mode) and permission to retire. Process death is never reported here; the
process sentinel says that.
"""

from __future__ import annotations

import logging
import pickle
import resource
import select
import sys
import threading
from collections import deque
from typing import Any

from .errors import PprunnerError

#: worker -> supervisor: ("ready", peak_rss_bytes)
READY = "ready"
#: worker -> supervisor: ("boot-failed", message) just before exiting
BOOT_FAILED = "boot-failed"
#: worker -> supervisor: ("started", invocation_id, task_name, hard_time_limit,
#: retry_on_time_limit), sent only for invocations with a hard time limit; the last
#: field carries the task's policy, so the supervisor needs no task registry
STARTED = "started"
#: worker -> supervisor: ("finished", invocation_id, peak_rss_bytes), after a reported
#: invocation, or after any invocation that raised the peak memory
FINISHED = "finished"
#: worker -> supervisor: ("recycle", reason[, at_once]): replace me when you can; with
#: ``at_once`` true, hand me nothing more and replace me now
RECYCLE = "recycle"
#: worker -> supervisor: ("done", call_id, returned, value_or_error, peak_rss_bytes) at
#: the end of a pushed call; ``value_or_error`` is the value when ``returned``, else a
#: :class:`~pprunner.jobs.RemoteError`
DONE = "done"
#: worker -> supervisor: ("note", call_id, data): the running pushed call tells its
#: sender something (:class:`~pprunner.jobs.Noted`); ``data`` must pickle
NOTE = "note"
#: worker -> supervisor: ("waiting", bool): the job this worker runs started (True) or
#: stopped (False) blocking on work other workers do (``WorkerContext.lend_slot``)
WAITING = "waiting"
#: worker -> supervisor: ("cache", request): a ``runner_cache`` operation, pickled by
#: :class:`~pprunner.cache.RunnerCache` (pull mode)
CACHE = "cache"
#: supervisor -> worker: ("cache-answer", ok, result): the answer to the last ``cache``
CACHE_ANSWER = "cache-answer"
#: supervisor -> worker: ("retire",): finish the current invocation, then exit
RETIRE = "retire"
#: supervisor -> worker: ("run", call): run this :class:`~pprunner.jobs.Call` (push mode)
RUN = "run"

logger = logging.getLogger("pprunner.channel")


def encode(message: tuple[Any, ...]) -> bytes:
    """A message as the pipe carries it. Plain pickle, not multiprocessing's
    ForkingPickler (which copies its reducer table for every message): nothing on
    this pipe is a process handle or a connection, and a busy push-mode pool
    sends two messages per call. Raises before anything is written when a value
    does not pickle."""
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


class Readiness:
    """Whether a connection has something to read, by one poll(2) on a poll set made
    once (``Connection.poll`` builds a selector on every call)."""

    def __init__(self, connection: Any) -> None:
        self._poller = select.poll()
        self._poller.register(connection.fileno(), select.POLLIN)

    def wait(self, timeout: float = 0.0) -> bool:
        return bool(self._poller.poll(None if timeout is None else timeout * 1000))


#: whose resource usage to ask for: the peak is the process's either way (its memory
#: is shared by its threads), but RUSAGE_SELF also sums every thread's CPU time, which
#: in a worker cost ~75 us a call, measured, against ~3 us (Linux only)
_USAGE_OF = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


def peak_rss() -> int:
    """This process's peak resident memory in bytes (asked after every job)."""
    peak = resource.getrusage(_USAGE_OF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class WorkerChannel:
    """The worker's end. A broken pipe means the supervisor is gone, which the
    lifeline handles; sends never raise."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._readiness = Readiness(connection)
        #: what the supervisor sent while a request waited for its answer
        self._early: deque[tuple[Any, ...]] = deque()
        #: one request at a time, and no read in between (a task may use several threads)
        self._lock = threading.Lock()

    def send(self, *message: Any) -> None:
        """Report to the supervisor; a value that does not pickle raises, a gone
        supervisor does not."""
        data = encode(message)
        try:
            self.connection.send_bytes(data)
        except (OSError, EOFError) as exc:
            logger.debug("cannot report %s to the supervisor: %s", message[0], exc)

    def receive(self, timeout: float = 0.0) -> tuple[Any, ...] | None:
        """The supervisor's next message, waiting up to ``timeout``; None when none
        came. A closed pipe reads as ``retire``: the supervisor is gone."""
        with self._lock:
            if self._early:
                return self._early.popleft()
            try:
                if self._readiness.wait(timeout):
                    message: tuple[Any, ...] = pickle.loads(self.connection.recv_bytes())
                    return message
            except (OSError, EOFError):
                return (RETIRE,)
            return None

    def ask_cache(self, request: bytes) -> tuple[bool, Any]:
        """Send a ``runner_cache`` request and wait for its answer; whatever else the
        supervisor sends meanwhile is kept for :meth:`receive`, in order."""
        with self._lock:
            try:
                self.connection.send_bytes(encode((CACHE, request)))
                while True:
                    message = pickle.loads(self.connection.recv_bytes())
                    if message[0] == CACHE_ANSWER:
                        return message[1], message[2]
                    self._early.append(message)
            except (OSError, EOFError) as exc:
                raise PprunnerError("runner_cache: the supervisor is gone") from exc
