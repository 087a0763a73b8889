"""The pipe between the supervisor and each worker: typed messages, both ways.

Worker to supervisor: what the supervisor cannot see from outside — that
the worker booted, which job it runs since when (for the hard time limit),
its peak memory, that it wants to be recycled, that its job waits on other
jobs, and in push mode how each call it was handed ended. Supervisor to
worker: a call to run (push mode) and permission to retire. Process death is
never reported here; the process sentinel says that.

Each message is a small named tuple, and each has one receiver on the other
end, a method named ``on_<kind>`` (:attr:`Message.kind`). On the pipe a
message travels as a plain tuple, its type's number first: pickling the class
itself would cost several times the round trip of a pushed call.
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
from typing import Any, NamedTuple

from .errors import PprunnerError
from .jobs import Call, RemoteError

# -- worker -> supervisor: the worker's life -------------------------------------------

class Hello(NamedTuple):
    """The first thing the worker's own code says: its process got through the start
    method's preparation (spawn and forkserver re-import the parent's ``__main__``
    and unpickle the worker's spec before any of it runs)."""


class Ready(NamedTuple):
    """The worker booted (the handshake); its peak memory so far, in bytes."""

    peak_memory: int


class BootFailed(NamedTuple):
    """The worker could not boot, sent just before it exits."""

    error: str


class Started(NamedTuple):
    """A job started that the supervisor did not hand out itself: a pulled invocation
    with a hard time limit (the supervisor enforces the limit and needs the task's
    policy, so it needs no task registry), or any job a host's consumer runs
    (:mod:`pprunner.consuming`: the supervisor must know what a dead worker held;
    ``data`` is what the host needs to settle it)."""

    job_id: str
    task: str
    hard_limit: float | None
    retry_on_limit: bool
    data: Any = None


class Finished(NamedTuple):
    """A reported invocation ended, or any one that raised the peak memory."""

    job_id: str
    peak_memory: int


class Recycle(NamedTuple):
    """Replace me when you can (a limit reached); with ``at_once``, hand me nothing
    more and replace me now (``replace_after_job``)."""

    reason: str
    at_once: bool = False


class Waiting(NamedTuple):
    """The job this worker runs starts (True) or stops (False) blocking on work
    other workers do (``WorkerContext.lend_slot``): its slot is lent meanwhile."""

    waiting: bool


# -- worker -> supervisor: about the job it runs -------------------------------------

class Done(NamedTuple):
    """A pushed call ended: ``value`` is what it returned when ``returned``, else a
    :class:`~pprunner.jobs.RemoteError`."""

    call_id: str
    returned: bool
    value: Any
    peak_memory: int


class Note(NamedTuple):
    """The running pushed call tells its sender something
    (:class:`~pprunner.jobs.Noted`); ``data`` must pickle."""

    call_id: str
    data: Any


class Unreadable(NamedTuple):
    """The pushed call it was just handed does not unpickle in the worker: ``error``
    (a :class:`~pprunner.jobs.RemoteError`) names what cannot be imported there.
    That call fails; the worker serves on."""

    error: RemoteError


class CacheRequest(NamedTuple):
    """A ``runner_cache`` operation, pickled by :class:`~pprunner.cache.RunnerCache`."""

    request: bytes


class RedeliveryCheck(NamedTuple):
    """The host's broker delivered ``job_id`` again by itself (RabbitMQ requeues a
    dead connection's unacked messages): was it held by a worker that died, and
    settled already? Answered by :class:`RedeliveryVerdict`
    (:meth:`~pprunner.consuming.HostJobs.redelivery_settled`)."""

    job_id: str


# -- supervisor -> worker --------------------------------------------------------------

class CacheAnswer(NamedTuple):
    """The answer to the worker's last :class:`CacheRequest`."""

    ok: bool
    result: Any


class RedeliveryVerdict(NamedTuple):
    """The answer to a :class:`RedeliveryCheck`: ``drop`` when the job's dead worker
    was settled in the host's terms, so this delivery of it must not run."""

    job_id: str
    drop: bool


class Retire(NamedTuple):
    """Finish the current job, then exit."""


