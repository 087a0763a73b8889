"""A peer's own worker command as the pool, the benchmark process as its producer.

Dramatiq, pynenc, RQ and Huey are measured so. The pool is the peer's
command-line worker, started as its docs say to start it, in the round's
folder with its output in a log file there (:class:`~benchmarks.pool_process.LoggedPool`);
the benchmark sends tasks and waits for their results through the peer's
own client API. :class:`CliPoolSystem` runs latency, idle cost and wait on
subtask the same way for all four: a peer says how to launch its pool,
send a task, wait for a result, and which of its workers are ready.

:class:`LogReadySystem` is what Dramatiq and pynenc share besides: each
worker announces in the log, with its pid, when it is ready for work, and
their throughput and crash recovery rounds go the same way. RQ and Huey
see readiness in Redis instead (:class:`~.redis_peer.RedisPeer`).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from .. import procs, system
from ..pool_process import LoggedPool
from ..system import WORKERS, CrashRun, IdleRun, System, ThroughputRun

#: seconds a pool may take to boot its workers
BOOT_TIMEOUT_S = 30.0
#: seconds the first task of an idle-cost round may take (it includes the boot)
FIRST_TASK_TIMEOUT_S = 30.0
#: seconds a latency sample's result may take
SAMPLE_TIMEOUT_S = 10.0


def console_script(name: str) -> str:
    """The peer's command, installed beside this interpreter (the same virtualenv)."""
    return str(Path(sys.executable).with_name(name))


class CliPoolSystem(System):
    """A peer whose pool is its worker command; subclasses fill in the hooks."""

    #: seconds between two looks at which workers are ready
    ready_poll_s: ClassVar[float] = 0.005
    #: the round's end stops the pool with SIGTERM first (see :class:`LoggedPool`)
    graceful_stop: ClassVar[bool] = True

    # -- hooks -------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The worker command, as its docs give it."""
        raise NotImplementedError

    def pool_env(self) -> dict[str, str]:
        """Settings the worker command gets from its environment."""
        return {}

    def send(self, task: str, *args: Any) -> Any:
        """Enqueue the app's task ``task``; a handle for :meth:`result`."""
        raise NotImplementedError

    def result(self, handle: Any, timeout: float) -> Any:
        """The handle's result; TimeoutError once ``timeout`` seconds have passed
        without it (a little later is fine), RuntimeError if the pool has exited."""
        raise NotImplementedError

    def ready_workers(self) -> set[int]:
        """The workers ready for a task now (how a worker is named is the peer's)."""
        raise NotImplementedError

    def parent_args(self, children: int, bound_s: float) -> tuple[Any, ...]:
        """What a wait-on-subtask parent is sent with: how many children it has."""
        return (children,)

    # -- the pool ----------------------------------------------------------------------

    def setup(self, workdir: Path) -> None:
        super().setup(workdir)
        self.pool = LoggedPool(self.cleanup, workdir, graceful=self.graceful_stop)

    def _launch(self, *extra: str) -> subprocess.Popen[bytes]:
        return self.pool.launch([*self.command(), *extra], system.child_env(**self.pool_env()))

    def _wait_ready(self) -> None:
        def ready() -> bool:
            self.pool.alive()
            return len(self.ready_workers()) >= WORKERS
        procs.wait_until(ready, BOOT_TIMEOUT_S, f"{WORKERS} workers to be ready",
                         poll=self.ready_poll_s)

    def _start(self) -> subprocess.Popen[bytes]:
        process = self._launch()
        self._wait_ready()
        return process

    # -- scenarios ---------------------------------------------------------------------

    def latency(self, count: int, gap_s: float) -> list[float]:
        self._start()
        return system.sample_latency(
            lambda: float(self.result(self.send("stamp"), SAMPLE_TIMEOUT_S)), count, gap_s)

    def idle_cost(self, window_s: float) -> IdleRun:
        first = self.send("stamp")  # queued before launch: the first task the pool runs
        launched_at = time.time()
        process = self._launch()
        started_at = float(self.result(first, FIRST_TASK_TIMEOUT_S))
        self._wait_ready()
        return system.idle_run(process.pid, launched_at, started_at, window_s)

    def wait_on_subtask(self, parents: int, children: int, bound_s: float) -> system.Value:
        self._start()

        def send_and_wait() -> list[Any]:
            deadline = time.monotonic() + bound_s
            handles = [self.send("parent_of_noops", *self.parent_args(children, bound_s))
                       for _ in range(parents)]
            return [self.result(h, deadline - time.monotonic()) for h in handles]

        return system.time_parents(send_and_wait, TimeoutError, parents, children, bound_s)


class LogReadySystem(CliPoolSystem):
    """A peer whose workers say in the pool's log when they are ready."""

    #: a worker's "ready for work" line in the pool's log; group 1 is its pid
    ready_line: ClassVar[re.Pattern[str]]

    # -- hooks -------------------------------------------------------------------------

    def queue_noops(self, count: int) -> Any:
        """Enqueue ``count`` no-op tasks (the pool is not running yet)."""
        return [self.send("noop", x) for x in range(count)]

    def drain_times(self, noops: Any, count: int, until: float) -> list[tuple[float, float]]:
        """Wait until every no-op is done, or ``until`` (``time.monotonic()``) has
        passed; then when each one done started and finished."""
        raise NotImplementedError

    # -- readiness and scenarios -------------------------------------------------------

    def ready_workers(self) -> set[int]:
        """Living workers (pids) that have said in the log that they are ready."""
        announced = {int(pid) for pid in self.ready_line.findall(self.pool.text())}
        return {pid for pid in announced if (s := procs.stat(pid)) is not None and s.alive}

    def throughput(self, count: int, cap_s: float) -> ThroughputRun:
        noops = self.queue_noops(count)
        launched_at = time.time()
        self._launch()
        times = self.drain_times(noops, count, until=time.monotonic() + cap_s)
        if not times:
            raise RuntimeError(f"no task was done within {cap_s:g} s")
        first_started = min(started for started, _ in times)
        last_finished = max(finished for _, finished in times)
        wall: system.Value = last_finished - launched_at
        if len(times) < count:
            wall = system.stopped_at(cap_s, len(times), count)
        return ThroughputRun(count=len(times), wall_s=wall,
                             drain_s=last_finished - first_started)

    def crash_recovery(self, task_s: float, bound_s: float) -> CrashRun:
        process = self._start()
        before = self.ready_workers()
        marker = self.workdir / "attempts.log"
        self.send("announce_and_sleep", str(marker), task_s)
        killed_at = system.start_and_kill(marker)
        retry = system.retry_started(marker)

        def gone() -> str | None:
            """The whole pool has exited: nothing will run the task or replace the worker."""
            code = process.poll()
            return None if code is None else f"never (pool exited rc {code})"

        def replaced() -> float | None:
            return time.time() if self.ready_workers() - before else None

        return system.watch_recovery(killed_at, bound_s, rerun=lambda: retry() or gone(),
                                     ready=lambda: replaced() or gone())
