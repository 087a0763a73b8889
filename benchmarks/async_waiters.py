"""``python -m benchmarks async_waiters [--waiters N] [--rounds N] [--backend URL]``:
many producers awaiting results, on one event loop against a thread each.

For each path, per round, on a fresh store: enqueue N no-op invocations
with no worker running; start N waits for them — ``sync``: one thread per
``handle.result()`` (what a producer without asyncio does; 1,000 by default,
``--sync-waiters``), ``async``: N coroutines (10,000 by default,
``--waiters``) doing ``await handle`` on one event loop in this thread; once
every wait is registered with the store, start ``pprunner run --burst`` (2
workers, its own process) and let it drain them. Each wait notes the wall
time its result arrived; its latency is that minus the invocation's
``finished_at`` (stored by the worker, same host and clock). The table
gives the medians over rounds of each round's p50 and p99, the time until
the last result, and the most threads this process ran while waiting.

The default store is a SQLite file in a temporary folder; ``--backend
redis://...?prefix=NAME`` measures Redis (the prefix's keys are deleted
first: use a prefix of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pprunner import App, Handle

from . import procs, report
from .apps import app, noop

PATHS = ("sync", "async")
#: seconds every wait has to be registered, and the workers to drain the queue
SETTLE_TIMEOUT, DRAIN_TIMEOUT = 120.0, 600.0
#: the share of sync waits seen registered together before the workers start
SYNC_REGISTERED = 0.9


def registered_waits(app: App) -> int:
    """How many waits the store holds registrations for (SQLite's ``waiters`` table,
    Redis's ``waiters:<id>`` sets)."""
    backend = app.backend
    if hasattr(backend, "path"):
        import sqlite3

        with sqlite3.connect(backend.path) as db:
            return int(db.execute("SELECT COUNT(*) FROM waiters").fetchone()[0])
    client = backend.client  # type: ignore[attr-defined]
    prefix = backend.prefix  # type: ignore[attr-defined]
    return sum(client.scard(key) for key in client.scan_iter(f"{prefix}:waiters:*", count=1000))


class Round:
    """One path's waits on one store: started, registered, drained, measured."""

    def __init__(self, handles: list[Handle]) -> None:
        self.handles = handles
        self.received: dict[str, float] = {}
        self.most_threads = threading.active_count()
        #: filled by :meth:`measure` while the store is still open
        self.latencies: list[float] = []

    def note_threads(self) -> None:
        self.most_threads = max(self.most_threads, threading.active_count())

    def measure(self) -> None:
        """Milliseconds from each invocation's end (as stored) to its waiter's result."""
        backend = self.handles[0].app.backend
        ended = {h.id: backend.get(h.id).finished_at for h in self.handles}
        self.latencies = sorted(1000 * (self.received[i] - (ended[i] or 0.0))
                                for i in self.received)


def run_sync(handles: list[Handle], drain: Callable[[], None]) -> Round:
    measured = Round(handles)

    def wait(handle: Handle) -> None:
        handle.result(timeout=DRAIN_TIMEOUT)
        measured.received[handle.id] = time.time()

    threads = [threading.Thread(target=wait, args=(h,), daemon=True) for h in handles]
    for thread in threads:
        thread.start()
    measured.note_threads()
    # a blocked sync wait looks again every second, dropping its registration for a
    # moment: 90% of them registered at once is as many as can be seen together
    procs.wait_until(lambda: registered_waits(app) >= SYNC_REGISTERED * len(handles),
                     SETTLE_TIMEOUT, "the sync waits to register")
    drain()
    for thread in threads:
        thread.join(DRAIN_TIMEOUT)
    return measured


def run_async(handles: list[Handle], drain: Callable[[], None]) -> Round:
    measured = Round(handles)

    async def wait(handle: Handle) -> None:
        await handle
        measured.received[handle.id] = time.time()

    async def main() -> None:
        waits = asyncio.gather(*(wait(h) for h in handles))
        while registered_waits(app) < len(handles):  # the loop registers them meanwhile
            await asyncio.sleep(0.01)
        measured.note_threads()
        await asyncio.get_running_loop().run_in_executor(None, drain)
        await waits

    asyncio.run(main())
    return measured


def drainer(url: str) -> Callable[[], None]:
    """Runs ``pprunner run --burst`` with 2 workers on ``url`` until the queue is empty."""
    def drain() -> None:
        env = {**os.environ, "PPRUNNER_BACKEND": url, "PPRUNNER_LOG_LEVEL": "WARNING"}
        env.pop("PYTHONPATH", None)
        argv = [sys.executable, "-m", "pprunner", "run", "--app", "benchmarks.apps:app",
                "--processes", "2", "--burst"]
        with procs.process_group(argv, env=env, cwd=Path.cwd(),
                                 stdout=subprocess.DEVNULL) as process:
            process.wait(DRAIN_TIMEOUT)
    return drain


def fresh_store(url: str | None, folder: Path, name: str) -> str:
    if url is None:
        return f"sqlite:///{folder / name}.db"
    app.configure(source="benchmarks.async_waiters", replace=True, backend=url)
    backend = app.backend
    for key in backend.client.scan_iter(f"{backend.prefix}:*", count=1000):  # type: ignore
        backend.client.delete(key)  # type: ignore[attr-defined]
    return url


def one_round(path: str, waiters: int, url: str | None, folder: Path, index: int) -> Round:
    store = fresh_store(url, folder, f"{path}-{index}")
    app.configure(source="benchmarks.async_waiters", replace=True, backend=store)
    handles = [noop.enqueue(i) for i in range(waiters)]
    run = run_sync if path == "sync" else run_async
    try:
        measured = run(handles, drainer(store))
        measured.measure()
        return measured
    finally:
        app.close()


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    return sorted_values[min(int(fraction * len(sorted_values)), len(sorted_values) - 1)]


def table(rounds: dict[str, list[Round]], waiters: dict[str, int]) -> str:
    rows: list[tuple[str, ...]] = [("path", "waiters", "p50 ms", "p99 ms", "last ms",
                                    "threads", "p50 vs sync")]
    p50s = {}
    for path, measured in rounds.items():
        latencies = [m.latencies for m in measured]
        p50s[path] = statistics.median(percentile(each, 0.5) for each in latencies)
        p99 = statistics.median(percentile(each, 0.99) for each in latencies)
        last = statistics.median(each[-1] for each in latencies)
        threads = max(m.most_threads for m in measured)
        missing = sum(len(m.handles) - len(m.received) for m in measured)
        rows.append((path + (f" ({missing} missing)" if missing else ""), str(waiters[path]),
                     f"{p50s[path]:.2f}", f"{p99:.2f}", f"{last:.1f}", str(threads),
                     f"{p50s[path] / p50s['sync']:.2f}x" if "sync" in p50s else "-"))
    return "\n".join(report.aligned(rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks async_waiters",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiters", type=int, default=10_000,
                        help="concurrent waits per path (default 10000)")
    parser.add_argument("--sync-waiters", type=int, default=1000,
                        help="threads for the sync path (default 1000: on 2 cores, 10,000 "
                             "threads do not all register their waits within 2 minutes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default=None,
                        help="a redis:// URL with a prefix of its own (default: SQLite)")
    parser.add_argument("--paths", default=",".join(PATHS), help="sync,async (default both)")
    args = parser.parse_args(argv)
    counts = {"sync": args.sync_waiters, "async": args.waiters}
    paths = [p for p in args.paths.split(",") if p in PATHS]
    print(report.machine_line(report.machine()))
    print(f"store: {args.backend or 'sqlite (temporary file)'}; 2 workers; "
          f"{args.rounds} round(s), medians of each round's percentiles", flush=True)
    rounds: dict[str, list[Round]] = {path: [] for path in paths}
    with tempfile.TemporaryDirectory(prefix="pprunner-async-waiters-") as folder:
        for index in range(args.rounds):
            for path in paths:
                rounds[path].append(one_round(path, counts[path], args.backend,
                                              Path(folder), index))
                print(f"round {index + 1} {path} done", file=sys.stderr, flush=True)
    print(table(rounds, counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
