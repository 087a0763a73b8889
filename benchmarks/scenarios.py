"""The scenarios: what is measured, in which units, and which way is better.

A scenario is a function ``(system, settings) -> {metric key: value}`` that
calls the system's method of the same name and turns its raw observations
into the metrics it declares. Registering it with :func:`scenario` gives
it a title and its metrics, which the report prints one table per scenario,
and puts it in the commands it belongs to: :data:`SCENARIOS` for
``python -m benchmarks run``, :data:`EXECUTOR_SCENARIOS` for
``python -m benchmarks executors`` (latency and idle cost are in both).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from .system import WORKERS, System, Value

#: key suffix under which a metric's 99th percentile is stored
P99 = ":p99"


@dataclass(frozen=True)
class Settings:
    """How big each scenario is; ``--quick`` makes everything smaller."""

    rounds: int
    #: ``--rounds`` was given: it applies to every scenario, single-round ones too
    rounds_forced: bool
    throughput_tasks: int
    latency_tasks: int
    idle_window_s: float
    latency_gap_s: float = 0.02
    crash_task_s: float = 3.0
    crash_bound_s: float = 10.0
    #: wait_on_subtask: as many parents as workers, so waiting parents hold every worker
    wait_parents: int = WORKERS
    wait_children: int = 4
    wait_bound_s: float = 10.0
    #: throughput: a pool still busy this long after its launch is stopped, and the
    #: tasks done by then are rated (RQ's or pynenc's 10,000 would take minutes)
    throughput_cap_s: float = 30.0
    #: executor_throughput: the calls ``map`` puts in one task
    map_chunksize: int = 64
    #: executor_kill: calls queued behind the two running ones when a worker is killed
    kill_queued: int = 4
    #: cpu_throughput: CPU-bound tasks sent to a warm pool
    cpu_tasks: int = 200
    #: no further round of a system in a scenario that would end past this many seconds
    #: after its first began, judging by its last (a slow peer's 10,000 tasks would
    #: otherwise take most of the run)
    round_budget_s: float = 40.0
    #: round 1 of every system, then round 2 of every system, ... (no round budget)
    interleave: bool = False

    @classmethod
    def make(cls, *, quick: bool, rounds: int | None = None,
             interleave: bool = False) -> Settings:
        if quick:  # a smoke run: shorter bounds, so a "never" or a deadlock costs 3 s
            return cls(rounds=rounds or 1, rounds_forced=rounds is not None,
                       throughput_tasks=1_000, latency_tasks=50, idle_window_s=1.0,
                       crash_bound_s=3.0, wait_bound_s=3.0, throughput_cap_s=10.0,
                       cpu_tasks=40, interleave=interleave)
        return cls(rounds=rounds or 3, rounds_forced=rounds is not None,
                   throughput_tasks=10_000, latency_tasks=500, idle_window_s=10.0,
                   interleave=interleave)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False
    #: the words for "better" and "worse" in the ratio column
    words: tuple[str, str] = ("faster", "slower")
    #: the metric also has a 99th percentile (stored under ``key + P99``)
    has_p99: bool = False


Measure = Callable[[System, Settings], dict[str, Value]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: Callable[[Settings], str]
    metrics: tuple[Metric, ...]
    measure: Measure
    #: one round only: each number is already a statistic over many samples
    #: (500 latencies, a 10 s CPU window), and another round would only cost time
    single_round: bool = False

    def rounds(self, settings: Settings) -> int:
        return 1 if self.single_round and not settings.rounds_forced else settings.rounds


#: ``python -m benchmarks run``: pprunner's pull mode against queues and pools
SCENARIOS: dict[str, Scenario] = {}
#: ``python -m benchmarks executors``: ``pprunner.Executor`` against the bare pools
EXECUTOR_SCENARIOS: dict[str, Scenario] = {}
#: ``python -m benchmarks tracing``: pprunner with tracing off and on
TRACING_SCENARIOS: dict[str, Scenario] = {}
#: ``python -m benchmarks floor``: pprunner's drain against its store operations alone
FLOOR_SCENARIOS: dict[str, Scenario] = {}
#: ``python -m benchmarks taskiq``: ``taskiq worker``'s pools and pprunner's receiver
TASKIQ_SCENARIOS: dict[str, Scenario] = {}


def scenario(title: Callable[[Settings], str], *metrics: Metric, single_round: bool = False,
             commands: tuple[dict[str, Scenario], ...] = (SCENARIOS,),
             ) -> Callable[[Measure], Measure]:
    """Register a scenario function under its own name (the System method it calls)
    in each of ``commands``."""
    def register(measure: Measure) -> Measure:
        for registry in commands:
            registry[measure.__name__] = Scenario(measure.__name__, title, metrics, measure,
                                                  single_round)
        return measure
    return register


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile, interpolated (so p99 of 100 samples is not simply the max)."""
    ordered = sorted(samples)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# -- the scenarios -----------------------------------------------------------------------


@scenario(lambda s: f"{s.throughput_tasks:,} no-op tasks queued before the pool starts, "
                    f"{WORKERS} workers",
          Metric("wall", "launch -> exit, incl. boot", "s"),
          Metric("rate", "drain rate, excl. boot", "tasks/s", higher_is_better=True),
          commands=(SCENARIOS, TRACING_SCENARIOS, FLOOR_SCENARIOS))
def throughput(system: System, settings: Settings) -> dict[str, Value]:
    run = system.throughput(settings.throughput_tasks, settings.throughput_cap_s)
    return {"wall": run.wall_s, "rate": run.count / run.drain_s}


