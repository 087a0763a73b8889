"""Log lines that name the runner, the pid and the invocation.

The current invocation id lives in a context variable that the worker sets
around each task, so lines logged by task code carry it too.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator

FORMAT = ("%(asctime)s %(levelname)-7s [%(runner)s pid=%(process)d inv=%(invocation)s] "
          "%(name)s: %(message)s")

_invocation: contextvars.ContextVar[str] = contextvars.ContextVar("pprunner_invocation",
                                                                   default="-")
_runner = "-"


class ContextFilter(logging.Filter):
    """Adds ``runner`` and ``invocation`` to every record that passes a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.runner = _runner
        record.invocation = _invocation.get()
        return True


def setup(level: str, runner_id: str) -> None:
    """Send this process's logs to stderr in pprunner's format (CLI and workers only)."""
    global _runner
    _runner = runner_id
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


@contextlib.contextmanager
def invocation_scope(invocation_id: str) -> Iterator[None]:
    token = _invocation.set(invocation_id)
    try:
        yield
    finally:
        _invocation.reset(token)
