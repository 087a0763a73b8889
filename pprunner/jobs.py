"""Push mode's vocabulary: a call handed to a worker, and what its sender hears back.

In pull mode a worker claims invocations from a backend. In push mode the
work comes from someone else's queue (a host framework's consumer, or
:class:`pprunner.Executor`): the host hands a :class:`Call` to the
supervisor, which gives it to an idle worker over that worker's private
pipe, and the host hears one :class:`Started` and then exactly one ending:
:class:`Finished`, :class:`Failed`, :class:`Lost`, :class:`TimedOut` or
:class:`Cancelled` (with any :class:`Noted` the call sent in between). What
the host does with an ending (acks, results, retries) stays the host's.

The pipe is the only place a callable travels by reference: it links a
supervisor to the workers it started itself, never to a shared queue.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from .task import Task


def new_job_id() -> str:
    return os.urandom(8).hex()


def _name_of(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None) or "?"
    return f"{module}.{getattr(function, '__qualname__', type(function).__name__)}"


@attrs.frozen(repr=False)
class Call:
    """One call to run in a worker: ``function(*args, **kwargs)``.

    Pickled onto the worker's pipe, so ``function`` must be importable there
    (a module-level function, or whatever the start method can rebuild).

    :param time_limit: seconds after which the supervisor kills the worker
        running it; the sender hears :class:`TimedOut`.
    :param soft_time_limit: seconds after which
        :class:`~pprunner.errors.SoftTimeLimitExceeded` is raised inside it.
    :param max_attempts: how often it may be started when workers die under
        it; after the last, the sender hears :class:`Lost`.
    :param name: how logs and process titles name it (default: the function's
        qualified name).
    :param soft_limit_error: the exception class raised inside it when its soft
        limit runs out (called with a message), for a host whose tasks catch
        the host's own class (Celery's ``SoftTimeLimitExceeded``); default
        :class:`~pprunner.errors.SoftTimeLimitExceeded`.
    :param headers: small string metadata for the worker side, as an invocation's
        (``pprunner_enqueue`` wrappers add a trace context at ``Dispatcher.submit``).
    :param runner_id: hand it only to this worker (a host that claimed work in
        that worker's name, as pynenc's runner does); it waits until that worker is
        idle, is never tried on another one, and ends :class:`Cancelled` if that
        worker exits before starting it (or was not running when it came).
    :param task_name: what metrics and traces group it under: the host's task
        name, never an id (default: ``name``, which a host may make unique per
        job for its logs).
    """

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.Factory(dict)
    id: str = attrs.Factory(new_job_id)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    max_attempts: int = 1
    name: str = attrs.field(default=attrs.Factory(lambda self: _name_of(self.function),
                                                   takes_self=True))
    soft_limit_error: type[BaseException] | None = None
    runner_id: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    task_name: str = attrs.field(default=attrs.Factory(lambda self: self.name, takes_self=True))

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.name}>"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its fields, in order, in a tuple: every call crosses a pipe, and
        attrs' generic state handling costs four times as much."""
        return (Call, tuple(getattr(self, name) for name in _CALL_FIELDS))


#: Call's fields in the order its ``__init__`` takes them
_CALL_FIELDS = tuple(field.name for field in attrs.fields(Call))


@attrs.frozen
class RemoteError:
    """An exception raised in a worker, as its sender receives it.

    ``exception`` is the exception object itself when it survived pickling
    (so a host can re-raise the task's own type), else None; ``type``,
    ``message`` and ``traceback`` are always there.
    """

    type: str
    message: str
    traceback: str = ""
    exception: BaseException | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Started:
    """The call was handed to the idle worker ``pid``, which starts it at once."""

    call: Call
    pid: int
    runner_id: str
    attempt: int


@attrs.frozen
class Waiting:
    """The call's worker started (``waiting``) or stopped blocking on work other
    workers do (``WorkerContext.lend_slot``); while it waits, the supervisor runs
    another worker in its place. Only sent to hosts that asked for it
    (``Dispatcher(report_waits=True)``), between :class:`Started` and the ending."""

    call: Call
    pid: int
    waiting: bool


@attrs.frozen
class Finished:
    """The call returned ``value``."""

    call: Call
    value: Any
    pid: int


@attrs.frozen
class Failed:
    """The call raised; ``error`` is what it raised. ``pid`` is 0 when no worker
    got it: it could not be pickled to be sent (``error`` says why)."""

    call: Call
    error: RemoteError
    pid: int


@attrs.frozen
class Lost:
    """The worker running the call died under it on its last allowed attempt.

    ``exitcode`` is the process's (negative: the signal that ended it);
    ``description`` says it in words, e.g. "was killed by SIGKILL".
    """

    call: Call
    pid: int
    exitcode: int | None
    signal: str | None
    description: str


@attrs.frozen
class TimedOut:
    """The call ran past its hard ``time_limit``; its worker was killed and replaced."""

    call: Call
    pid: int
    limit: float


@attrs.frozen
class Noted:
    """The running call told its sender something (``WorkerContext.note``) — what it
    took on besides the call itself, progress — before any ending. Delivered in
    order: every note a worker sent comes before its call's ending, a death
    included."""

    call: Call
    data: Any
    pid: int


@attrs.frozen
class Cancelled:
    """The call was withdrawn before any worker started it (or the pool stopped first)."""

    call: Call
    reason: str


@attrs.frozen
class Runnable:
    """What a job resolved to (hook ``pprunner_resolve_job``): the function to
    call with its decoded arguments, and the registered task behind it (None
    for a pushed call)."""

    function: Callable[..., Any]
    args: list[Any] | tuple[Any, ...]
    kwargs: dict[str, Any]
    task: Task[Any, Any] | None = None


#: every ending a sender can hear, after :class:`Started` (or instead of it: Cancelled,
#: and Failed for a call that cannot be pickled onto a worker's pipe, with ``pid`` 0)
Ending = Finished | Failed | Lost | TimedOut | Cancelled
Event = Started | Noted | Waiting | Ending
