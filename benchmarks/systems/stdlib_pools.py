"""``multiprocessing.Pool`` and ``ProcessPoolExecutor``: the floor any pool pays.

No queue, no persistence, no retries: what a pool of two processes costs
when nothing else is in the way. Latency and crash recovery use a pool in
this process; throughput and idle cost launch one in a process of its own
(:mod:`benchmarks.poolhost`), measured from that launch like ``pprunner run``.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import ClassVar

from .. import pools, procs, system, workload
from ..system import WORKERS, CrashRun, IdleRun, System, ThroughputRun


class _StdlibPool(System):
    #: which pool :func:`benchmarks.pools.open_pool` builds
    kind: ClassVar[str]

    def _pool(self) -> pools.Pool:
        return self.cleanup.enter_context(pools.open_pool(self.kind, WORKERS))

    def _host(self, *command: str) -> subprocess.Popen[bytes]:
        argv = system.python("-m", "benchmarks.poolhost", self.kind, str(WORKERS), *command)
        return self.cleanup.enter_context(procs.process_group(
            argv, cwd=self.workdir, env=system.child_env(), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE))

    def throughput(self, count: int, cap_s: float) -> ThroughputRun:
        started = time.perf_counter()
        host = self._host("throughput", str(count))
        assert host.stdout is not None
        drain = procs.read_json_line(host.stdout, timeout=60 + count / 100)["drain_s"]
        code = host.wait(timeout=30)
        wall = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"the pool host exited with {code}")
        return ThroughputRun(count=count, wall_s=wall, drain_s=drain)

    def latency(self, count: int, gap_s: float) -> list[float]:
        pool = self._pool()
        return system.sample_latency(lambda: pool.submit(workload.stamp).result(timeout=10),
                                     count, gap_s)

    def crash_recovery(self, task_s: float, bound_s: float) -> CrashRun:
        pool = self._pool()
        for x in range(system.WARMUP_CALLS):  # every worker is started by now
            pool.submit(workload.noop, x).result(timeout=10)
        before = procs.children(os.getpid())
        marker = self.workdir / "attempts.log"
        pending = pool.submit(workload.announce_and_sleep, str(marker), task_s)
        killed_at = system.start_and_kill(marker)
        retry = system.retry_started(marker)

        def broken() -> str | None:
            """The pool gave up on the task (ProcessPoolExecutor: BrokenProcessPool)."""
            error = pending.exception(0) if pending.done() else None
            return None if error is None else f"never ({type(error).__name__})"

        def replaced() -> float | None:
            return time.time() if procs.children(os.getpid()) - before else None

        return system.watch_recovery(killed_at, bound_s, rerun=lambda: broken() or retry(),
                                     ready=lambda: broken() or replaced())

    def idle_cost(self, window_s: float) -> IdleRun:
        launched_at = time.time()
        host = self._host("idle")
        assert host.stdout is not None
        started_at = procs.read_json_line(host.stdout, timeout=30)["started_at"]
        return system.idle_run(host.pid, launched_at, started_at, window_s)


class MultiprocessingPool(_StdlibPool):
    name = "multiprocessing.Pool"
    kind = "pool"


class ProcessPoolExecutorSystem(_StdlibPool):
    name = "ProcessPoolExecutor"
    kind = "executor"
