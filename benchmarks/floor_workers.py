"""``python -m benchmarks.floor_workers URL``: the ``floor`` systems' pool
(:mod:`benchmarks.systems.drain_floor`): two spawned processes that drain the
queue at ``URL`` with pprunner's backend and nothing else of pprunner's.
"""

from __future__ import annotations

import multiprocessing
import sys

from .system import WORKERS

#: what every invocation "returns": JSON for 1, as a no-op task's result would be
RESULT = b"1"


def drain(url: str, runner_id: str) -> None:
    """Claim and complete until nothing is left (the stored times are the measurement)."""
    from pprunner.plugins import get_plugin_manager

    backend = get_plugin_manager().registry.backend_for(url)
    try:
        invocation = backend.claim(runner_id, 0)
        while invocation is not None:
            invocation = backend.complete_and_claim(invocation.id, runner_id, RESULT)
    finally:
        backend.close()


def main(url: str) -> int:
    """``WORKERS`` spawned processes drain ``url``; exit status 0 when all ended well."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=drain, args=(url, f"floor-{n}")) for n in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return max(abs(worker.exitcode or 0) for worker in workers)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
