"""``python -m benchmarks.producer URL COUNT MODE``: what enqueueing costs a producer.

Enqueues COUNT no-op tasks on the store at URL, in this fresh process, and
prints the seconds they took (after one enqueue not counted, which opens the
store and configures the plugins). MODE is the producer's tracing, in
:data:`benchmarks.otel.MODES`: ``off``, ``api`` (on, no SDK) or ``sdk`` (on,
spans recorded and dropped). A process of its own, since a process has one
tracer provider: ``python -m benchmarks tracing`` runs it for each system.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from . import otel
from .apps import app, noop


def main(argv: Sequence[str]) -> int:
    url, count, mode = argv
    if mode not in otel.MODES:
        raise SystemExit(f"unknown tracing mode {mode!r}; known: {', '.join(otel.MODES)}")
    if mode == "sdk":
        otel.install_sdk()
    app.configure(source="benchmarks.producer", replace=True, backend=url,
                  tracing=mode != "off")
    noop.enqueue(0)
    started = time.perf_counter()
    for x in range(int(count)):
        noop.enqueue(x)
    print(time.perf_counter() - started)
    app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
