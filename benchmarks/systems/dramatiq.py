"""Dramatiq on Redis, its worker command started as its docs start it.

The pool is ``dramatiq benchmarks.peer_apps.dramatiq_app --processes 2
--threads 1``: a main process and two forked worker processes of one
worker thread each, consuming from a ``RedisBroker``; results go to Redis
too (the ``Results`` middleware). The benchmark process is the producer
(``actor.send``, ``message.get_result``).

The system has Redis database 14 to itself
(:data:`~benchmarks.peer_apps.dramatiq_app.DATABASE`, see
:class:`~.redis_database.OwnRedisDatabase`).
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from ..system import WORKERS
from .cli_pool import LogReadySystem, console_script
from .redis_database import OwnRedisDatabase

#: milliseconds of one blocking wait for a result; between two, the pool is checked
BLOCK_MS = 1000
#: milliseconds a worker may take to stop gracefully (the default is 10 minutes, and
#: a parent blocked on its children would hold its worker that long)
SHUTDOWN_TIMEOUT_MS = "1000"


def _app() -> ModuleType:
    """The app module; it imports dramatiq, so only once it is known to be installed."""
    from ..peer_apps import dramatiq_app

    return dramatiq_app


class DramatiqRedis(OwnRedisDatabase, LogReadySystem):
    name = "dramatiq-redis"
    requires = ("dramatiq", "redis")
    #: "[PID 123] [MainThread] [dramatiq.WorkerProcess(0)] [INFO] Worker process is
    #: ready for action.": logged once the worker's consumer and worker threads run
    ready_line = re.compile(r"\[PID (\d+)\][^\n]*Worker process is ready for action")
    #: SIGKILL at the round's end: the graceful stop takes ~3 s, and the database
    #: is emptied afterwards anyway
    graceful_stop = False

    @classmethod
    def url(cls) -> str:
        return str(_app().URL)

    def setup(self, workdir: Path) -> None:
        super().setup(workdir)
        self.app = _app()
        self.cleanup.callback(self.app.broker.close)  # the producer's connections

    def command(self) -> list[str]:
        return [console_script("dramatiq"), "benchmarks.peer_apps.dramatiq_app",
                "--processes", str(WORKERS), "--threads", "1",
                "--worker-shutdown-timeout", SHUTDOWN_TIMEOUT_MS]

    def send(self, task: str, *args: Any) -> Any:
        return getattr(self.app, task).send(*args)

    def result(self, handle: Any, timeout: float) -> Any:
        """Blocks in Redis (BRPOPLPUSH) a second at a time: the backend's
        blocking wait has whole-second timeouts, so a wait may end up to 1 s late.
        With no time left, one look that does not block."""
        from dramatiq.results import ResultMissing, ResultTimeout

        deadline = time.monotonic() + timeout
        while True:
            try:
                return handle.get_result(block=timeout > 0, timeout=BLOCK_MS)
            except (ResultMissing, ResultTimeout):
                self.pool.alive()
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no result within {timeout:g} s") from None

    def drain_times(self, noops: Any, count: int, until: float) -> list[tuple[float, float]]:
        """Each no-op returns ``[started, value, finished]``, taken in the worker.
        The last one sent is waited for first, so the producer sleeps in one
        blocking read while the pool drains; the others are then (nearly) all there."""
        times = []
        for message in [noops[-1], *noops[:-1]]:
            with contextlib.suppress(TimeoutError):
                started, _, finished = self.result(message, until - time.monotonic())
                times.append((started, finished))
        return times


class DramatiqRedisPprunner(DramatiqRedis):
    """The same app, broker and arguments under ``pprunner dramatiq``: Dramatiq's own
    Worker in each of pprunner's supervised worker processes."""

    name = "dramatiq-redis-pprunner"
    requires = ("dramatiq", "redis", "pprunner_plugins.dramatiq")
    #: "[runner pid=123 inv=-] pprunner.worker: worker 1 ready (host consumer)"
    ready_line = re.compile(r"pid=(\d+) [^\n]*pprunner\.worker: worker \d+ ready")

    def command(self) -> list[str]:
        return [console_script("pprunner"), "dramatiq", *super().command()[1:]]
