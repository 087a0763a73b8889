"""``python -m benchmarks.latency_floor``: idle enqueue -> start latency, pprunner's
path with pprunner's work removed, next to pprunner's own, in one run.

The latency scenario (an idle pool, one task every 20 ms) asks how soon a
task starts. Part of the answer is not pprunner's: the store's write, the
wake-up of a process that was blocked, and how this machine runs code that
has sat idle for 20 ms: on this VM a JSON encode of an empty call takes 3 us
back to back and 73 us 20 ms apart, a SQLite insert 24 us and 200 us, even
when the pause is spent spinning (the run prints both).
The "floor" rows run the same store operations with nothing of pprunner
around them, in a worker process blocked exactly as pprunner's are:

- ``floor-sqlite``: the producer INSERTs a row (WAL, ``synchronous=NORMAL``,
  autocommit, as pprunner's SQLite backend) and sends one datagram to the
  worker's UNIX socket (pprunner's doorbell); the worker, blocked in
  ``select`` on that socket, claims the row with one ``UPDATE ... RETURNING``
  and reads the clock;
- ``floor-redis``: the producer LPUSHes; the worker, blocked in ``BLMOVE``
  (the command pprunner's Redis backend blocks in), reads the clock.

The worker sends each start time back on a pipe; the sample is that minus
the time just before the enqueue, as in the latency scenario (same sample
count, gap and warm-up). The pprunner rows are the latency scenario's own
systems, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import select
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from . import system
from .enqueue_cost import median_s
from .peer_apps import redis_db
from .runner import rotated
from .scenarios import Settings

CLAIM = ("UPDATE jobs SET status = 'RUNNING', owner = ? WHERE seq = (SELECT seq FROM jobs "
         "WHERE status = 'PENDING' ORDER BY seq LIMIT 1) RETURNING payload")
PAYLOAD = b'{"args": [], "kwargs": {}}'


def open_sqlite(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def sqlite_worker(path: Path, bell: str, stamps: Connection) -> None:
    db = open_sqlite(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(bell)
    sock.setblocking(False)
    stamps.send("ready")
    while True:
        select.select([sock], [], [])
        if sock.recv(16) == b"s":
            return
        while db.execute(CLAIM, ("floor",)).fetchall():
            stamps.send(time.time())


def redis_worker(url: str, key: str, stamps: Connection) -> None:
    import redis

    client = redis.Redis.from_url(url)
    stamps.send("ready")
    while True:
        payload = client.blmove(key, f"{key}:running", 0, "RIGHT", "LEFT")
        if payload == b"stop":
            return
        stamps.send(time.time())


def floor_sqlite(count: int, gap_s: float, workdir: Path) -> list[float]:
    path, bell = workdir / "floor.db", str(workdir / "bell")
    db = open_sqlite(path)
    db.execute("CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB, "
               "status TEXT NOT NULL, owner TEXT)")
    db.execute("CREATE INDEX jobs_pending ON jobs (status, seq)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def enqueue_and_wait(stamps: Connection) -> float:
        db.execute("INSERT INTO jobs (payload, status) VALUES (?, 'PENDING')", (PAYLOAD,))
        sock.sendto(b"w", bell)
        return float(stamps.recv())

    try:
        return _with_worker(sqlite_worker, (path, bell), enqueue_and_wait, count, gap_s,
                            stop=lambda: sock.sendto(b"s", bell))
    finally:
        sock.close()
        db.close()


def floor_redis(count: int, gap_s: float, workdir: Path) -> list[float]:
    import redis

    url, key = redis_db.url(0), f"pprunner-bench-floor-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(url)

    def enqueue_and_wait(stamps: Connection) -> float:
        client.lpush(key, PAYLOAD)
        return float(stamps.recv())

    try:
        return _with_worker(redis_worker, (url, key), enqueue_and_wait, count, gap_s,
                            stop=lambda: client.lpush(key, b"stop"))
    finally:
        client.delete(key, f"{key}:running")
        client.close()


def _with_worker(target: Callable[..., None], args: tuple[object, ...],
                 enqueue_and_wait: Callable[[Connection], float], count: int, gap_s: float,
                 stop: Callable[[], object]) -> list[float]:
    """Start ``target`` in a spawned process, sample, stop it, reap it."""
    receiving, sending = multiprocessing.get_context("spawn").Pipe(duplex=False)
    worker = multiprocessing.get_context("spawn").Process(target=target,
                                                          args=(*args, sending), daemon=True)
    worker.start()
    try:
        if not receiving.poll(30) or receiving.recv() != "ready":
            raise RuntimeError(f"the floor worker {target.__name__} did not start")
        return system.sample_latency(lambda: enqueue_and_wait(receiving), count, gap_s)
    finally:
        stop()
        worker.join(5)
        if worker.is_alive():
            worker.kill()
            worker.join()


def pprunner_latency(name: str, count: int, gap_s: float) -> list[float]:
    from .systems.pprunner_redis import PprunnerRedis
    from .systems.pprunner_sqlite import PprunnerSQLite

    cls = {"pprunner-sqlite": PprunnerSQLite, "pprunner-redis": PprunnerRedis}[name]
    runner = cls()
    with tempfile.TemporaryDirectory() as folder:
        runner.setup(Path(folder))
        try:
            return runner.latency(count, gap_s)
        finally:
            runner.teardown()


def floor(name: str, count: int, gap_s: float) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        measure = floor_sqlite if name == "floor-sqlite" else floor_redis
        return measure(count, gap_s, Path(folder))


SYSTEMS = ("floor-sqlite", "pprunner-sqlite", "floor-redis", "pprunner-redis")


def cold_code_lines(gap_s: float) -> list[str]:
    """What running after an idle gap costs on this machine, for two small steps of
    the path (the module docstring): a JSON encode and a SQLite insert."""
    encoder = json.JSONEncoder(separators=(",", ":"))
    with tempfile.TemporaryDirectory() as folder:
        db = open_sqlite(Path(folder) / "cold.db")
        db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB)")
        steps = {"JSON encode of {'args': [], 'kwargs': {}}":
                 lambda: encoder.encode({"args": [], "kwargs": {}}),
                 "SQLite INSERT (WAL, autocommit)":
                 lambda: db.execute("INSERT INTO t (payload) VALUES (?)", (PAYLOAD,))}
        lines = []
        for what, step in steps.items():
            warm, cold = median_s(step, 0.0), median_s(step, gap_s)
            lines.append(f"  {what}: {warm * 1e6:.0f} us back to back, {cold * 1e6:.0f} us "
                         f"{gap_s * 1000:g} ms apart ({cold / warm:.1f}x)")
        db.close()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_floor",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds per system (default 3)")
    args = parser.parse_args()
    settings = Settings.make(quick=False, rounds=args.rounds, interleave=True)
    count, gap = settings.latency_tasks, settings.latency_gap_s
    samples: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    for number in range(1, args.rounds + 1):
        for name in rotated(SYSTEMS, number):
            print(f"round {number}/{args.rounds}: {name} ...", file=sys.stderr)
            measure = floor if name.startswith("floor") else pprunner_latency
            samples[name].extend(measure(name, count, gap))
    print(f"idle enqueue -> start, {count} tasks {gap * 1000:g} ms apart per round, "
          f"{args.rounds} interleaved rounds, all samples pooled ({os.cpu_count()} CPUs)")
    print(f"{'system':16} {'p50':>8} {'p90':>8} {'p99':>8}   p50 over the floor")
    for name in SYSTEMS:
        values = sorted(samples[name])
        p50, p90, p99 = (values[int(q * (len(values) - 1))] * 1000 for q in (0.5, 0.9, 0.99))
        backend = name.split("-")[1]
        over = ("" if name.startswith("floor") else
                f"   +{p50 - statistics.median(samples[f'floor-{backend}']) * 1000:.2f} ms")
        print(f"{name:16} {p50:6.2f}ms {p90:6.2f}ms {p99:6.2f}ms{over}")
    print("code that has sat idle runs slower on this machine:")
    print("\n".join(cold_code_lines(gap)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
