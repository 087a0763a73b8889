"""A wait strategy of a plugin's own, ``recorded``, as a third-party package would
ship one: it writes down each wait it serves (which job waited, for which jobs,
from which job source), then waits the built-in ``lend`` way. Registered as a
plugin module (``Supervisor(plugins=[...])``), so every worker has it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import pprunner
from pprunner import waiting

#: the file each wait is appended to, one JSON line per wait (workers inherit it)
LOG = "PPRUNNER_TEST_WAIT_LOG"


@pprunner.hookimpl
def pprunner_pause_on_wait(context: Any, waiter: Any, invocation_ids: Sequence[str],
                           timeout: float | None, strategy: str,
                           pending: Callable[[], Sequence[str]] | None) -> Any:
    if strategy != "recorded":
        return None  # the built-in strategies answer theirs
    record = {"waiter": waiter.id, "awaited": list(invocation_ids), "pid": os.getpid(),
              "source": "pulled" if pending is None else "host"}
    with open(os.environ[LOG], "a") as log:
        log.write(json.dumps(record) + "\n")
    return waiting.wait_lending(context, waiter, invocation_ids, timeout, pending)


def recorded(path: str) -> list[dict[str, Any]]:
    """The waits written to ``path`` so far."""
    if not os.path.exists(path):
        return []
    with open(path) as log:
        return [json.loads(line) for line in log]
