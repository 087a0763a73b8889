"""The processes a benchmark starts: launching, measuring, and always ending them.

Every command runs in its own process group (its own session), and ending
it means killing the whole group: a supervisor's workers are in its group,
so they go too, even when the supervisor itself is killed or the benchmark
is interrupted. The terminal's Ctrl-C does not reach those groups; the
benchmark's ``finally`` blocks end them instead.

CPU time comes from ``/proc/<pid>/schedstat`` (exact) when the kernel
has it, else psutil, else ``/proc/<pid>/stat``; memory from psutil, else
``/proc/<pid>/stat``; process trees and groups are read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

try:
    import psutil
except ImportError:  # the /proc fallback below measures the same things
    psutil = None

T = TypeVar("T")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: seconds a process group gets between SIGTERM (graceful stop) and SIGKILL
STOP_GRACE = 5.0
#: seconds SIGKILLed processes get to disappear before we give up loudly
KILL_WAIT = 5.0
#: the kernel exposes exact per-thread CPU time
SCHEDSTAT = Path("/proc/self/schedstat").exists()


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str,
               poll: float = 0.005) -> T:
    """Poll ``predicate`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


# -- /proc -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """The fields of ``/proc/<pid>/stat`` the benchmarks use."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    cpu_s: float
    rss: int

    @property
    def alive(self) -> bool:
        return self.state != "Z"


def stat(pid: int) -> Stat | None:
    """The process's stat, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name in (...) may contain spaces
    return Stat(pid=pid, state=fields[0], ppid=int(fields[1]), pgrp=int(fields[2]),
                cpu_s=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
                rss=int(fields[21]) * PAGE_SIZE)


def _processes() -> list[Stat]:
    stats = (stat(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [s for s in stats if s is not None]


def descendants(pid: int, *, zombies: bool = False) -> list[int]:
    """Children, grandchildren... of ``pid`` (living ones unless ``zombies``)."""
    by_parent: dict[int, list[Stat]] = {}
    for s in _processes():
        by_parent.setdefault(s.ppid, []).append(s)
    found, todo = [], [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            todo.append(child.pid)
            if zombies or child.alive:
                found.append(child.pid)
    return found


def children(pid: int) -> set[int]:
    """Living direct children of ``pid``."""
    return {s.pid for s in _processes() if s.ppid == pid and s.alive}


def group_members(pgid: int) -> list[int]:
    """Living processes in process group ``pgid``."""
    return [s.pid for s in _processes() if s.pgrp == pgid and s.alive]


def title(pid: int) -> str:
    """The command line as ``ps`` shows it (a process may retitle itself)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds the process itself has used (not its children).

    The scheduler's exact runtime in nanoseconds first, summed over the
    process's threads (``/proc/<pid>/task/*/schedstat``; a thread that ends
    takes its time with it, none should while idle). psutil's
    ``cpu_times`` (and ``/proc/<pid>/stat``) count clock ticks of 10 ms,
    too coarse for a pool that idles at a few milliseconds per second.
    """
    if SCHEDSTAT:
        return _runtime(pid)
    if psutil is not None:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)
    s = stat(pid)
    return None if s is None else s.cpu_s


def _runtime(pid: int) -> float | None:
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    total = 0
    for thread in threads:
        with contextlib.suppress(OSError, ValueError, IndexError):  # it ended meanwhile
            total += int((thread / "schedstat").read_text().split()[0])
    return total / 1e9


def rss_bytes(pid: int) -> int:
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return 0
    s = stat(pid)
    return 0 if s is None else s.rss


@dataclass(frozen=True)
class TreeSample:
    """What a process tree used over a window."""

    cpu_s: float
    window_s: float
    rss_bytes: int
    processes: int


def sample_tree(root: int, window: float) -> TreeSample:
    """CPU seconds used by ``root`` and its descendants over ``window`` seconds,
    and their summed RSS at the end.

    The tree must not change meanwhile: the CPU of a process that died or
    appeared would be missing from the sum, so that is an error.
    """
    pids = [root, *descendants(root)]
    before = {pid: cpu_seconds(pid) for pid in pids}
    started = time.monotonic()
    time.sleep(window)
    after = {pid: cpu_seconds(pid) for pid in [root, *descendants(root)]}
    window = time.monotonic() - started
    if set(after) != set(before) or None in (*before.values(), *after.values()):
        raise RuntimeError(f"the process tree of {root} changed while idle: "
                           f"{sorted(before)} -> {sorted(after)}")
    cpu = sum((after[pid] or 0.0) - (before[pid] or 0.0) for pid in pids)
    return TreeSample(cpu_s=cpu, window_s=window, rss_bytes=sum(map(rss_bytes, after)),
                      processes=len(after))


# -- launching and ending --------------------------------------------------------------


@contextlib.contextmanager
def process_group(argv: Sequence[str], *, env: dict[str, str], cwd: Path, graceful: bool = True,
                  **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` as the leader of a new process group; on exit, whatever
    happened, end it with :func:`end_group`."""
    process = subprocess.Popen(list(argv), env=env, cwd=cwd, start_new_session=True, **popen)
    try:
        yield process
    finally:
        end_group(process, graceful=graceful)


def end_group(process: subprocess.Popen[bytes], *, graceful: bool = True) -> None:
    """Give ``process`` :data:`STOP_GRACE` seconds to stop after SIGTERM (only if
    ``graceful``), then SIGKILL everything left in its group."""
    if graceful and process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_GRACE)
    kill_group(process.pid)
    process.wait(KILL_WAIT)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid`` until no living member is left (a zombie
    is dead: only its parent, or whoever adopts it, can reap it)."""
    deadline = time.monotonic() + KILL_WAIT
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if not group_members(pgid):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"process group {pgid} survives SIGKILL: {group_members(pgid)}")
        time.sleep(0.01)


