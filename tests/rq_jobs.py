"""Jobs for ``tests/test_rq.py``, imported by real ``rq worker`` processes and their horses."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from rq import get_current_job


def _connection() -> Any:
    job = get_current_job()
    assert job is not None
    return job.connection


def add(x: int, y: int) -> int:
    return x + y


def pid() -> int:
    return os.getpid()


def boom(message: str) -> None:
    raise ValueError(message)


def sleep(seconds: float) -> int:
    """Marks its start (for a test to act on a running job), sleeps, returns its pid."""
    _connection().rpush(f"started:{get_current_job().id}", os.getpid())  # type: ignore[union-attr]
    time.sleep(seconds)
    return os.getpid()


def stuck(seconds: float) -> None:
    """Sleeps with SIGALRM blocked, as native code that RQ's death penalty cannot interrupt."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)


def flaky(key: str, failures: int) -> int:
    """Raises on its first ``failures`` attempts; returns the attempt that succeeded."""
    attempt = int(_connection().incr(key))
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


def die(key: str | None = None) -> str:
    """SIGKILLs its own process; with ``key``, only on the first attempt."""
    if key is None or int(_connection().incr(key)) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def hold(key: str, seconds: float) -> int:
    """The first attempt records its pid and sleeps ``seconds``; later ones return at once."""
    attempt = int(_connection().incr(key))
    if attempt == 1:
        sleep(seconds)
    return attempt


def with_meta(value: str) -> str:
    job = get_current_job()
    assert job is not None
    job.meta["seen"] = value
    job.save_meta()
    return value


def record_failure(job: Any, connection: Any, kind: Any, value: Any, traceback: Any) -> None:
    connection.rpush(f"on_failure:{job.id}", kind.__name__)
