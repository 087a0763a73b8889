"""``multiprocessing.Pool`` and ``ProcessPoolExecutor``: the floor any pool pays.

No queue, no persistence, no retries: what a pool of two processes costs
when nothing else is in the way. Latency, crash recovery and the executor
scenarios use a pool in this process; throughput and idle cost launch one in
a process of its own (:mod:`benchmarks.poolhost`), measured from that launch
like ``pprunner run``. :class:`BarePool` also measures loky's pool and
``pprunner.Executor`` (``systems/executors.py``): every pool the same way.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import subprocess
import time
from typing import ClassVar

from .. import pools, procs, system, workload
from ..system import (
    WORKERS,
    CrashRun,
    ExecutorThroughputRun,
    IdleRun,
    KillRun,
    System,
    ThroughputRun,
    Value,
)


class BarePool(System):
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

    def executor_throughput(self, count: int, chunksize: int) -> ExecutorThroughputRun:
        pool = self._warm_pool()
        expected = [x + 1 for x in range(count)]
        started = time.perf_counter()
        pending = [pool.submit(workload.noop, x) for x in range(count)]
        results = [call.result(timeout=60) for call in pending]
        submit_s = time.perf_counter() - started
        started = time.perf_counter()
        mapped = pool.map(workload.noop, range(count), chunksize)
        map_s = time.perf_counter() - started
        if results != expected or mapped != expected:
            raise RuntimeError("the pool returned wrong results")
        return ExecutorThroughputRun(count=count, submit_s=submit_s, map_s=map_s)

    def executor_kill(self, task_s: float, queued: int, bound_s: float) -> KillRun:
        pool = self._warm_pool()
        victim_marker, other_marker = self.workdir / "victim.log", self.workdir / "other.log"
        victim = pool.submit(workload.announce_and_sleep, str(victim_marker), task_s)
        others = [pool.submit(workload.announce_and_sleep, str(other_marker), task_s),
                  *(pool.submit(workload.noop, x) for x in range(queued))]
        procs.wait_until(lambda: workload.attempts(other_marker), 30, "the other worker's call")
        killed_at = system.start_and_kill(victim_marker)
        deadline = time.monotonic() + bound_s
        serving: Value
        try:  # a call submitted after the kill: queued behind the others, as a user's would be
            serving = pool.submit(workload.stamp).result(timeout=bound_s) - killed_at
        except Exception as exc:  # e.g. a broken pool refuses it
            ending = _ending(exc, bound_s)
            serving = ending if ending.startswith("never") else f"never ({ending})"
        endings = collections.Counter(_outcome(call, deadline, bound_s) for call in others)
        if len(endings) == 1:
            [(ending, _)] = endings.items()
            others_word = f"all {len(others)} {ending}"
        else:
            others_word = ", ".join(f"{n} {ending}" for ending, n in endings.most_common())
        return KillRun(killed=_outcome(victim, deadline, bound_s), others=others_word,
                       serving_s=serving)

    def _warm_pool(self) -> pools.Pool:
        """A pool in this process that has run a few calls (a pool that starts its
        workers on the first call has started them)."""
        pool = self._pool()
        for x in range(system.WARMUP_CALLS):
            pool.submit(workload.noop, x).result(timeout=30)
        return pool


#: what a wait that ran out raises: ``concurrent.futures`` / ``multiprocessing.Pool``
_TIMEOUTS = (TimeoutError, multiprocessing.TimeoutError)


def _ending(error: BaseException, bound_s: float) -> str:
    """A call's failure in words: its exception's name, or never for a wait that ran out."""
    return f"never (> {bound_s:g} s)" if isinstance(error, _TIMEOUTS) else type(error).__name__


def _outcome(call: pools.Pending, deadline: float, bound_s: float) -> str:
    """What ``call`` ended with by ``deadline``: "ok" or its failure in words."""
    try:
        error = call.exception(timeout=max(0.0, deadline - time.monotonic()))
    except Exception as exc:  # the wait itself ran out (concurrent.futures raises)
        error = exc
    return "ok" if error is None else _ending(error, bound_s)


class MultiprocessingPool(BarePool):
    name = "multiprocessing.Pool"
    kind = "pool"


class ProcessPoolExecutorSystem(BarePool):
    name = "ProcessPoolExecutor"
    kind = "executor"
