"""The interface a benchmarked system implements, and what its methods return.

A system is one class: ``setup``/``teardown`` around each round, and one
method per scenario it supports, named like the scenario. A method it does
not override is a scenario it does not support. Its library is imported
inside its methods, never at module level, so a missing library is
reported as "not installed" (see ``requires``) instead of breaking the run.

Everything a method starts (processes, pools) goes on ``self.cleanup``
the moment it exists; ``teardown`` closes that stack, so it is ended even
when the method fails or the benchmark is interrupted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from . import procs, workload

#: a measurement, or a word where there is no number ("never (> 10 s)")
Value = float | str

#: every scenario runs two workers
WORKERS = 2
#: the repository root, put on PYTHONPATH so subprocesses import ``benchmarks``
ROOT = Path(__file__).resolve().parent.parent
#: calls run first and not counted, so the first sample is not a cold start
WARMUP_CALLS = 5
#: seconds the latency samples may take besides their gaps (each takes ~1 ms)
LATENCY_BUDGET_S = 60.0
#: seconds a pool rests after its last task before its idle cost is sampled
SETTLE_S = 1.0


@dataclass(frozen=True)
class ThroughputRun:
    #: tasks done (all of them, unless the system stopped the round early)
    count: int
    #: launch of the pool to its exit: boot, all tasks, shutdown; or why there is none
    wall_s: Value
    #: the tasks done, without boot and shutdown (how, depends on the system)
    drain_s: float


@dataclass(frozen=True)
class CrashRun:
    #: from the SIGKILL to the killed task running again
    rerun_s: Value
    #: from the SIGKILL to a replacement worker ready for work
    ready_s: Value


@dataclass(frozen=True)
class IdleRun:
    #: from launching the pool to the first task starting
    first_task_s: float
    #: CPU of the whole pool (parent and workers) over ``window_s`` idle seconds
    cpu_s: float
    window_s: float
    #: summed RSS of the pool's processes (shared pages count once per process)
    rss_bytes: int
    processes: int


@dataclass(frozen=True)
class ExecutorThroughputRun:
    """``count`` no-op calls on a warm pool, twice in a row (the same pool)."""

    count: int
    #: one ``submit`` per call, then every result
    submit_s: float
    #: ``map(noop, range(count), chunksize=chunksize)``, every result
    map_s: float


@dataclass(frozen=True)
class KillRun:
    """A worker SIGKILLed while it runs a call, with more calls in flight."""

    #: what the killed call's future ended with: an exception's name, "ok" when it
    #: ran again, or "never (> N s)"
    killed: str
    #: what the other calls in flight ended with, e.g. "all 5 ok"
    others: str
    #: from the SIGKILL to a call submitted after it starting, or why it never did
    serving_s: Value


@dataclass(frozen=True)
class AnsweredRun:
    """A worker SIGKILLed while it runs a task whose sender waits for its result."""

    #: from the SIGKILL to the task's result (an error, or its value after a rerun)
    answered_s: Value
    #: what the result said: the error's type, "ran again", or "none"
    answer: str
    #: from the SIGKILL to a task sent after it starting, or why it never did
    serving_s: Value


class System:
    """One way of running tasks on two worker processes."""

    #: the name in tables and on the command line
    name: ClassVar[str]
    #: modules that must be importable, else the system is "not installed"
    requires: ClassVar[tuple[str, ...]] = ()
    #: the only scenarios the system runs, where the others would measure nothing
    #: another system does not already (None: every scenario it implements)
    only_scenarios: ClassVar[tuple[str, ...] | None] = None

    workdir: Path
    cleanup: contextlib.ExitStack

    @classmethod
    def missing(cls) -> list[str]:
        return [module for module in cls.requires if importlib.util.find_spec(module) is None]

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the system cannot run here although it is installed (e.g. its
        server does not answer), or None. Checked before each scenario."""
        return None

    @classmethod
    def supports(cls, scenario: str) -> bool:
        """The system implements ``scenario`` and runs it ("not supported" otherwise)."""
        implemented = getattr(cls, scenario) is not getattr(System, scenario)
        return implemented and (cls.only_scenarios is None or scenario in cls.only_scenarios)

    def setup(self, workdir: Path) -> None:
        """Prepare one round; ``workdir`` is a fresh, empty folder of its own."""
        self.workdir = workdir
        self.cleanup = contextlib.ExitStack()

    def teardown(self) -> None:
        """End everything the round started."""
        self.cleanup.close()

    # -- one method per scenario (see benchmarks.scenarios) ---------------------------

    def throughput(self, count: int, cap_s: float) -> ThroughputRun:
        """Run ``count`` no-op tasks that were all queued before the pool started.

        A system whose pool can take minutes for them (a fork, or dozens of
        SQLite connections, per task) stops it ``cap_s`` seconds after its
        launch and rates the tasks done by then (see :func:`stopped_at`); the
        others finish well within that and ignore it.
        """
        raise NotImplementedError

    def latency(self, count: int, gap_s: float) -> list[float]:
        """Enqueue-to-start seconds of ``count`` tasks sent one at a time to an
        idle pool (see :func:`sample_latency`)."""
        raise NotImplementedError

    def crash_recovery(self, task_s: float, bound_s: float) -> CrashRun:
        """SIGKILL the worker running a ``task_s``-second task; see :func:`watch_recovery`."""
        raise NotImplementedError

    def idle_cost(self, window_s: float) -> IdleRun:
        """Launch the pool, time its first task, then sample it idle (:func:`idle_run`)."""
        raise NotImplementedError

    def one_process(self, count: int) -> dict[str, float]:
        """A fresh process enqueues ``count`` no-op tasks, then runs them inline
        (``python -m benchmarks tracing``): the enqueues' wall seconds
        (``enqueue_s``), CPU microseconds per invocation of enqueueing
        (``enqueue_cpu_us``) and of claiming, running and completing (``drain_cpu_us``)."""
        raise NotImplementedError

    def executor_throughput(self, count: int, chunksize: int) -> ExecutorThroughputRun:
        """``count`` no-op calls through ``submit``, then through ``map`` with ``chunksize``,
        on a warm pool in this process (``python -m benchmarks executors``)."""
        raise NotImplementedError

    def executor_kill(self, task_s: float, queued: int, bound_s: float) -> KillRun:
        """SIGKILL the worker running a ``task_s``-second call while the other worker
        runs another and ``queued`` more wait; each wait bounded at ``bound_s``."""
        raise NotImplementedError

    def cpu_throughput(self, count: int) -> float:
        """Seconds from sending ``count`` CPU-bound tasks to a warm pool to their last
        result (``python -m benchmarks taskiq``)."""
        raise NotImplementedError

    def kill_answered(self, task_s: float, bound_s: float) -> AnsweredRun:
        """SIGKILL the process running a ``task_s``-second task, then wait (``bound_s``)
        for its result and for a task sent after the kill (``python -m benchmarks taskiq``)."""
        raise NotImplementedError

    def wait_on_subtask(self, parents: int, children: int, bound_s: float) -> Value:
        """Enqueue ``parents`` tasks at once (as many as there are workers), each of
        which enqueues ``children`` no-op tasks and waits for all their results.
        Seconds from the first enqueue until every parent's result is back, or
        :func:`deadlock` when that has not happened within ``bound_s``."""
        raise NotImplementedError


