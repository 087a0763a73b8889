"""Dramatiq's fork functions (``--fork-function`` and middleware ``forks``, such as the
Prometheus middleware's exposition server), run beside pprunner's workers.

``dramatiq`` starts each in a process of its own once its workers are up and
stops them with its workers; :class:`ForkProcesses` does the same from the
supervisor's hooks: each fork starts once every worker has first booted, is
stopped with SIGTERM when the supervisor stops, and is not restarted if it
ends (its exit is logged). A reload (SIGHUP) replaces the workers and leaves
the forks running.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import types
from collections.abc import Sequence
from typing import Any

from dramatiq.cli import import_object

import pprunner
from pprunner import log

logger = logging.getLogger("pprunner.dramatiq")

#: seconds a fork gets to end after SIGTERM before it is killed
FORK_STOP_GRACE = 10.0


def fork_paths(forks: Sequence[str], broker: Any) -> list[str]:
    """The fork functions ``dramatiq`` would start: ``--fork-function``'s, then each
    middleware's ``forks``, as ``module:function``."""
    return [*forks, *(f"{fork.__module__}:{fork.__name__}"
                      for middleware in broker.middleware for fork in middleware.forks)]


def run_fork(path: str, log_level: str) -> None:
    """A fork process: SIGTERM ends it; SIGINT is the supervisor's to handle."""
    log.setup(log_level, "fork")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    function = import_object(path)[1]
    logger.info("fork process %r is ready for action", path)
    sys.exit(function())


def _stop(signum: int, frame: types.FrameType | None) -> None:
    raise SystemExit(0)


class ForkProcesses:
    """A supervisor plugin: the fork processes' lives (the module docstring)."""

    def __init__(self, paths: Sequence[str], processes: int, log_level: str) -> None:
        self.paths = list(paths)
        self.processes = processes
        self.log_level = log_level
        self._ready = 0
        self._started: list[Any] = []

    @pprunner.hookimpl
    def pprunner_worker_ready(self, runner: pprunner.RunnerInfo) -> None:
        self._ready += 1
        if self._ready != self.processes:
            return
        spawn = multiprocessing.get_context("spawn")
        for path in self.paths:
            process = spawn.Process(target=run_fork, args=(path, self.log_level),
                                    name=f"dramatiq fork {path}")
            process.start()
            self._started.append(process)

    @pprunner.hookimpl
    def pprunner_supervisor_stopped(self, supervisor: Any) -> None:
        for process in self._started:
            process.terminate()
        for process in self._started:
            process.join(FORK_STOP_GRACE)
            if process.exitcode is None:
                process.kill()
                process.join()
            logger.info("%s ended with exit code %s", process.name, process.exitcode)
