"""``python -m benchmarks.metrics_cpu``: the CPU the metrics plugin costs a pool.

``[--rounds N] [--tasks N]``. On a machine shared with other work, a pool's
throughput swings with the load; the CPU time it uses for the same work
swings far less. Each round enqueues ``--tasks`` no-op tasks into a fresh
SQLite store and runs ``pprunner run --burst --processes 2`` over them, with
metrics off and then on (``PPRUNNER_METRICS_PORT``, a free loopback port):
interleaved, so both see the same load. The CPU is the pool's whole
(supervisor, workers, helpers: the resource usage of the command and its
children), start and stop included, so prometheus_client's import is in it.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from . import system
from .pools import free_port


def burst_cpu_s(tasks: int, metrics: bool) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one ``pprunner run --burst`` over ``tasks`` no-ops."""
    from pprunner import Status

    from . import apps

    with tempfile.TemporaryDirectory(prefix="pprunner-bench-") as folder:
        url = f"sqlite:///{folder}/jobs.db"
        apps.app.configure(source="the benchmark", replace=True, backend=url)
        for x in range(tasks):
            apps.noop.enqueue(x)
        apps.app.close()
        env = system.child_env(PPRUNNER_BACKEND=url, PPRUNNER_SHUTDOWN_TIMEOUT="1")
        if metrics:
            env["PPRUNNER_METRICS_PORT"] = f"127.0.0.1:{free_port()}"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(system.python("-m", "pprunner", "run", "--app", "benchmarks.apps:app",
                                     "--processes", str(system.WORKERS), "--burst"),
                       cwd=folder, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if apps.app.backend.counts()[Status.SUCCESS] != tasks:
            raise RuntimeError("not every task succeeded")
        apps.app.close()
        apps.app.configure(source="the benchmark", replace=True)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_cpu",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args(argv)
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for number in range(1, args.rounds + 1):
        for metrics in (False, True):
            runs[metrics].append(burst_cpu_s(args.tasks, metrics))
            cpu, wall = runs[metrics][-1]
            print(f"round {number}: metrics {'on ' if metrics else 'off'} CPU {cpu:.2f} s, "
                  f"wall {wall:.2f} s", file=sys.stderr, flush=True)
    cpu = {m: [c for c, _ in runs[m]] for m in runs}
    print(f"{args.tasks:,} no-op tasks, {system.WORKERS} workers, SQLite; medians of "
          f"{args.rounds} interleaved rounds:")
    for metrics in (False, True):
        median = statistics.median(cpu[metrics])
        print(f"  metrics {'on ' if metrics else 'off'}: CPU {median:.3f} s "
              f"({median / args.tasks * 1e6:.1f} us per task), wall "
              f"{statistics.median(w for _, w in runs[metrics]):.2f} s")
    paired = [on / off for on, off in zip(cpu[True], cpu[False], strict=True)]
    print(f"  CPU on / off: {statistics.median(cpu[True]) / statistics.median(cpu[False]):.3f} "
          f"(medians), {statistics.median(paired):.3f} (median of the paired rounds); on above "
          f"off in {sum(r > 1 for r in paired)} of {len(paired)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
