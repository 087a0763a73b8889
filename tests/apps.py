"""Apps the tests run in real worker processes (workers import them by path)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from pprunner import App, Retry, current_context
from pprunner.errors import SoftTimeLimitExceeded, TimeLimitExceeded
from pprunner.plugins import CORE
from tests.markers import announce

app = App(name="tests", include=["tests.apps_waiting"])


def _context():  # type: ignore[no-untyped-def]
    context = current_context()
    assert context is not None and context.invocation is not None
    return context


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def whoami() -> dict[str, object]:
    context = _context()
    return {"pid": os.getpid(), "runner": context.runner_id, "slot": context.slot}


@app.task
def whoami_slowly(seconds: float) -> dict[str, object]:
    time.sleep(seconds)
    return whoami.function()


@app.task(max_attempts=3)
def blocks_on_first_attempt(marker_dir: str) -> int:
    """Announces each attempt in a marker file; the first one then blocks
    until its worker is killed, later ones return their attempt number."""
    attempt = _context().invocation.attempts
    announce(Path(marker_dir, f"started-{attempt}"))
    if attempt == 1:
        time.sleep(120)
    return attempt


@app.task
def announce_then_sleep(marker_dir: str, seconds: float) -> str:
    announce(Path(marker_dir, "started"))
    time.sleep(seconds)
    return "slept"


@app.task
def ignores_sigterm(marker_dir: str, seconds: float) -> str:
    """Shrugs off SIGTERM, as a task stuck in C code would: only a SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return announce_then_sleep(marker_dir, seconds)


@app.task(max_attempts=1)
def exit_hard(code: int) -> None:
    os._exit(code)


@app.task(max_attempts=2)
def always_killed() -> None:
    os.kill(os.getpid(), 9)


@app.task
def cache_put(key: str, value: str) -> None:
    _context().runner_cache[key] = value


@app.task
def cache_get(key: str) -> str | None:
    return _context().runner_cache.get(key)


@app.task
def returns_unencodable() -> object:
    return {1, 2}


@app.task(time_limit=0.5)
def overstays() -> None:
    time.sleep(60)


@app.task(time_limit=0.5, max_attempts=2, retry_on=(TimeLimitExceeded,))
def overstays_once() -> int:
    attempt = _context().invocation.attempts
    if attempt == 1:
        time.sleep(60)
    return attempt


@app.task(soft_time_limit=0.2, time_limit=30)
def cleans_up_after_soft_limit() -> str:
    try:
        time.sleep(60)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@app.task(soft_time_limit=0.2, time_limit=30)
def ignores_soft_limit() -> None:
    time.sleep(60)


_hoard: list[bytes] = []


@app.task
def hoard_memory(mebibytes: int) -> int:
    """Keeps the memory it allocates, as a leaking task would."""
    _hoard.append(b"\x01" * (mebibytes * 2**20))  # written, so resident
    return os.getpid()


@app.task(max_attempts=1)
def abort() -> None:
    os.abort()


@app.task
def echo(value: object) -> object:
    """Serializer tests: the argument back, as the worker decoded it."""
    return value


@app.task(serializer="cloudpickle")
def call(function: Any, argument: object) -> object:
    """Takes a function (a lambda, too): this task alone accepts cloudpickle."""
    return function(argument)


@app.task
def sized_result(size: int) -> str:
    return "x" * size


@app.task(max_attempts=2)
def retries_once() -> int:
    """Asks for another attempt on its first; returns the attempt that succeeded."""
    attempt = _context().invocation.attempts
    if attempt == 1:
        raise Retry("once more", delay=0)
    return attempt


@app.task(max_attempts=1)
def fails_first_time(marker_dir: str) -> str:
    """Fails while ``marker_dir`` holds no ``failed-once`` file, which its first run
    leaves: an operator's retry then succeeds (the dashboard's browser test)."""
    marker = Path(marker_dir, "failed-once")
    if not marker.exists():
        announce(marker)
        raise RuntimeError("the first run fails; a retry succeeds")
    return "succeeded on retry"


@app.task
def held(marker_dir: str) -> str:
    """Says ``held.started``, then returns once the test writes ``held.release``."""
    from tests.executor_calls import hold

    return str(hold(marker_dir, "held", "released"))


@app.task
def parent_of_held(marker_dir: str) -> str:
    """Waits (paused, only polling) for a child held until the test releases it."""
    return str(held.enqueue(marker_dir).result(timeout=60, strategy="poll"))


@app.task
def per_job_hook_owners() -> list[str]:
    """Which plugins implement the per-job hooks in this worker (class or module names)."""
    hook = _context().plugins.hook
    return sorted(getattr(impl.plugin, "__name__", type(impl.plugin).__name__)
                  for name in ("pprunner_attempt_started", "pprunner_attempt_ended",
                               "pprunner_enqueue")
                  for impl in getattr(hook, name).get_hookimpls()
                  if impl.plugin_name != CORE)