# -- what every system does the same way -------------------------------------------------


def compile_bytecode() -> None:
    """Cache the bytecode of this checkout's packages, as installing a wheel does for
    the peers. A source checkout has none until a process writes it, and none ever
    does under ``PYTHONDONTWRITEBYTECODE``: every process of every round would then
    compile pprunner from source, and its start-up would measure the compiler."""
    import compileall

    for package in ("pprunner", "pprunner_plugins", "benchmarks"):
        if (ROOT / package).is_dir():
            compileall.compile_dir(ROOT / package, quiet=1)


def child_env(**extra: str) -> dict[str, str]:
    """This environment without PPRUNNER_* settings, with ``benchmarks`` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPRUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def sample_latency(call_stamp: Callable[[], float], count: int, gap_s: float) -> list[float]:
    """``call_stamp`` sends :func:`~benchmarks.workload.stamp` and waits for its
    result, the time it started. Each sample is that minus the time just
    before sending. ``gap_s`` (not counted) lets the pool go idle between tasks.
    """
    budget = LATENCY_BUDGET_S + count * gap_s
    deadline = time.monotonic() + budget
    for _ in range(WARMUP_CALLS):
        call_stamp()
    samples = []
    for _ in range(count):
        time.sleep(gap_s)
        sent = time.time()
        samples.append(call_stamp() - sent)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(samples)} of {count} latency samples took over {budget:g} s")
    return samples


#: a probe answers the time something happened, a word if it never will, or
#: None if it has not happened yet
Probe = Callable[[], Value | None]


def retry_started(marker: Path) -> Probe:
    """When the second attempt announced in ``marker`` started."""
    def probe() -> float | None:
        attempts = workload.attempts(marker)
        return attempts[1][1] if len(attempts) > 1 else None
    return probe


def start_and_kill(marker: Path, timeout: float = 15.0) -> float:
    """Wait for the first attempt in ``marker``, SIGKILL its process; the kill's time."""
    [(pid, _)] = procs.wait_until(lambda: workload.attempts(marker), timeout,
                                  "the long task to start")
    return procs.kill_now(pid)


