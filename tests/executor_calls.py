"""Functions the executor tests run in worker processes.

Workers import them by reference (``tests.executor_calls.mul``), so they live
in a module of their own, importable under every start method. The ones that
must wait for the test do so on marker files (``started``/``release``), never
on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from pprunner import SoftTimeLimitExceeded
from tests.markers import announce

#: set by :func:`remember`, the initializer the tests give workers
STATE: Any = None


def mul(x: float, y: float) -> float:
    return x * y


def echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def return_none() -> None:
    return None


def pid(*_: Any) -> int:
    return os.getpid()


def length(data: bytes) -> int:
    return len(data)


def make_bytes(size: int) -> bytes:
    return os.urandom(16) * (size // 16)


def raise_runtime_error() -> None:
    raise RuntimeError(123)  # the line the worker traceback must show


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"cannot take {x}")
    return x * 10


class UnpicklableError(Exception):
    """Pickles (args only) but cannot be rebuilt: ``__init__`` needs two arguments."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def raise_unpicklable() -> None:
    raise UnpicklableError("carries a code", 7)


def return_lock() -> Any:
    return threading.Lock()


def wait_for(path: str, timeout: float = 30.0) -> None:
    """Poll for a marker file: how a worker waits for the test to let it go on."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def wait_lending(path: str, timeout: float = 30.0, lend: bool = True) -> int:
    """Wait for a marker file only another call writes, lending this worker's slot
    meanwhile (or not); returns this worker's pid."""
    import pprunner

    context = pprunner.current_context()
    assert context is not None
    with context.lend_slot() if lend else contextlib.nullcontext():
        wait_for(path, timeout)
    return os.getpid()


def write_marker(path: str) -> int:
    Path(path).write_text("written")
    return os.getpid()


def hold(markers: str, name: str, value: Any = None) -> Any:
    """Say ``<name>.started``, wait for ``<name>.release``, return ``value``."""
    announce(Path(markers, f"{name}.started"))
    wait_for(os.path.join(markers, f"{name}.release"))
    return value


def lead_own_group() -> None:
    """An initializer: the worker leads its own process group, as an RQ horse does."""
    os.setpgrp()


def run_a_subprocess(marker: str) -> None:
    """Start ``sleep`` and wait for it, having written its pid to ``marker``."""
    sleeper = subprocess.Popen(["sleep", "100"])
    partial = Path(f"{marker}.partial")
    partial.write_text(str(sleeper.pid))
    partial.replace(marker)
    sleeper.wait()


def kill_self(signum: int = signal.SIGKILL) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(30)  # not reached: the signal ends the process


def kill_self_once(marker: str) -> str:
    """SIGKILL this worker on the first attempt only (``marker`` remembers it)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return f"second attempt in pid {os.getpid()}"
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    kill_self()
    return "not reached"


def exit_with(code: int) -> None:
    os._exit(code)


def run_past(seconds: float) -> str:
    """Run longer than any limit a test sets (the limit interrupts or kills it)."""
    time.sleep(seconds)
    return "finished"


def catch_soft_limit(seconds: float) -> str:
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded as exc:
        return f"caught: {exc}"
    return "finished"


def remember(value: Any, log: str | None = None) -> None:
    """An initializer: keeps ``value`` and, with ``log``, appends this pid to it."""
    global STATE
    STATE = value
    if log is not None:
        with open(log, "a") as file:
            file.write(f"{os.getpid()}\n")


def state() -> tuple[Any, int]:
    return STATE, os.getpid()


def refuse_to_start(log: str) -> None:
    """An initializer that fails, noting each attempt (a respawn loop would show)."""
    with open(log, "a") as file:
        file.write(f"{os.getpid()}\n")
    raise RuntimeError("the database is not there")


def ignore_soft_limit(marker: str, seconds: float) -> str:
    """Note this pid, then run on through the soft limit: only the hard one stops it."""
    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(SoftTimeLimitExceeded):
            time.sleep(deadline - time.monotonic())
    return "finished"


class LoadsBadly:
    """Pickles in the worker, but cannot be unpickled: ``int("not a number")`` raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return int, ("not a number",)


def return_loads_badly() -> LoadsBadly:
    return LoadsBadly()


def note_preparing_pid(folder: str) -> None:
    """A host's ``prepare``: leaves a file named after the process that ran it."""
    Path(folder, str(os.getpid())).touch()
