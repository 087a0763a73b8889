"""Huey 3.5: ``RedisHuey`` and its consumer with two worker processes.

The pool is ``python -m huey.bin.huey_consumer
benchmarks.peer_apps.huey_app.huey --workers 2 --worker-type process``
(the ``huey_consumer`` command) with Huey's defaults otherwise: INFO
logging, a scheduler process, and a health check every 10 s that restarts
dead workers. Its database is 13 (see :mod:`benchmarks.peer_apps.huey_app`).
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from .. import procs, system
from ..system import WORKERS, ThroughputRun
from .redis_peer import RedisPeer

#: the throughput's own bound, on top of a minute
THROUGHPUT_S_PER_TASK = 1 / 100
#: a task's start ("Executing ...") and finish ("... executed in ...") in the consumer's log
LOG_LINE = re.compile(r"^\[(?P<at>[^\]]+)\] INFO:huey:\d+:(?P<what>Executing |.* executed in )")
#: the same lines in pprunner's log format, as ``pprunner huey`` writes them
PPRUNNER_LOG_LINE = re.compile(r"^(?P<at>\S+ \S+) INFO +\[[^\]]*\] huey: "
                               r"(?P<what>Executing |.* executed in )")
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


class HueyRedis(RedisPeer):
    name = "huey-redis"
    requires = ("huey", "redis")
    app_module = "benchmarks.peer_apps.huey_app"
    dequeue_command = "brpop"
    log_line: re.Pattern[str] = LOG_LINE

    def command(self) -> list[str]:
        return system.python("-m", "huey.bin.huey_consumer", "benchmarks.peer_apps.huey_app.huey",
                             "--workers", str(WORKERS), "--worker-type", "process")

    def send(self, task: str, *args: Any) -> Any:
        return getattr(self.tasks, task)(*args)

    def result(self, handle: Any, timeout: float) -> Any:
        """``result.get(blocking=True, timeout=...)``: Huey polls the result hash,
        starting 50 ms apart."""
        from huey.exceptions import ResultTimeout

        try:
            return handle.get(blocking=True, timeout=max(timeout, 0.0))
        except ResultTimeout:
            raise TimeoutError(f"no result for task {handle.id} within {timeout:g} s") from None

    def throughput(self, count: int, cap_s: float) -> ThroughputRun:
        for x in range(count):
            self.tasks.noop(x)
        started = time.perf_counter()
        self._launch()
        procs.wait_until(lambda: self._results() >= count, 60 + count * THROUGHPUT_S_PER_TASK,
                         f"{count} results", poll=0.01)
        wall = time.perf_counter() - started
        return ThroughputRun(count=count, wall_s=wall, drain_s=self._drain_s(count))

    def _results(self) -> int:
        self.pool.alive()
        return int(self.tasks.huey.result_count())

    def _drain_s(self, count: int) -> float:
        """First "Executing" to last "executed in" in the consumer's log (Huey
        logs both for every task, at INFO, with millisecond timestamps; the
        latter just before it stores the result)."""
        starts: list[datetime] = []
        ends: list[datetime] = []
        for line in self.pool.text().splitlines():
            if match := self.log_line.match(line):
                at = datetime.strptime(match["at"], LOG_TIME)
                (starts if match["what"] == "Executing " else ends).append(at)
        if len(starts) != count or len(ends) != count:
            raise RuntimeError(f"the log shows {len(starts)} starts and {len(ends)} finishes "
                               f"of {count} tasks")
        return (max(ends) - min(starts)).total_seconds()


class HueyRedisPprunner(HueyRedis):
    """The same app and options under ``pprunner huey``: Huey's worker loop in each of
    pprunner's supervised workers, Huey's scheduler in the supervisor."""

    name = "huey-redis-pprunner"
    requires = ("huey", "redis", "pprunner_plugins.huey")
    log_line = PPRUNNER_LOG_LINE

    def command(self) -> list[str]:
        return system.python("-m", "pprunner", "huey", "benchmarks.peer_apps.huey_app.huey",
                             "--workers", str(WORKERS))