class Run(NamedTuple):
    """Run this call (push mode)."""

    call: Call


class Serve(NamedTuple):
    """A spare worker (booted ahead, with no slot) takes ``slot``: it starts serving."""

    slot: int


Message = (Hello | Ready | BootFailed | Started | Finished | Recycle | Waiting | Done
           | Unreadable | Note | CacheRequest | CacheAnswer | Retire | Run | Serve
           | RedeliveryCheck | RedeliveryVerdict)

#: every message type; its place here is its number on the pipe
MESSAGES: tuple[type[Any], ...] = (Hello, Ready, BootFailed, Started, Finished, Recycle,
                                   Waiting, Done, Unreadable, Note, CacheRequest, CacheAnswer,
                                   Retire, Run, Serve, RedeliveryCheck, RedeliveryVerdict)
_NUMBERS = {kind: number for number, kind in enumerate(MESSAGES)}
#: each message type's name in its receiver's ``on_<kind>`` method
KINDS = {kind: "".join(f"_{c.lower()}" if c.isupper() else c for c in kind.__name__)[1:]
         for kind in MESSAGES}

logger = logging.getLogger("pprunner.channel")


def kind(message: Message) -> str:
    """The message's kind, as in its receiver's method name: ``boot_failed``."""
    return KINDS[type(message)]


def encode(message: Message) -> bytes:
    """A message as the pipe carries it. Plain pickle, not multiprocessing's
    ForkingPickler (which copies its reducer table for every message): nothing on
    this pipe is a process handle or a connection, and a busy push-mode pool
    sends two messages per call. Raises before anything is written when a value
    does not pickle."""
    return pickle.dumps((_NUMBERS[type(message)], *message), pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> Message:
    """The message ``encode`` wrote; raises when a value does not unpickle here."""
    number, *fields = pickle.loads(data)
    message: Message = MESSAGES[number](*fields)
    return message


class Readiness:
    """Whether a connection has something to read, by one poll(2) on a poll set made
    once (``Connection.poll`` builds a selector on every call)."""

    def __init__(self, connection: Any) -> None:
        self._poller = select.poll()
        self._poller.register(connection.fileno(), select.POLLIN)

    def wait(self, timeout: float | None = 0.0) -> bool:
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
        self._early: deque[Message] = deque()
        #: one request at a time, and no read in between (a task may use several threads)
        self._lock = threading.Lock()
        #: one report at a time: a host's consumer may run jobs in several threads
        self._sending = threading.Lock()

    def send(self, message: Message) -> None:
        """Report to the supervisor; a value that does not pickle raises, a gone
        supervisor does not. Safe from any thread."""
        data = encode(message)
        try:
            with self._sending:
                self.connection.send_bytes(data)
        except (OSError, EOFError) as exc:
            logger.debug("cannot report %s to the supervisor: %s", kind(message), exc)

    def receive(self, timeout: float | None = 0.0) -> Message | None:
        """The supervisor's next message, waiting up to ``timeout`` (None: until one
        comes); None when none came. A closed pipe reads as :class:`Retire`: the
        supervisor is gone."""
        with self._lock:
            if self._early:
                return self._early.popleft()
            try:
                if not self._readiness.wait(timeout):
                    return None
                data = self.connection.recv_bytes()
            except (OSError, EOFError):
                return Retire()
        try:
            return decode(data)
        except Exception as exc:  # every message but a pushed call is plain data
            self.send(Unreadable(unreadable_call(data, exc)))
            return None

    def ask_cache(self, request: bytes) -> tuple[bool, Any]:
        """Send a ``runner_cache`` request and wait for its answer; whatever else the
        supervisor sends meanwhile is kept for :meth:`receive`, in order."""
        with self._lock:
            try:
                self.connection.send_bytes(encode(CacheRequest(request)))
                while True:
                    message = decode(self.connection.recv_bytes())
                    if isinstance(message, CacheAnswer):
                        return message.ok, message.result
                    self._early.append(message)
            except (OSError, EOFError) as exc:
                raise PprunnerError("runner_cache: the supervisor is gone") from exc
