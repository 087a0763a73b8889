"""``python -m benchmarks.metrics_storage``: what counting one job costs a worker, three ways.

The metrics plugin has each pull-mode worker count its attempts where the
supervisor can read them. Three ways were weighed; this measures what each
costs per job (a start, a success and its duration), in one process:

- ``tally``: the plugin's own memory-mapped file (:mod:`pprunner_plugins.prometheus.tally`);
- ``prometheus_client multiprocess``: prometheus_client's metrics in its
  multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), a Counter for started and
  succeeded and a Histogram, by task label;
- ``message to the supervisor``: one pickled message per job on a pipe, sent
  and received (both ends here, so without the supervisor's wake-up, which a
  real one pays on top, once per job).

Needs prometheus_client (the ``prometheus`` extra). Prints microseconds per job,
the median of several runs.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import statistics
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

JOBS = 20_000
RUNS = 7
TASK = "bench.noop"


def per_job_us(job: Callable[[], None]) -> float:
    return statistics.median(timeit.repeat(job, number=JOBS, repeat=RUNS)) / JOBS * 1e6


def tally_job(folder: Path) -> Callable[[], None]:
    from pprunner_plugins.prometheus import tally

    counts = tally.Tally(folder / f"worker{tally.SUFFIX}")

    def job() -> None:
        counts.add(TASK, tally.STARTED)
        counts.ended(TASK, tally.SUCCEEDED, 0.0004)

    return job


def prometheus_client_job(folder: Path) -> Callable[[], None]:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)  # read at its first import
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    started = Counter("started", "", ["task"], registry=registry).labels(TASK)
    succeeded = Counter("succeeded", "", ["task"], registry=registry).labels(TASK)
    duration = Histogram("duration_seconds", "", ["task"], registry=registry).labels(TASK)

    def job() -> None:
        started.inc()
        succeeded.inc()
        duration.observe(0.0004)

    return job


def message_job() -> Callable[[], None]:
    receiver, sender = multiprocessing.Pipe(duplex=False)

    def job() -> None:
        sender.send_bytes(pickle.dumps(("done", TASK, "succeeded", 0.0004),
                                       pickle.HIGHEST_PROTOCOL))
        pickle.loads(receiver.recv_bytes())

    return job


def main() -> int:
    if "prometheus_client" in sys.modules:
        raise SystemExit("run it in a fresh process: prometheus_client must be imported last")
    with tempfile.TemporaryDirectory() as tally_folder, \
            tempfile.TemporaryDirectory() as client_folder:
        rows = [("tally (the plugin's)", per_job_us(tally_job(Path(tally_folder)))),
                ("message to the supervisor", per_job_us(message_job())),
                ("prometheus_client multiprocess",
                 per_job_us(prometheus_client_job(Path(client_folder))))]
    print(f"per job (a start, a success, its duration), median of {RUNS} runs of {JOBS:,}:")
    for name, micros in rows:
        print(f"  {name:32} {micros:6.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
