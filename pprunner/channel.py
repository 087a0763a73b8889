"""The pipe between the supervisor and each worker: small tuples, both ways.

Worker to supervisor: what the supervisor cannot see from outside — that
the worker booted, which invocation it runs since when (for the hard time
limit), its peak memory, that it wants to be recycled, and in push mode how
each call it was handed ended. Supervisor to worker: a call to run (push
mode) and permission to retire. Process death is never reported here; the
process sentinel says that.
"""

from __future__ import annotations

import io
import logging
import pickle
import resource
import select
import sys
import threading
from collections import deque
from typing import Any

from .errors import PprunnerError
from .jobs import RemoteError

#: worker -> supervisor: ("hello",), the first thing the worker's own code does: its
#: process got through the start method's preparation (spawn and forkserver re-import
#: the parent's ``__main__`` and unpickle the worker's spec before any of it runs)
HELLO = "hello"
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
#: worker -> supervisor: ("unreadable", error): the pushed call it was just handed does
#: not unpickle in the worker (a :class:`~pprunner.jobs.RemoteError` naming what cannot
#: be imported there); the call fails, the worker serves on
UNREADABLE = "unreadable"
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


class _NamingUnpickler(pickle.Unpickler):
    """Unpickles as ``pickle.loads`` does, but says which global could not be found."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except Exception as exc:
            raise _Unimportable(module, name, exc) from exc


class _Unimportable(Exception):
    def __init__(self, module: str, name: str, error: Exception) -> None:
        super().__init__(module, name, error)
        self.module, self.name, self.error = module, name, error


def unreadable_call(data: bytes, error: Exception) -> RemoteError:
    """Why a pushed call does not unpickle in this worker, as its sender will get it:
    the original error's type, with a message naming what cannot be imported and,
    for the parent's ``__main__``, what to do."""
    try:
        _NamingUnpickler(io.BytesIO(data)).load()
    except _Unimportable as missing:
        message = f"cannot import `{missing.name}` from `{missing.module}` in the worker"
        if missing.module in ("__main__", "__mp_main__"):
            message = f"cannot import `{missing.name}` from `__main__` in the worker: " + (
                _MAIN_HAS_NO_FILE if getattr(sys.modules["__main__"], "__file__", None) is None
                else _NOT_AT_TOP_LEVEL)
        else:
            message += f": {missing.error}"
        carried = (type(missing.error)(message)
                   if isinstance(missing.error, (AttributeError, ImportError)) else None)
        return RemoteError(type(missing.error).__name__, message, exception=carried)
    except Exception:
        pass  # it fails elsewhere than on a name: the original error says it all
    return RemoteError(type(error).__name__, f"the call cannot be unpickled in the worker: "
                                             f"{error}")


_MAIN_HAS_NO_FILE = (
    "a function defined in `python -c`, on standard input or in an interactive session "
    "exists only in that process; define it in a module or a script file, send it by value "
    "(pickler=\"cloudpickle\"), or start workers with fork "
    "(mp_context=multiprocessing.get_context(\"fork\"))")
_NOT_AT_TOP_LEVEL = (
    "the script does not define it at its top level (under the `if __name__ == "
    "\"__main__\":` guard, or at run time, it exists only in the parent); define it at "
    "the top level or in a module, send it by value (pickler=\"cloudpickle\"), or start "
    "workers with fork (mp_context=multiprocessing.get_context(\"fork\"))")


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
                if not self._readiness.wait(timeout):
                    return None
                data = self.connection.recv_bytes()
            except (OSError, EOFError):
                return (RETIRE,)
        try:
            message: tuple[Any, ...] = pickle.loads(data)
        except Exception as exc:  # every message but a pushed call is plain data
            self.send(UNREADABLE, unreadable_call(data, exc))
            return None
        return message

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