@scenario(lambda s: f"{s.throughput_tasks:,} no-op calls to a warm pool of {WORKERS} "
                    f"workers in this process: one submit each, then "
                    f"map(chunksize={s.map_chunksize})",
          Metric("submit", "submit, one call each", "calls/s", higher_is_better=True),
          Metric("map", "map, in chunks", "calls/s", higher_is_better=True),
          commands=(EXECUTOR_SCENARIOS,))
def executor_throughput(system: System, settings: Settings) -> dict[str, Value]:
    run = system.executor_throughput(settings.throughput_tasks, settings.map_chunksize)
    return {"submit": run.count / run.submit_s, "map": run.count / run.map_s}


@scenario(lambda s: f"{s.throughput_tasks:,} no-op tasks enqueued, then run inline, in one "
                    "fresh process; CPU time per invocation",
          Metric("enqueue", "enqueue rate", "tasks/s", higher_is_better=True),
          Metric("enqueue_cpu", "enqueue, CPU per invocation", "us"),
          Metric("drain_cpu", "claim + run + complete, CPU per invocation", "us"),
          commands=(TRACING_SCENARIOS,))
def one_process(system: System, settings: Settings) -> dict[str, Value]:
    run = system.one_process(settings.throughput_tasks)
    return {"enqueue": settings.throughput_tasks / run["enqueue_s"],
            "enqueue_cpu": run["enqueue_cpu_us"], "drain_cpu": run["drain_cpu_us"]}


@scenario(lambda s: f"enqueue -> task start on an idle pool, {s.latency_tasks} tasks one at a "
                    f"time, {s.latency_gap_s * 1000:g} ms apart",
          Metric("latency", "enqueue -> start", "ms", has_p99=True), single_round=True,
          commands=(SCENARIOS, EXECUTOR_SCENARIOS, TRACING_SCENARIOS))
def latency(system: System, settings: Settings) -> dict[str, Value]:
    samples = system.latency(settings.latency_tasks, settings.latency_gap_s)
    return {"latency": statistics.median(samples) * 1000,
            "latency" + P99: percentile(samples, 0.99) * 1000}


@scenario(lambda s: f"SIGKILL the worker running a {s.crash_task_s:g} s task "
                    f"(waits bounded at {s.crash_bound_s:g} s)",
          Metric("rerun", "kill -> task running again", "s"),
          Metric("ready", "kill -> replacement worker ready", "s"))
def crash_recovery(system: System, settings: Settings) -> dict[str, Value]:
    run = system.crash_recovery(settings.crash_task_s, settings.crash_bound_s)
    return {"rerun": run.rerun_s, "ready": run.ready_s}


@scenario(lambda s: f"SIGKILL the worker running a {s.crash_task_s:g} s call while the other "
                    f"runs one too and {s.kill_queued} more wait (waits bounded at "
                    f"{s.crash_bound_s:g} s)",
          Metric("killed", "the killed call's future", ""),
          Metric("others", "the other calls in flight", ""),
          Metric("serving", "kill -> a call submitted after it starts", "s"),
          commands=(EXECUTOR_SCENARIOS,))
def executor_kill(system: System, settings: Settings) -> dict[str, Value]:
    run = system.executor_kill(settings.crash_task_s, settings.kill_queued,
                               settings.crash_bound_s)
    return {"killed": run.killed, "others": run.others, "serving": run.serving_s}


@scenario(lambda s: f"{s.cpu_tasks} CPU-bound tasks (~25 ms of pure Python each) sent to a "
                    f"warm pool of {WORKERS} processes",
          Metric("rate", "send -> last result", "tasks/s", higher_is_better=True),
          commands=(TASKIQ_SCENARIOS,))
def cpu_throughput(system: System, settings: Settings) -> dict[str, Value]:
    return {"rate": settings.cpu_tasks / system.cpu_throughput(settings.cpu_tasks)}


@scenario(lambda s: f"SIGKILL the process running a {s.crash_task_s:g} s sync task "
                    f"(waits bounded at {s.crash_bound_s:g} s)",
          Metric("answered", "kill -> its result", "s"),
          Metric("answer", "its result", ""),
          Metric("serving", "kill -> a task sent 0.5 s later starts", "s"),
          commands=(TASKIQ_SCENARIOS,))
def kill_answered(system: System, settings: Settings) -> dict[str, Value]:
    run = system.kill_answered(settings.crash_task_s, settings.crash_bound_s)
    return {"answered": run.answered_s, "answer": run.answer, "serving": run.serving_s}


@scenario(lambda s: f"a pool of {WORKERS} workers launched, then idle for "
                    f"{s.idle_window_s:g} s (parent and workers)",
          Metric("first_task", "launch -> first task start", "s"),
          Metric("cpu", "idle CPU", "% of a core", words=("less", "more")),
          Metric("rss", "memory (RSS sum)", "MiB", words=("less", "more")),
          Metric("processes", "processes", "", words=("fewer", "more")), single_round=True,
          commands=(SCENARIOS, EXECUTOR_SCENARIOS, TASKIQ_SCENARIOS))
def idle_cost(system: System, settings: Settings) -> dict[str, Value]:
    run = system.idle_cost(settings.idle_window_s)
    return {"first_task": run.first_task_s, "cpu": 100 * run.cpu_s / run.window_s,
            "rss": run.rss_bytes / 2**20, "processes": run.processes}


@scenario(lambda s: f"{s.wait_parents} parents (one per worker) each waiting for "
                    f"{s.wait_children} no-op children (bounded at {s.wait_bound_s:g} s)",
          Metric("wall", "enqueue parents -> all results", "s"))
def wait_on_subtask(system: System, settings: Settings) -> dict[str, Value]:
    return {"wall": system.wait_on_subtask(settings.wait_parents, settings.wait_children,
                                           settings.wait_bound_s)}
