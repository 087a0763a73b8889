"""Every exception pprunner raises on purpose.

Each names what went wrong in one line a user can act on; the CLI prints
``str(error)`` and maps the class to an :class:`~pprunner.exitcodes.ExitCode`.
"""

from __future__ import annotations

from typing import Any


class PprunnerError(Exception):
    """Base class: anything pprunner reports deliberately."""


class ConfigError(PprunnerError):
    """A setting has a bad value or is unknown; the message names its source."""


class AppLoadError(PprunnerError):
    """``module:attribute`` could not be imported or does not name an App."""


class PluginError(PprunnerError):
    """A name (backend URL scheme, serializer) that no loaded plugin provides."""


class UnknownTask(PprunnerError):
    """A pulled invocation names a task its app did not register (it fails, unrun)."""


class MissingCapability(PluginError):
    """The configured backend does not declare an optional capability that was needed
    (:class:`~pprunner.backend.Pausing`, ``Admin``, ``Recovery``); the message names both."""


class BackendError(PprunnerError):
    """The backend cannot be reached or refused an operation for good."""


class SerializationError(PprunnerError):
    """A value could not be encoded or a payload could not be decoded."""


class SerializerNotAccepted(SerializationError):
    """The payload's serializer is not in the app's ``accept_serializers``.

    Checked before anything is decoded: a message naming ``pickle`` must
    not reach ``pickle.loads`` in an app that never chose it.
    """


class SignatureInvalid(SerializationError):
    """A payload's HMAC is missing, wrong, or made with a key the app does not accept."""


class PayloadTooLarge(SerializationError):
    """Encoded arguments or a result exceed ``max_payload_size``."""


class UnknownInvocation(PprunnerError, KeyError):
    """No invocation has this id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class IllegalTransition(PprunnerError):
    """A status change that the transition table does not allow."""


class NotOwner(IllegalTransition):
    """A runner tried to finish an invocation it does not own (any more).

    This is how a late result from a runner that lost its invocation is
    refused: the one recorded outcome stays the owner's.
    """


class Retry(Exception):
    """Raise inside a task to ask for another attempt (within ``max_attempts``).

    :param delay: seconds before the next attempt; None uses the task's back-off.
    :param reason: recorded as the attempt's error message.
    """

    def __init__(self, reason: str = "the task asked for a retry",
                 delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit runs out.

    An ordinary Exception on purpose: the task may catch it to clean up (and
    should then return or raise soon: the hard limit kills the worker).
    """


class WaitCycle(PprunnerError):
    """A task waited, directly or through others, for an invocation that waits for it."""


class TimeLimitExceeded(Exception):
    """Names the hard time limit in a task's ``retry_on``.

    It is never raised inside the task (the worker is killed); an invocation
    killed at its limit fails with this error type, or is retried when its
    task's ``retry_on`` covers this class.
    """


class WorkerLost(PprunnerError):
    """The worker process running a pushed call died under it (``pprunner.Executor``).

    :ivar pid: the worker's pid.
    :ivar exitcode: its exit code; negative: killed by that signal.
    :ivar signal: the signal's name (``"SIGKILL"``) when a signal ended it.
    """

    def __init__(self, message: str, *, pid: int = 0, exitcode: int | None = None,
                 signal: str | None = None) -> None:
        super().__init__(message)
        self.pid, self.exitcode, self.signal = pid, exitcode, signal

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_worker_lost, (str(self), self.pid, self.exitcode, self.signal))


def _rebuild_worker_lost(message: str, pid: int, exitcode: int | None,
                         signal: str | None) -> WorkerLost:
    return WorkerLost(message, pid=pid, exitcode=exitcode, signal=signal)


class ResultTimeout(PprunnerError, TimeoutError):
    """``Handle.result(timeout=...)`` ran out before the invocation ended."""


class RemoteTraceback(Exception):
    """Carries a worker's traceback text, chained as ``__cause__`` of TaskFailed.

    Python prints a cause before the exception itself, so an uncaught
    TaskFailed shows the worker-side stack first, as a local error would.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


class TaskFailed(PprunnerError):
    """The invocation ended FAILED; carries the remote error.

    :ivar invocation_id: the failed invocation.
    :ivar task: the task name.
    :ivar remote_type: qualified name of the exception raised in the worker
        (``WorkerDied`` when the worker process died).
    :ivar remote_message: its message.
    :ivar remote_traceback: the formatted worker-side traceback, or ``""``.
    """

    def __init__(
        self,
        invocation_id: str,
        task: str,
        remote_type: str,
        remote_message: str,
        remote_traceback: str = "",
    ) -> None:
        super().__init__(invocation_id, task, remote_type, remote_message, remote_traceback)
        self.invocation_id = invocation_id
        self.task = task
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        if remote_traceback:
            self.__cause__ = RemoteTraceback(remote_traceback)

    def __str__(self) -> str:
        return (
            f"task {self.task!r} (invocation {self.invocation_id}) failed: "
            f"{self.remote_type}: {self.remote_message}"
        )
