"""One task message in the pool, and how pprunner's events become Celery's callbacks.

Celery's consumer hands the pool a trace function with four callbacks; the
events pprunner's supervisor reports map onto them as billiard's pool calls
them, with billiard's own exceptions and messages, so Celery's
``Request`` (acks, ``task_reject_on_worker_lost``, ``task_retry_on_worker_lost``,
revokes, failure events) cannot tell the pools apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
from billiard.common import human_status
from billiard.einfo import ExceptionInfo
from billiard.exceptions import Terminated, TimeLimitExceeded, WorkerLostError

from pprunner.jobs import Call, Cancelled, Event, Failed, Finished, Lost, Started, TimedOut

Callback = Callable[..., Any] | None


def exception_info(exc: BaseException) -> ExceptionInfo:
    """billiard's ExceptionInfo for ``exc``, with a traceback, as its pool builds them."""
    try:
        raise exc
    except BaseException:
        return ExceptionInfo()


@attrs.define(eq=False)
class Job:
    """A task message the pool runs: its call, Celery's callbacks, and billiard's
    job number (prefork's "Job: N" in a lost worker's message)."""

    number: int
    call: Call
    callback: Callback = None
    accept_callback: Callback = None
    error_callback: Callback = None
    timeout_callback: Callback = None
    pid: int | None = None
    #: its child waits in ``result.get()`` (its slot is lent)
    waiting: bool = False
    #: set by :meth:`terminate` before it started, or by the pool's terminate_job
    terminated_by: int | None = None
    #: cancels the parent-side soft time limit warning
    cancel_soft_warning: Callable[[], None] | None = None
    #: withdraws the call if no child started it yet (the pool's dispatcher.cancel)
    withdraw: Callable[[str], bool] | None = attrs.field(default=None, repr=False)
    #: tells the pool this job ended (frees its slot); set by the pool
    on_end: Callable[[Job], None] | None = attrs.field(default=None, repr=False)

    def terminate(self, signum: int) -> None:
        """Celery's ``Request.terminate`` calls this on the pool's result object: a
        job no child started yet is withdrawn and ends as terminated at once; a
        running one is the pool's ``terminate_job``'s."""
        if self.pid is None and self.withdraw is not None and self.withdraw(self.call.id):
            self.terminated_by = signum
            self.ended()
            _call(self.error_callback, exception_info(Terminated(-signum)))

    def notify(self, event: Event) -> None:
        """What a pprunner event means to Celery (on the host's loop, or the
        dispatcher thread for blocking consumers)."""
        if isinstance(event, Started):
            self.pid = event.pid
            _call(self.accept_callback, event.pid, time.monotonic())
            return
        if isinstance(event, Finished) and self._ran_past_soft_limit(event.value):
            self.soft_limit_reached()  # the child's timer beat the parent's by a hair
        self.ended()
        if isinstance(event, Finished):
            _call(self.callback, event.value)
        elif isinstance(event, Failed):
            error = event.error.exception or Exception(f"{event.error.type}: "
                                                       f"{event.error.message}")
            _call(self.error_callback, exception_info(error))
        elif isinstance(event, Lost) and self.terminated_by is not None:
            _call(self.error_callback, exception_info(Terminated(-self.terminated_by)))
        elif isinstance(event, Lost):
            _call(self.error_callback, exception_info(WorkerLostError(
                f"Worker exited prematurely: {human_status(event.exitcode)} "
                f"Job: {self.number}.")))
        elif isinstance(event, TimedOut):
            _call(self.error_callback, exception_info(TimeLimitExceeded(event.limit)))
            _call(self.timeout_callback, soft=False, timeout=event.limit)
        elif isinstance(event, Cancelled):
            pass  # the pool stopped before a child took it: never acked, so redelivered

    def _ran_past_soft_limit(self, value: Any) -> bool:
        """Whether the parent's soft-limit warning is still due: the task ran (by
        the runtime Celery's trace function measured in the child) at least its
        soft limit, and the parent's timer has not fired yet."""
        soft = self.call.soft_time_limit
        if self.cancel_soft_warning is None or not soft:
            return False
        runtime = value[2] if isinstance(value, tuple) and len(value) == 3 else None
        return isinstance(runtime, float) and runtime >= soft

    def soft_limit_reached(self) -> None:
        """The parent's side of a soft time limit: Celery logs a warning (the task
        got the exception in its child)."""
        self.cancel_soft_warning = None
        _call(self.timeout_callback, soft=True, timeout=self.call.soft_time_limit)

    def ended(self) -> None:
        if self.cancel_soft_warning is not None:
            self.cancel_soft_warning()
            self.cancel_soft_warning = None
        if self.on_end is not None:
            on_end, self.on_end = self.on_end, None
            on_end(self)


def _call(callback: Callback, *args: Any, **kwargs: Any) -> None:
    if callback is not None:
        callback(*args, **kwargs)
