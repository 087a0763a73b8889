"""A health file: liveness and readiness that cost nothing to check.

The supervisor rewrites it every loop iteration — and the loop turns at
least every ``heartbeat_interval`` even when every worker is busy — so its
age says whether the supervisor is alive, and its content whether all
workers have booted. ``pprunner health`` reads it for a process manager's
probe; nothing has to answer on a socket.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def write(path: str, state: dict[str, Any]) -> None:
    """Replace the file atomically, so a reader never sees half of it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.write_text(json.dumps({**state, "updated_at": time.time()}))
    os.replace(partial, target)


def problem(path: str, max_age: float, need_ready: bool) -> str | None:
    """What is wrong according to the file at ``path``, or None when healthy."""
    try:
        state = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return f"no health file at {path}: the supervisor is not running"
    except (OSError, ValueError) as exc:
        return f"cannot read the health file {path}: {exc}"
    age = time.time() - state.get("updated_at", 0)
    if age > max_age:
        return f"the supervisor (pid {state.get('pid')}) last reported {age:.1f} s ago"
    if need_ready and not state.get("ready"):
        return (f"not ready: {state.get('booted')} of {state.get('processes')} workers "
                "have booted")
    return None
