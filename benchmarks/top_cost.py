"""``python -m benchmarks.top_cost``: what ``pprunner top`` or ``pprunner web``
watching a store costs the work.

Each round fills a fresh SQLite store with ``--history`` finished invocations
(what a busy day leaves under ``keep_finished``) and ``--tasks`` queued no-op
tasks, then drains them with ``pprunner run --processes 2 --burst``: with
nothing watching, with ``pprunner top`` piped (plain text, the same reads),
with ``pprunner top`` on its screen in a tmux session (Textual drawing
too), and with ``pprunner web`` serving one page that refreshes its live part
(what ``live.js`` asks, each ``--interval``, here from a thread of this
process: a browser's own cost is the browser's), each refreshing every
``--interval`` seconds. The variants take turns
round after round, so a machine that gets busier or quieter weighs on all of
them alike. The drain is timed from the store's own stamps: the first start
to the last finish of the queued tasks, so the supervisor's boot is not in it.

Printed: per variant, the median drain and throughput over the rounds (and
each round's drain), the change against nothing watching, the CPU the
supervisor and its workers used per task (less sensitive than time to what
else the machine runs) and the share of one core the watcher used; then the
time one refresh's reads take on such a store, and one page of the dashboard.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import psutil

from pprunner.display import table_lines
from pprunner.snapshot import look

from . import report
from .apps import app, noop
from .pools import free_port

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("nothing watching", "top piped", "top on a screen (tmux)",
            "web, a page refreshing")
#: the variants that need a program this machine may lack, and that program
NEEDS = {VARIANTS[2]: "tmux"}


def fill(url: str, database: Path, history: int, tasks: int) -> None:
    """``history`` finished invocations (written directly: only their rows matter),
    then ``tasks`` queued no-ops through the app, as a producer would."""
    app.configure(source="benchmarks.top_cost", replace=True, backend=url)
    try:
        noop.enqueue(0)  # creates the schema
        done_at = time.time() - 3_600
        with sqlite3.connect(database) as db:
            db.executemany(
                "INSERT INTO invocations (id, task, serializer, payload, status, attempts, "
                "max_attempts, enqueued_at, started_at, finished_at, result) VALUES "
                "(?, ?, 'json', x'7b7d', ?, 1, 3, ?, ?, ?, x'31')",
                [(uuid.uuid4().hex, noop.name, "FAILED" if n % 100 == 0 else "SUCCESS",
                  done_at, done_at, done_at + n * 1e-4) for n in range(history)])
        for n in range(tasks - 1):
            noop.enqueue(n)
    finally:
        app.close()


def drain_seconds(database: Path) -> float:
    """From the first start to the last finish of the queued no-ops (``result`` is
    what a worker stored: the history rows' is ``1``)."""
    with sqlite3.connect(database) as db:
        first, last = db.execute(
            "SELECT MIN(started_at), MAX(finished_at) FROM invocations "
            "WHERE status = 'SUCCESS' AND result != x'31'").fetchone()
    return float(last - first)


class Page:
    """A dashboard page refreshing as live.js does: a GET of its live part every
    ``interval`` seconds, from a thread, until :meth:`close`."""

    def __init__(self, url: str, interval: float) -> None:
        self.url, self.interval = url, interval
        self._stop = threading.Event()
        deadline = time.monotonic() + 30
        while not self.get():  # the dashboard's first look at the store comes first
            if time.monotonic() > deadline:
                raise RuntimeError(f"pprunner web did not answer at {url}")
            time.sleep(0.05)
        self._thread = threading.Thread(target=self._refresh, daemon=True)
        self._thread.start()

    def get(self) -> bool:
        request = urllib.request.Request(self.url, headers={"X-Pprunner-Live": "1"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                return True
        except OSError:
            return False

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval):
            self.get()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Watcher:
    """``pprunner top`` or ``pprunner web`` in one of the variants' ways, stopped
    with ``stop()``."""

    def __init__(self, variant: str, env: dict[str, str], interval: float) -> None:
        self.variant = variant
        command = [sys.executable, "-m", "pprunner"]
        top = [*command, "top", "--app", "benchmarks.apps:app", "--interval", str(interval)]
        self.socket = f"pprunner-top-cost-{os.getpid()}"
        self.process: psutil.Process | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._page: Page | None = None
        if variant == VARIANTS[1]:
            self._popen = subprocess.Popen(top, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
            self.process = psutil.Process(self._popen.pid)
        elif variant == VARIANTS[3]:
            port = free_port()
            self._popen = subprocess.Popen(
                [*command, "web", "--app", "benchmarks.apps:app", "--port", str(port),
                 "--interval", str(interval)], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
            self.process = psutil.Process(self._popen.pid)
            self._page = Page(f"http://127.0.0.1:{port}/", interval)
        elif variant == VARIANTS[2]:
            subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d",
                            "-x", "200", "-y", "50", "-c", str(REPO), shlex.join(top)],
                           env=env, check=True)
            pane = subprocess.run(["tmux", "-L", self.socket, "list-panes", "-F",
                                   "#{pane_pid}"], capture_output=True, text=True, check=True)
            self.process = psutil.Process(int(pane.stdout))

    def stop(self) -> tuple[float, float]:
        """Stop it: (CPU seconds it used, seconds it ran)."""
        if self.process is None:
            return 0.0, 0.0
        if self._page is not None:
            self._page.close()
        times = self.process.cpu_times()
        ran = time.time() - self.process.create_time()
        if self._popen is not None:
            self._popen.terminate()
            self._popen.wait(timeout=30)
        else:
            subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False)
        return times.user + times.system, ran


def one_round(variant: str, folder: Path, history: int, tasks: int,
              interval: float) -> tuple[float, float, float, float]:
    """(drain seconds, CPU seconds of the supervisor and its workers, top's CPU seconds,
    seconds top ran) for one variant."""
    database = folder / f"{uuid.uuid4().hex}.db"
    url = f"sqlite:///{database}"
    fill(url, database, history, tasks)
    env = {**os.environ, "PPRUNNER_BACKEND": url, "PYTHONPATH": str(REPO)}
    watcher = Watcher(variant, env, interval)
    try:
        before = _children_cpu()  # top is not reaped yet: only the run's tree counts
        subprocess.run([sys.executable, "-m", "pprunner", "run", "--app", "benchmarks.apps:app",
                        "--processes", "2", "--burst", "--log-level", "WARNING"],
                       cwd=REPO, env=env, stdout=subprocess.DEVNULL, check=True, timeout=600)
        run_cpu = _children_cpu() - before
    finally:
        cpu, ran = watcher.stop()
    return drain_seconds(database), run_cpu, cpu, ran


def _children_cpu() -> float:
    """CPU seconds of the reaped children and theirs (the supervisor reaps its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def refresh_ms(folder: Path, history: int, tasks: int) -> float:
    """The median time of one refresh's reads (``look`` as top asks it) on such a store."""
    database = folder / "look.db"
    url = f"sqlite:///{database}"
    fill(url, database, history, tasks)
    app.configure(source="benchmarks.top_cost", replace=True, backend=url)
    try:
        backend = app.backend
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            look(backend, 30.0, recent_failures=10)  # type: ignore[arg-type]
            samples.append(1e3 * (time.perf_counter() - started))
        return statistics.median(samples)
    finally:
        app.close()


def web_page_ms(folder: Path, history: int, tasks: int, interval: float) -> float:
    """The median time of one live refresh of ``pprunner web``'s overview on such a
    store, over HTTP (with ``--interval`` 0.001 every request looks at the store)."""
    database = folder / "web.db"
    url = f"sqlite:///{database}"
    fill(url, database, history, tasks)
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "pprunner", "web", "--app",
                            "benchmarks.apps:app", "--port", str(port), "--interval", "0.001"],
                           cwd=REPO, env={**os.environ, "PPRUNNER_BACKEND": url,
                                          "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    try:
        page = Page(f"http://127.0.0.1:{port}/", interval)
        page.close()
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            page.get()
            samples.append(1e3 * (time.perf_counter() - started))
        return statistics.median(samples)
    finally:
        web.terminate()
        web.wait(timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.top_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000, help="queued no-ops per round")
    parser.add_argument("--history", type=int, default=200_000,
                        help="finished invocations already in the store")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="top's and the web page's refresh interval")
    parser.add_argument("--json", metavar="PATH", help="also write every round as JSON")
    args = parser.parse_args(argv)
    variants = [v for v in VARIANTS if v not in NEEDS or shutil.which(NEEDS[v])]
    runs: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="pprunner-top-cost-") as folder:
        for round_number in range(args.rounds):
            for variant in variants:
                result = one_round(variant, Path(folder), args.history, args.tasks,
                                   args.interval)
                runs[variant].append(result)
                print(f"round {round_number + 1}, {variant}: drain {result[0]:.2f} s",
                      file=sys.stderr)
        look_ms = refresh_ms(Path(folder), args.history, args.tasks)
        page_ms = web_page_ms(Path(folder), args.history, args.tasks, args.interval)
    base = statistics.median(r[0] for r in runs[variants[0]])
    rows = [("watching", "drain s (median)", "each round", "tasks/s", "vs nothing",
             "run's CPU ms/task", "watcher's CPU (of one core)")]
    for variant, results in runs.items():
        drain = statistics.median(r[0] for r in results)
        ran = sum(r[3] for r in results)
        rows.append((variant, f"{drain:.2f}", " ".join(f"{r[0]:.2f}" for r in results),
                     f"{args.tasks / drain:,.0f}", f"{100 * (drain / base - 1):+.1f} %",
                     f"{1e3 * statistics.median(r[1] for r in results) / args.tasks:.3f}",
                     f"{100 * sum(r[2] for r in results) / ran:.0f} %" if ran else "-"))
    print(report.machine_line(report.machine()))
    print(f"{args.tasks:,} no-op tasks, 2 workers, SQLite store holding {args.history:,} "
          f"finished invocations; top and the web page every {args.interval:g} s; "
          f"{args.rounds} rounds, variants interleaved")
    print("\n".join(table_lines(rows)))
    print(f"one refresh's reads on such a store: {look_ms:.1f} ms (median of 20)")
    print(f"one live refresh of pprunner web's overview over HTTP: {page_ms:.1f} ms "
              "(median of 20)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs,
                                               "refresh_ms": look_ms, "web_page_ms": page_ms},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
