"""Whether a runner the backend lists is still alive, as far as a command can tell.

A SIGKILLed supervisor cannot remove its runners' records; they stay until
another supervisor recovers them, and their heartbeats just grow older. A
command that shows or talks to runners (``status``, ``scale``) must not take
such a record for a live runner. Two signs tell it is lost: its heartbeat
is older than ``dead_after`` (the age at which supervisors take back what it
held), or it runs on this host and no process has its pid any more — which
is known at once, without waiting for ``dead_after``.
"""

from __future__ import annotations

import os

from .invocation import RunnerInfo, this_host


def pid_exists(pid: int) -> bool:
    """Whether a process has ``pid`` on this host. An exited one that nobody has reaped
    yet (a zombie: under a container's init that does not reap, for one) has not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            line = stat.read()
    except FileNotFoundError:  # it exited just now, or there is no /proc to ask
        return not os.path.exists("/proc/self")
    except OSError:
        return True  # /proc hides it: the kill test has to do
    return line[line.rindex(b")") + 2:][:1] != b"Z"  # the state follows "(command) "


def lost_because(runner: RunnerInfo, *, now: float, dead_after: float) -> str | None:
    """Why ``runner`` is lost, in a few words; None while it looks alive.

    A pid reused by an unrelated process hides a loss only until ``dead_after``.
    """
    if runner.host == this_host() and not pid_exists(runner.pid):
        return f"pid {runner.pid} is gone"
    age = now - runner.heartbeat_at
    if age > dead_after:
        return f"no heartbeat for {age:.0f} s (dead_after {dead_after:g} s)"
    return None
