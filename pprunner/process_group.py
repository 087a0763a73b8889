"""Killing a worker together with what its task started, and reaping what is left.

A worker that leads its own process group (an RQ horse does, as RQ's forked ones
do) is SIGKILLed with its whole group, so a task's subprocesses die with it. They
die as orphans: the kernel hands them to the nearest "child subreaper" ancestor,
else to PID 1, which reaps them when it gets to it. Where PID 1 reaps late
(container and microVM init processes have been seen here to take up to 2 s),
the killed task's subprocesses linger as zombies, still listed by ``ps`` and
``psutil.pid_exists``, after the host was told the job is dead. So before the
kill the supervisor's process becomes a subreaper (Linux only), and after the
worker is gone it reaps the group's members itself, then stops being one once
no killed group is left to reap: a process that stays a subreaper would inherit
every orphan of its descendants, reap none of them, and keep them as zombies.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import time

#: prctl(2): make the calling process a child subreaper
_PR_SET_CHILD_SUBREAPER = 36
#: how long to wait for the SIGKILLed members of a group to die
REAP_WITHIN = 0.5


def leads_own_group(pid: int) -> bool:
    """Whether ``pid`` is alive and the leader of its own process group."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


#: killed groups not reaped yet: while there are any, this process is a subreaper
_unreaped: set[int] = set()


def kill_group(pgid: int) -> bool:
    """SIGKILL every process in group ``pgid``, having made this process their
    subreaper (see the module's docstring); False if the group is gone. Each
    group killed is to be reaped with :func:`reap_group`."""
    if not _unreaped:
        _set_subreaper(True)
    _unreaped.add(pgid)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        _reaped(pgid)
        return False
    return True


def reap_group(pgid: int, within: float = REAP_WITHIN) -> int:
    """Reap the members of a SIGKILLed group handed to this process, for at most
    ``within`` seconds; returns how many were reaped. Only that group's processes
    are waited for: the host's own children are not touched. Members handed to
    another subreaper (a worker forked by the template, which reaps its own orphans)
    are waited for until it has reaped them."""
    reaped, deadline = 0, time.monotonic() + within
    try:
        while True:
            try:
                pid, _ = os.waitpid(-pgid, os.WNOHANG)
            except ChildProcessError:
                _wait_until_gone(pgid, deadline)
                return reaped  # no member of the group is our child any more
            if pid:
                reaped += 1
            elif time.monotonic() >= deadline:
                return reaped
            else:
                time.sleep(0.001)  # SIGKILLed members are dying: a millisecond or two
    finally:
        _reaped(pgid)


def _wait_until_gone(pgid: int, deadline: float) -> None:
    """Until no process of group ``pgid`` is left, not even a zombie, or ``deadline``."""
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.001)


def become_subreaper() -> None:
    """For good: this process reaps the orphans of everything it starts (the template,
    which reaps whatever ends under it)."""
    _set_subreaper(True)


def _reaped(pgid: int) -> None:
    _unreaped.discard(pgid)
    if not _unreaped:
        _set_subreaper(False)


def _set_subreaper(on: bool) -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
