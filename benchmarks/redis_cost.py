"""``python -m benchmarks redis_cost [--tasks N] [--batch B]``: what one task costs Redis.

A private ``redis-server`` (a free loopback port, no persistence) so that its
``INFO commandstats`` counts pprunner alone: N no-op tasks are enqueued by
this process, then run by ``pprunner run --processes 2``; the statistics are
reset before each phase and read when it ends. This is done for the default
backend URL and for one with ``batch=B`` (a worker claims up to B at once and
writes their completions together), alternately, in the same run. Printed per
configuration, phase and task:

- commands: every command the server ran, those run by Lua scripts included
  (an EVALSHA whose script makes six calls counts 7);
- server time: the CPU the Redis process used (``INFO cpu``, user + system),
  which is what saturates one Redis core; and the ``usec`` of the commands
  clients sent (EVALSHA's includes its script's calls, so those are not added
  again);
- the commands one by one, so a change to the scripts shows where it went.

Progress is watched by one ZCARD every 0.2 s, subtracted from the counts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pprunner.testing.redis_servers import PrivateRedis

from . import report

TASKS = 10_000
WORKERS = 2
PREFIX = "cost"
POLL_S = 0.2
#: what the measured servers write to disk: nothing
NO_PERSISTENCE = ("--appendonly", "no")
#: commands only Lua scripts send while workers run: their time is already in EVALSHA's
SCRIPT_ONLY = frozenset({"exists", "incr", "lpop", "hset", "zadd", "rpush", "hmget", "hgetall",
                         "zrem", "lrem", "xrange", "zrangebyscore", "lrange", "lmove", "smembers",
                         "get", "xtrim", "xadd", "hget", "expire", "sadd", "lpos", "zscore",
                         "srem", "hdel", "zrange", "ltrim", "lpush", "rpop"})
#: what a producer sends itself to enqueue (no script: HSET, RPUSH, LLEN); the rest of the
#: enqueue phase's commands are a script's (a hand-out to idle runners, a resend)
SENT_TO_ENQUEUE = frozenset({"hset", "rpush", "llen"})
#: the ``batch`` measured beside the default (pgqueuer's default batch size is 10)
BATCH = 16
REPO = Path(__file__).resolve().parent.parent


def snapshot(client: Any) -> tuple[dict[str, tuple[int, int]], float]:
    """({command: (calls, usec)}, the server's CPU seconds so far)."""
    stats = {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
             for name, v in client.info("commandstats").items()}
    cpu = client.info("cpu")
    return stats, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def reset(client: Any) -> float:
    client.config_resetstat()
    return snapshot(client)[1]


def enqueue_phase(url: str, tasks: int) -> None:
    from .apps import app, noop

    app.configure(source="benchmarks.redis_cost", replace=True, backend=url)
    try:
        for n in range(tasks):
            noop.enqueue(n)
    finally:
        app.close()


def run_phase(url: str, client: Any, tasks: int) -> int:
    """Run the queue dry with ``pprunner run``; how many polls it took to see it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPRUNNER_")}
    env.update(PPRUNNER_BACKEND=url, PYTHONPATH=str(REPO))
    pool = subprocess.Popen([sys.executable, "-m", "pprunner", "run", "--app",
                             "benchmarks.apps:app", "--processes", str(WORKERS)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    polls = 0
    try:
        while client.zcard(f"{PREFIX}:ended") < tasks:
            polls += 1
            if pool.poll() is not None:
                raise RuntimeError(f"pprunner run exited with {pool.returncode}")
            time.sleep(POLL_S)
        return polls + 1
    finally:
        pool.terminate()
        pool.wait(timeout=60)


def phase_cost(stats: dict[str, tuple[int, int]], cpu_s: float,
               script_only: frozenset[str]) -> tuple[int, float, int]:
    """(commands, CPU seconds, the usec of the commands clients sent) of one phase."""
    calls = sum(c for c, _ in stats.values())
    return calls, cpu_s, sum(u for command, (_, u) in stats.items() if command not in script_only)


def phase_row(name: str, cost: tuple[int, float, int], tasks: int) -> tuple[str, ...]:
    calls, cpu_s, sent_usec = cost
    return (name, f"{calls / tasks:.1f}", f"{1e6 * cpu_s / tasks:.1f}",
            f"{sent_usec / tasks:.1f}")


def breakdown(stats: dict[str, tuple[int, int]], tasks: int) -> str:
    """Per task, each command's calls and usec (a script's own calls' usec are also in
    EVALSHA's; what EVALSHA has beyond them is the Lua interpreter's)."""
    return ", ".join(f"{command} {calls / tasks:.2f} ({usec / tasks:.1f} us)"
                     for command, (calls, usec) in
                     sorted(stats.items(), key=lambda item: -item[1][0]) if calls)


def measure(tasks: int, query: str = "") -> list[str]:
    """The table and the breakdown for a backend URL ending in ``query``."""
    with tempfile.TemporaryDirectory(prefix="pprunner-redis-cost-") as folder:
        server = PrivateRedis(Path(folder), options=NO_PERSISTENCE)
        server.start()
        try:
            return measure_on(server, tasks, query)
        finally:
            server.kill()


def measure_on(server: PrivateRedis, tasks: int, query: str = "") -> list[str]:
    """The table and the breakdown, from ``tasks`` enqueued and run on ``server``."""
    url = f"{server.url}?prefix={PREFIX}{query}"
    client = server.client()
    try:
        cpu_before = reset(client)
        enqueue_phase(url, tasks)
        enqueued, cpu_after = snapshot(client)
        enqueue_cpu = cpu_after - cpu_before
        cpu_before = reset(client)
        polls = run_phase(url, client, tasks)
        ran, cpu_after = snapshot(client)
    finally:
        client.close()
    calls, usec = ran["zcard"]
    ran["zcard"] = (calls - polls, usec - usec * polls // max(calls, 1))
    run_cpu = cpu_after - cpu_before
    rows: list[tuple[str, ...]] = [
        ("phase", "commands/task", "Redis CPU us/task", "sent commands' usec/task")]
    enqueue = phase_cost(enqueued, enqueue_cpu, SCRIPT_ONLY - SENT_TO_ENQUEUE)
    run = phase_cost(ran, run_cpu, SCRIPT_ONLY)
    total = (enqueue[0] + run[0], enqueue[1] + run[1], enqueue[2] + run[2])
    rows += [phase_row("enqueue", enqueue, tasks), phase_row("run", run, tasks),
             phase_row("total", total, tasks)]
    return [*report.aligned(rows), "", f"enqueue, per task: {breakdown(enqueued, tasks)}",
            f"run, per task: {breakdown(ran, tasks)}"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks redis_cost",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=TASKS, help=f"default {TASKS:,}")
    parser.add_argument("--batch", type=int, default=BATCH,
                        help=f"the batch= measured beside the default (default {BATCH})")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of each, alternating (default 1); every round printed")
    args = parser.parse_args(argv)
    print(report.machine_line(report.machine()))
    print(f"{args.tasks:,} no-op tasks, {WORKERS} workers, a private redis-server")
    for round_number in range(1, args.rounds + 1):
        for title, query in (("default", ""), (f"batch={args.batch}", f"&batch={args.batch}")):
            print(f"\nround {round_number}, {title}:")
            print("\n".join(measure(args.tasks, query)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
