"""``python -m benchmarks.producer URL COUNT MODE``: what tracing costs, in one process.

In this fresh process, on the store at URL: enqueue COUNT no-op tasks (after
one that is not counted: it opens the store and configures the plugins), then
run them all inline (``InlineSupervisor(app, burst=True)``: the worker's
loop, in this process). Prints JSON: the enqueues' wall time in seconds, and
the CPU time per invocation (``time.process_time``, which other processes on a
shared machine do not inflate as they do wall time) of enqueueing and of
claiming, running and completing. MODE is the tracing, in
:data:`benchmarks.otel.MODES`: ``off``, ``api`` (on, no SDK) or ``sdk`` (on,
spans recorded and dropped). A process of its own, since a process has one
tracer provider: ``python -m benchmarks tracing`` runs it for each system.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from . import otel
from .apps import app, noop


def main(argv: Sequence[str]) -> int:
    url, text, mode = argv
    if mode not in otel.MODES:
        raise SystemExit(f"unknown tracing mode {mode!r}; known: {', '.join(otel.MODES)}")
    if mode == "sdk":
        otel.install_sdk()
    from pprunner import InlineSupervisor

    count = int(text)
    app.configure(source="benchmarks.producer", replace=True, backend=url,
                  tracing=mode != "off", log_level="WARNING")
    noop.enqueue(0)
    started, cpu = time.perf_counter(), time.process_time()
    for x in range(count):
        noop.enqueue(x)
    enqueue_s, enqueue_cpu = time.perf_counter() - started, time.process_time() - cpu
    cpu = time.process_time()
    InlineSupervisor(app, burst=True).run()
    drain_cpu = time.process_time() - cpu
    app.close()
    print(json.dumps({"enqueue_s": enqueue_s, "enqueue_cpu_us": 1e6 * enqueue_cpu / count,
                      "drain_cpu_us": 1e6 * drain_cpu / (count + 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
