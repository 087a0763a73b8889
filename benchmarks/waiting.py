"""``python -m benchmarks.waiting [--rounds N]``: tasks that wait for other tasks.

With 2 worker processes on SQLite, for each built-in wait strategy:

- a recursive fan-out: each invocation enqueues 2 children and waits for
  both, depth 6 (127 invocations), timed from enqueueing the root to its
  result;
- 8 parents each waiting for 8 no-op children, enqueued together;
- what a wait costs when there is nothing to wait for (the awaited
  invocation is already final), measured inside a task over 200 waits,
  next to the same ``result()`` outside any worker.

``poll`` keeps a worker's slot while it waits, so both workflows deadlock
with it: each run is bounded (``--timeout``) and reported as "deadlocked".
The supervisor runs in this process (``Supervisor.start()``); its workers
are real processes on a fresh database per round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pprunner import ResultTimeout, Supervisor, gather

from . import report
from .apps import app, fan_out, finished_waits, noop, parent_of_noops

STRATEGIES = ("nested", "poll")
WAITS = 200


def fresh_database(folder: Path) -> None:
    """A new file for every run: a deadlocked run leaves its invocations queued."""
    name = f"run-{len(list(folder.iterdir()))}.db"
    app.configure(source="benchmarks.waiting", replace=True,
                  backend=f"sqlite:///{folder / name}", shutdown_timeout=1)


def timed(run: Callable[[], object], timeout: float) -> float | None:
    """Seconds ``run`` took, or None when it hit ``timeout`` (a deadlock)."""
    started = time.perf_counter()
    try:
        run()
    except ResultTimeout:
        return None
    return time.perf_counter() - started


def workflows(strategy: str, timeout: float) -> dict[str, Callable[[], float | None]]:
    return {
        "fan-out depth 6 (127 invocations), s": lambda: timed(
            lambda: fan_out.enqueue(6, strategy).result(timeout=timeout), timeout),
        "8 parents x 8 children, s": lambda: timed(
            lambda: gather([parent_of_noops.enqueue(8, strategy) for _ in range(8)],
                           timeout=timeout), timeout),
        "wait for a final invocation, inside a task, us": lambda: 1e6 * finished_waits.enqueue(
            noop.enqueue(1).id, WAITS, strategy).result(timeout=timeout),
    }


def outside_wait() -> float:
    """Microseconds per ``result()`` of a final invocation outside any worker."""
    handle = noop.enqueue(1)
    handle.result(timeout=30)
    started = time.perf_counter()
    for _ in range(WAITS):
        handle.result()
    return 1e6 * (time.perf_counter() - started) / WAITS


def measure(rounds: int, timeout: float) -> dict[tuple[str, str], list[float | None]]:
    samples: dict[tuple[str, str], list[float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="pprunner-waiting-") as folder:
        for _ in range(rounds):
            for strategy in STRATEGIES:
                for name, run in workflows(strategy, timeout).items():
                    fresh_database(Path(folder))
                    with Supervisor(app, processes=2):
                        samples.setdefault((name, strategy), []).append(run())
            fresh_database(Path(folder))
            with Supervisor(app, processes=2):
                samples.setdefault(("wait for a final invocation, outside a task, us",
                                    "-"), []).append(outside_wait())
    return samples


def show(samples: dict[tuple[str, str], list[float | None]], timeout: float) -> str:
    rows: list[tuple[str, ...]] = [("measure", "strategy", "median", "min", "max", "rounds")]
    for (name, strategy), values in samples.items():
        done = [v for v in values if v is not None]
        cells: tuple[str, ...]
        if len(done) < len(values):
            cells = (f"deadlocked ({len(values) - len(done)}/{len(values)} hit {timeout:g} s)",
                     "-", "-")
        else:
            cells = tuple(f"{v:.3g}" for v in (statistics.median(done), min(done), max(done)))
        rows.append((name, strategy, *cells, str(len(values))))
    return "\n".join(report.aligned(rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.waiting", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds before a workflow counts as deadlocked (default 10)")
    args = parser.parse_args(argv)
    print(report.machine_line(report.machine()))
    print(show(measure(args.rounds, args.timeout), args.timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