def stopped_at(cap_s: float, done: int, count: int) -> str:
    """The wall cell of a throughput round whose pool was stopped at its cap."""
    return f"stopped at {cap_s:g} s ({done:,} of {count:,} done)"


def deadlock(bound_s: float) -> str:
    """The word for a wait-on-subtask run that did not finish in time."""
    return f"deadlock (> {bound_s:g} s)"


def time_parents(send_and_wait: Callable[[], list[Any]], timeout: type[Exception],
                 parents: int, children: int, bound_s: float) -> Value:
    """Seconds ``send_and_wait`` takes to send the wait-on-subtask parents and
    return their results, or :func:`deadlock` if it raises ``timeout`` (the
    system's error for a wait that ran out of its ``bound_s``). Each parent
    returns the sum of its no-op children's results (``noop(n) = n + 1``);
    anything else is an error."""
    started = time.perf_counter()
    try:
        results = send_and_wait()
    except timeout:
        return deadlock(bound_s)
    elapsed = time.perf_counter() - started
    if results != [children * (children + 1) // 2] * parents:
        raise RuntimeError(f"unexpected results {results}")
    return elapsed


def watch_recovery(killed_at: float, bound_s: float, rerun: Probe, ready: Probe) -> CrashRun:
    """Poll both probes for ``bound_s`` seconds after the kill; what has not
    happened by then is "never"."""
    found: dict[str, Value] = {}
    probes = {"rerun": rerun, "ready": ready}
    deadline = time.monotonic() + bound_s
    while len(found) < len(probes) and time.monotonic() < deadline:
        for key, probe in probes.items():
            if key not in found and (answer := probe()) is not None:
                found[key] = answer if isinstance(answer, str) else answer - killed_at
        time.sleep(0.005)
    never = f"never (> {bound_s:g} s)"
    return CrashRun(rerun_s=found.get("rerun", never), ready_s=found.get("ready", never))


def idle_run(root_pid: int, launched_at: float, first_started_at: float,
             window_s: float) -> IdleRun:
    """Let the pool rooted at ``root_pid`` settle, then sample its idle cost."""
    time.sleep(SETTLE_S)
    sample = procs.sample_tree(root_pid, window_s)
    return IdleRun(first_task_s=first_started_at - launched_at, cpu_s=sample.cpu_s,
                   window_s=sample.window_s, rss_bytes=sample.rss_bytes,
                   processes=sample.processes)
