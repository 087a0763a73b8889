"""A standard-library pool in a process of its own.

Throughput and idle cost time and measure a pool from its launch, as they
do for ``pprunner run``; so the bare pools are launched as a process too,
which pays the same interpreter start:

    python -m benchmarks.poolhost KIND WORKERS throughput COUNT
        map noop over COUNT items; print {"drain_s": submit-to-all-done}; exit
    python -m benchmarks.poolhost KIND WORKERS idle
        run one stamp task; print {"started_at": its start}; idle until stdin closes

Standard library and :mod:`benchmarks.workload` only, so it weighs what a
bare pool weighs. SIGTERM ends it gracefully (the pool is terminated).
"""

from __future__ import annotations

import json
import select
import signal
import sys
import time
from typing import Any

from .pools import open_pool
from .workload import noop, stamp

#: the longest an idle host waits for its stdin to close
IDLE_LIMIT_S = 600.0


def answer(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


def main(argv: list[str]) -> int:
    kind, workers, command, *rest = argv
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with open_pool(kind, int(workers)) as pool:
        if command == "throughput":
            count = int(rest[0])
            started = time.perf_counter()
            results = pool.map(noop, range(count))
            drain = time.perf_counter() - started
            if results != [x + 1 for x in range(count)]:
                raise SystemExit("the pool returned wrong results")
            answer({"drain_s": drain})
        elif command == "idle":
            answer({"started_at": pool.submit(stamp).result(timeout=30)})
            select.select([sys.stdin], [], [], IDLE_LIMIT_S)  # readable at EOF
        else:
            raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
