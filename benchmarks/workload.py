"""The functions every system runs.

Plain functions, importing no queue library, so that a bare pool (and each
worker it forks) pays for nothing but the work; ``benchmarks.apps`` wraps
the same functions as pprunner tasks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def noop(x: int) -> int:
    return x + 1


def stamp() -> float:
    """The moment the task started, read inside the worker.

    Returned as the result, it is the end point of enqueue-to-start
    latency, independent of how quickly the producer notices the result.
    """
    return time.time()


def announce_and_sleep(marker: str, seconds: float) -> float:
    """Append ``"<pid> <start time>"`` to ``marker``, then sleep.

    Each attempt announces itself, so a benchmark knows which process to
    kill and exactly when a retry began.
    """
    with open(marker, "a") as stream:  # one short O_APPEND write: never interleaved
        stream.write(f"{os.getpid()} {time.time()!r}\n")
    time.sleep(seconds)
    return seconds


def attempts(marker: Path) -> list[tuple[int, float]]:
    """``(pid, start time)`` of each attempt announced in ``marker`` so far."""
    try:
        text = marker.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # a line without its newline is still being written
    return [(int(pid), float(started)) for pid, started in (line.split() for line in lines)]


def burn(iterations: int) -> int:
    """CPU-bound pure-Python work (no I/O, the GIL held throughout): a sum of squares."""
    total = 0
    for i in range(iterations):
        total += i * i
    return total