def kill_now(pid: int) -> float:
    """SIGKILL ``pid``; returns the time just before the signal was sent."""
    at = time.time()
    os.kill(pid, signal.SIGKILL)
    return at


def become_subreaper() -> bool:
    """Adopt our orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``).

    When a supervisor is killed, its workers would be re-parented to PID 1,
    which in containers often never reaps them; adopted, they are found and
    reaped by :func:`reap_strays`.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(36, 1, 0, 0, 0) == 0)  # 36: PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_strays() -> list[str]:
    """SIGKILL and reap every descendant of this process still around.

    Called after a system's teardown, when none should be left; returns a
    description of each living one found, so a leak is reported, not hidden.
    """
    kept = resource_trackers()
    strays = [pid for pid in descendants(os.getpid(), zombies=True) if pid not in kept]
    found = [f"pid {pid} ({title(pid)})" for pid in strays
             if (s := stat(pid)) is not None and s.alive]
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT
    for pid in strays:  # a grandchild is reaped by the next call, once adopted
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                break  # not our child
            time.sleep(0.01)
    return found


def resource_trackers() -> set[int]:
    """This process's resource trackers, multiprocessing's and loky's: the first pool
    in this process that needs one starts it, and it serves the process until it
    exits (a killed one would leave the next pool's tracker bookkeeping wrong), so
    it is not a round's stray. Found through the modules' private singletons."""
    pids = set()
    for module in ("multiprocessing.resource_tracker", "loky.backend.resource_tracker"):
        tracker = getattr(sys.modules.get(module), "_resource_tracker", None)
        if (pid := getattr(tracker, "_pid", None)) is not None:
            pids.add(pid)
    return pids


def read_json_line(stream: IO[bytes], timeout: float) -> Any:
    """One JSON line from a child's stdout, waiting at most ``timeout`` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no answer from the child within {timeout:g} s")
    line = stream.readline()
    if not line:
        raise RuntimeError("the child exited without answering")
    return json.loads(line)
