"""When a failed attempt is tried again, and after how long."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import attrs

from .errors import Retry

if TYPE_CHECKING:
    from .invocation import Invocation
    from .task import Task


@attrs.frozen
class Backoff:
    """Pause before attempt n+1: ``base * factor**(n-1)``, at most ``max`` seconds.

    ``factor=1`` is a fixed pause. With ``jitter`` the pause is drawn between
    half of it and all of it, so invocations that failed together (a database
    that went away) do not all come back at the same moment.
    """

    base: float = 1.0
    factor: float = 2.0
    max: float = 600.0
    jitter: bool = True

    def __attrs_post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.max < 0:
            raise ValueError(f"bad back-off {self!r}: need base >= 0, factor >= 1, max >= 0")

    def delay(self, attempt: int) -> float:
        pause = min(self.base * self.factor ** max(attempt - 1, 0), self.max)
        return random.uniform(pause / 2, pause) if self.jitter else pause


def retry_delay(task: Task[..., object], invocation: Invocation,
                exc: BaseException) -> float | None:
    """Seconds until the next attempt if ``exc`` earns one, else None.

    A task's ``Retry`` always asks; other exceptions retry when they are
    instances of the task's ``retry_on``. Either way only while attempts
    are left.
    """
    if invocation.attempts >= invocation.max_attempts:
        return None
    if isinstance(exc, Retry):
        return task.retry_backoff.delay(invocation.attempts) if exc.delay is None else exc.delay
    if task.retry_on and isinstance(exc, task.retry_on):
        return task.retry_backoff.delay(invocation.attempts)
    return None
