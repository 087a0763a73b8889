"""The invocation record, its status state machine, and runner records.

These are plain values that cross process (and host) boundaries, so they are
frozen attrs classes that know nothing of any wire format: backends decide
how to store them, serializers only ever see task arguments and results.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import time
import traceback
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import IllegalTransition


class Status(str, enum.Enum):
    """Where an invocation is in its life. The value is the stored name."""

    PENDING = "PENDING"  #: waiting in the queue to be claimed
    RUNNING = "RUNNING"  #: claimed by its owner runner, which is executing it
    PAUSED = "PAUSED"  #: its owner keeps it while it waits for other invocations
    SUCCESS = "SUCCESS"  #: final: the task returned; the result is stored
    FAILED = "FAILED"  #: final: the task raised, could not run, or its workers kept dying

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = frozenset({Status.SUCCESS, Status.FAILED})
#: Statuses in which an invocation has an owner runner.
OWNED_STATUSES = frozenset({Status.RUNNING, Status.PAUSED})

#: The one transition table. Every backend consults it (``sources_of``), so a
#: status change that is not listed here is refused everywhere alike.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING}),
    # RUNNING -> PENDING is a reroute (owner died) or a hand-back (shutdown);
    # RUNNING -> FAILED also covers a reroute past max_attempts.
    Status.RUNNING: frozenset({Status.SUCCESS, Status.FAILED, Status.PAUSED, Status.PENDING}),
    Status.PAUSED: frozenset({Status.RUNNING, Status.PENDING, Status.FAILED}),
    Status.SUCCESS: frozenset(),
    # FAILED -> PENDING: an operator retries it (``pprunner retry``)
    Status.FAILED: frozenset({Status.PENDING}),
}


def check_transition(old: Status, new: Status, invocation_id: str = "") -> None:
    """Raise IllegalTransition unless the table allows ``old -> new``."""
    if new not in TRANSITIONS[old]:
        what = f"invocation {invocation_id}: " if invocation_id else ""
        raise IllegalTransition(f"{what}cannot go from {old} to {new}")


def sources_of(new: Status) -> frozenset[Status]:
    """The statuses from which ``new`` may be entered (for atomic SQL/Lua guards)."""
    return frozenset(old for old, targets in TRANSITIONS.items() if new in targets)


def type_name(exc: BaseException) -> str:
    """How errors name an exception's type: ``module.Qualname``, bare for built-ins."""
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


@attrs.frozen
class ErrorInfo:
    """Why an invocation attempt failed, readable without the task's code.

    Stored as JSON whatever the app's serializer: an error must stay
    readable even when the payload could not be decoded.
    """

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type=type_name(exc), message=str(exc), traceback=text)

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> ErrorInfo | None:
        return cls(**json.loads(text)) if text else None


@attrs.frozen(repr=False)
class Invocation:
    """One call of one task: what to run, and what became of it."""

    id: str
    task: str
    #: the encoded ``{"args": [...], "kwargs": {...}}``
    payload: bytes
    #: the name of the serializer that encoded ``payload`` (and will encode the result)
    serializer: str
    status: Status = Status.PENDING
    owner: str | None = None
    #: attempts started so far; a claim raises it, a graceful hand-back gives it back
    attempts: int = 0
    max_attempts: int = 1
    enqueued_at: float = attrs.Factory(time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: bytes | None = None
    #: the error of the last failed attempt (kept when a reroute retries it)
    error: ErrorInfo | None = None
    #: not to be claimed before this time (a retry's back-off)
    not_before: float | None = None
    #: the error of every failed attempt, oldest first
    history: tuple[ErrorInfo, ...] = ()
    #: while PAUSED: the invocations it waits for
    waiting_for: tuple[str, ...] = ()
    #: small string metadata its producer attached (``pprunner_enqueue``), kept as it
    #: was through retries and reroutes: a trace context, say. Read-only; left out of
    #: the hash, as a dict cannot be hashed. See :func:`check_headers` for the bound.
    headers: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def __repr__(self) -> str:
        owner = f" owner={self.owner}" if self.owner else ""
        return (
            f"<Invocation {self.id} {self.task} {self.status}{owner} "
            f"attempt {self.attempts}/{self.max_attempts}>"
        )


#: the most bytes (UTF-8) an invocation's or a call's headers may take, keys and
#: values together: room for a W3C ``traceparent``, ``tracestate`` and some baggage,
#: while every claim, hand-over and reroute still carries them at no noticeable cost
MAX_HEADERS_SIZE = 8192


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` as a job carries them, or a ValueError saying what is wrong:
    string keys (not empty) and values only, at most :data:`MAX_HEADERS_SIZE` bytes."""
    size = 0
    for key, value in headers.items():
        if not (isinstance(key, str) and key and isinstance(value, str)):
            raise ValueError(f"header {key!r}: {value!r}: headers are non-empty string "
                                "keys with string values")
        size += len(key.encode()) + len(value.encode())
    if size > MAX_HEADERS_SIZE:
        raise ValueError(f"headers take {size} bytes; at most {MAX_HEADERS_SIZE} are "
                            f"allowed (keys: {', '.join(sorted(headers))})")
    return dict(headers)


class RunnerKind(str, enum.Enum):
    SUPERVISOR = "supervisor"
    WORKER = "worker"
    INLINE = "inline"

    def __str__(self) -> str:
        return self.value


def this_host() -> str:
    """The host name runners record: ``$PPRUNNER_HOST`` or the machine's name."""
    return os.environ.get("PPRUNNER_HOST") or socket.gethostname()


@attrs.frozen
class RunnerInfo:
    """A runner (supervisor or worker) as the heartbeat records it."""

    id: str
    kind: RunnerKind
    pid: int
    #: ``$PPRUNNER_HOST`` or the host name: what ``pprunner scale`` and recovery logs use
    host: str = attrs.Factory(this_host)
    #: the supervisor this runner belongs to (its own id for a supervisor)
    supervisor: str = ""
    #: the worker's slot number (1..N); 0 for a supervisor
    slot: int = 0
    started_at: float = attrs.Factory(time.time)
    heartbeat_at: float = attrs.Factory(time.time)
    #: where a worker is in its life as its supervisor sees it (``booting``, ``serving``,
    #: ``retiring``, ``stopping``: :class:`pprunner.pool.Phase`), refreshed by every
    #: heartbeat; "" for a supervisor, an inline runner, or a store that keeps no phase
    phase: str = ""


@attrs.frozen
class Returned:
    """What the execute hook returns: the task's value, even when it is None."""

    value: Any


def new_invocation_id() -> str:
    """A random id that sorts by creation time (milliseconds, then randomness)."""
    return f"{int(time.time() * 1000):012x}{os.urandom(6).hex()}"


def counts_template() -> dict[Status, int]:
    return dict.fromkeys(Status, 0)


def ended_template() -> dict[Status, int]:
    """Zero for each final status, in the table's order: what ``Admin.ended_since`` fills."""
    return {status: 0 for status in Status if status.is_final}
