"""Log lines that name the runner, the pid and the invocation.

The current invocation id lives in a context variable that the worker sets
around each task, so lines logged by task code carry it too.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Iterator
from typing import TextIO

FORMAT = ("%(asctime)s %(levelname)-7s [%(runner)s pid=%(process)d inv=%(invocation)s] "
          "%(name)s: %(message)s")

#: starts every log line on a terminal: back to the start of the line, erase it. A
#: ``--burst`` progress bar is redrawn in place there without a newline; a line logged
#: by any process (workers have no way to the bar's ``tqdm.write``) thus replaces it
#: instead of continuing it, and the bar comes back below at its next refresh.
ERASE_LINE = "\r\x1b[K"

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
    handler = stream_handler(sys.stderr)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def stream_handler(stream: TextIO) -> logging.Handler:
    """A handler writing pprunner's format to ``stream``; on a terminal each line
    first erases whatever shares its line (see :data:`ERASE_LINE`)."""
    terminal = stream.isatty() and os.environ.get("TERM") != "dumb"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter((ERASE_LINE if terminal else "") + FORMAT))
    handler.addFilter(ContextFilter())
    return handler


@contextlib.contextmanager
def invocation_scope(invocation_id: str) -> Iterator[None]:
    token = enter_invocation(invocation_id)
    try:
        yield
    finally:
        leave_invocation(token)


def enter_invocation(invocation_id: str) -> contextvars.Token[str]:
    """:func:`invocation_scope`'s start, for a caller that keeps its own context object;
    pass what it returns to :func:`leave_invocation`."""
    return _invocation.set(invocation_id)


def leave_invocation(token: contextvars.Token[str]) -> None:
    _invocation.reset(token)
