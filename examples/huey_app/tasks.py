"""Plain Huey tasks: nothing here knows about pprunner."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from huey import RedisHuey

huey = RedisHuey("huey-app", url=os.environ.get("HUEY_REDIS_URL", "redis://127.0.0.1:6379/0"))


@huey.task()
def add(x: int, y: int) -> int:
    return x + y


@huey.task()
def whereami() -> str:
    """Which worker ran it: the same few pids, task after task."""
    return f"worker pid {os.getpid()}"


@huey.task(timeout=1)
def slow(seconds: float) -> str:
    """Past its timeout: Huey's TaskTimeout (pprunner kills the worker a second later
    if the alarm could not end it)."""
    time.sleep(seconds)
    return f"slept {seconds} s"


@huey.task(context=True)
def crash(task: Any = None) -> str:
    """Kills its worker on the first attempt: pprunner puts the task back in the queue
    at once, and the second attempt (same task id) runs on another worker."""
    marker = Path(tempfile.gettempdir(), f"huey-app-crashed-{task.id}")
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    marker.unlink()
    return f"ran again in worker pid {os.getpid()}"
