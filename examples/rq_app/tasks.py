"""Plain RQ jobs: nothing here knows about pprunner."""

from __future__ import annotations

import os
import time

from rq import Retry, get_current_job


def add(x: int, y: int) -> int:
    return x + y


def whereami() -> str:
    """Which horse ran it: the same pid, job after job."""
    return f"job {get_current_job().id} ran in horse pid {os.getpid()}"  # type: ignore[union-attr]


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds} s"


def crash() -> None:
    """Kills its horse: RQ fails (or, with Retry, retries) the job at once."""
    os.kill(os.getpid(), 9)


RETRY_TWICE = Retry(max=2)
