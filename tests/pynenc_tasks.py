"""The pynenc app the plugin tests run, on pynenc's SQLite components.

The database file comes from ``PYNENC__SQLITE_DB_PATH`` (set by the test
module before importing this one; worker processes inherit it). The runner
is selected the one way a user selects it: ``runner_cls``.
"""

from __future__ import annotations

import os
import signal
import time

from pynenc.builder import PynencBuilder

app = (PynencBuilder().app_id("pprunner-pynenc-tests").sqlite()
       .custom_config(runner_cls="PprunnerRunner", num_processes=2,
                      # the producer (the test) sees a result as soon as it is stored
                      cached_status_time=0.0, logging_level="warning")
       .build())


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def whoami() -> int:
    return os.getpid()


@app.task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def die_once(marker: str) -> int:
    """SIGKILLs its worker the first time (a marker file remembers), then succeeds."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        # pynenc writes the RUNNING history record from a thread: let it land first
        app.state_backend.wait_for_all_async_operations()
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


@app.task
def always_die() -> None:
    """SIGKILLs its worker every time (a poison invocation)."""
    app.state_backend.wait_for_all_async_operations()  # its RUNNING record first
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
def spin() -> None:
    while True:
        pass


@app.task
def parent_of(count: int) -> int:
    """Waits on ``count`` children it calls: a fan-out tree inside a task."""
    return sum(child.result for child in [add(n, 0) for n in range(count)])
