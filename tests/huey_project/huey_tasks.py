"""A Huey project folder for tests/test_huey.py: ``pprunner huey huey_tasks.huey``
runs from here, with no PYTHONPATH, as a user starts it. The Redis URL comes from
``HUEY_TEST_REDIS_URL`` (the tests' own server and database)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from huey import RedisHuey

huey = RedisHuey("pprunner-tests", url=os.environ.get("HUEY_TEST_REDIS_URL",
                                                      "redis://127.0.0.1:6379/13"))


@huey.task()
def pid() -> int:
    return os.getpid()


@huey.task()
def sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@huey.task()
def block_first(marker_dir: str) -> int:
    """The first attempt writes its pid and blocks until its worker dies; the next
    one returns its pid."""
    first = Path(marker_dir, "first")
    if not first.exists():
        partial = Path(marker_dir, "first.partial")
        partial.write_text(str(os.getpid()))
        partial.replace(first)
        time.sleep(120)
    return os.getpid()


@huey.task(timeout=0.5)
def stuck_in_native_code(marker_dir: str) -> int:
    """Stands for native code that never returns to the interpreter: Huey's SIGALRM
    is blocked, so only a kill ends it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    Path(marker_dir, "stuck").write_text(str(os.getpid()))
    time.sleep(60)
    return os.getpid()


@huey.task()
def parent(children: int) -> int:
    """Waits for its children as Huey's docs show: result.get(blocking=True)."""
    results = [pid() for _ in range(children)]
    return len({r.get(blocking=True, timeout=30) for r in results})


@huey.task()
def wait_for_a_task_never_sent(seconds: float) -> str:
    """A blocking wait with a timeout for a result that never comes: what it raises."""
    try:
        huey.result("never-sent", blocking=True, timeout=seconds)
    except Exception as exc:  # Huey's ResultTimeout, whatever wait it went through
        return f"{type(exc).__module__}.{type(exc).__name__}"
    return "no error"
