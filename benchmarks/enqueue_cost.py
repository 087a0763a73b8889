"""``python -m benchmarks.enqueue_cost``: what one ``enqueue`` costs, warm and after idling.

Idle latency (``benchmarks run --only latency``) crosses three processes
that have each just been idle. On a virtual machine a code path that has
just been idle can take ten times as long as the same path run back to back
(caches, frequency, wake-ups), so this prints both for the producer's
``task.enqueue()`` on each backend: 200 calls back to back, and 200 calls
each after a 20 ms pause, medians in milliseconds. The gap between the two
columns is what no change to the code's logic can win back, only less code
on the path.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

from . import report
from .apps import app, stamp
from .systems.pprunner_redis import REDIS_URL, PprunnerRedis, delete_keys

CALLS = 200
GAP_S = 0.02


def median_s(operation: Callable[[], object], gap_s: float, count: int = CALLS) -> float:
    """Median seconds of ``operation``, run ``count`` times, each after ``gap_s`` of
    idling (0: back to back)."""
    samples = []
    for _ in range(count):
        if gap_s:
            time.sleep(gap_s)
        started = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def measure(url: str) -> tuple[float, float]:
    """(warm, after a pause) medians on a fresh store at ``url``."""
    app.configure(source="benchmarks.enqueue_cost", replace=True, backend=url)
    try:
        stamp.enqueue()  # connect, create the schema
        return 1e3 * median_s(stamp.enqueue, 0.0), 1e3 * median_s(stamp.enqueue, GAP_S)
    finally:
        app.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.enqueue_cost",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    rows = [("backend", "back to back, ms", f"after {GAP_S * 1e3:g} ms idle, ms", "ratio")]
    with tempfile.TemporaryDirectory(prefix="pprunner-enqueue-") as folder:
        prefix = f"pprunner-enqueue-cost-{time.time_ns()}"
        stores = {"sqlite": f"sqlite:///{folder}/jobs.db"}
        if PprunnerRedis.unavailable() is None:
            stores["redis"] = f"{REDIS_URL}?prefix={prefix}"
        try:
            for name, url in stores.items():
                warm, cold = measure(url)
                rows.append((name, f"{warm:.3f}", f"{cold:.3f}", f"{cold / warm:.1f}x"))
        finally:
            if "redis" in stores:
                delete_keys(prefix)
    print(report.machine_line(report.machine()))
    print("\n".join(report.aligned(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
