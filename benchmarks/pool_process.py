"""A pool's command, launched the way the benchmarks launch every pool.

pprunner, Celery, Dramatiq, pynenc, RQ and Huey are all measured through
their own command: it runs in its own process group in the round's folder
(so the round's cleanup ends it and all its workers), with stdout and
stderr appended to a log file there. A pool that exits when it should not
must fail the round at once with the end of that log, which says why,
instead of as a timeout much later.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

from . import procs

#: lines of the log an error shows
TAIL_LINES = 15


class LoggedPool:
    """One round's pool command and its log."""

    def __init__(self, cleanup: contextlib.ExitStack, workdir: Path, *,
                 name: str = "the pool", graceful: bool = True) -> None:
        #: the round's cleanup stack: the log and the process group go on it
        self.cleanup = cleanup
        self.workdir = workdir
        #: how errors name the pool ("pprunner run exited with code 1")
        self.name = name
        #: the round's end stops the pool with SIGTERM first (see :func:`procs.end_group`);
        #: False: SIGKILL at once, for a pool whose graceful stop takes seconds and
        #: saves nothing the round needs
        self.graceful = graceful
        self.log = workdir / "pool.log"
        self._process: subprocess.Popen[bytes] | None = None

    def launch(self, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the round's folder; the round's cleanup ends its
        process group first, then closes the log."""
        log = self.cleanup.enter_context(self.log.open("ab"))
        self._process = self.cleanup.enter_context(procs.process_group(
            argv, cwd=self.workdir, env=env, graceful=self.graceful, stdout=log, stderr=log))
        return self._process

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"{self.name} has not been launched")
        return self._process

    def alive(self) -> None:
        """Fail at once, with the log's end, if the pool has exited."""
        if (code := self.process.poll()) is not None:
            raise RuntimeError(f"{self.name} exited with code {code}:\n{self.tail()}")

    def text(self) -> str:
        """Everything the pool has logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self) -> str:
        return "\n".join(self.text().splitlines()[-TAIL_LINES:])
