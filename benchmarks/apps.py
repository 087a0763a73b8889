"""The pprunner app the benchmarks run: ``--app benchmarks.apps:app``.

Its tasks wrap :mod:`benchmarks.workload`, the functions the bare pools run
too. The backend is not set here: the benchmark configures a fresh SQLite
file per round (``app.configure`` in the producer, ``PPRUNNER_BACKEND`` for
the ``pprunner run`` process).
"""

from __future__ import annotations

import time

from pprunner import App, gather

from . import otel, workload

app = App(name="benchmarks")
#: ``python -m benchmarks tracing``: the pool's processes install the SDK it names
otel.install_from_environment()

noop = app.task(workload.noop)
stamp = app.task(workload.stamp)
#: crash recovery kills the first attempt; the retry is the second one
announce_and_sleep = app.task(max_attempts=3)(workload.announce_and_sleep)
#: lifecycle (benchmarks.lifecycle): the supervisor kills its worker 0.5 s in; a hard time
#: limit is never retried, so the invocation ends FAILED with TimeLimitExceeded
limited_sleep = app.task(name="limited_sleep", time_limit=0.5)(workload.announce_and_sleep)


@app.task
def fan_out(depth: int, strategy: str) -> int:
    """benchmarks.waiting: a binary tree of invocations, each waiting for its two children."""
    if depth == 0:
        return 1
    children = [fan_out.enqueue(depth - 1, strategy) for _ in range(2)]
    return 1 + sum(gather(children, strategy=strategy))


@app.task
def parent_of_noops(count: int, strategy: str) -> int:
    """benchmarks.waiting: one parent waiting for ``count`` no-op children."""
    return sum(gather([noop.enqueue(n) for n in range(count)], strategy=strategy))


@app.task
def finished_waits(invocation_id: str, count: int, strategy: str) -> float:
    """benchmarks.waiting: seconds per wait for an invocation that is already final."""
    handle = app.handle(invocation_id)
    started = time.perf_counter()
    for _ in range(count):
        handle.result(strategy=strategy)
    return (time.perf_counter() - started) / count
