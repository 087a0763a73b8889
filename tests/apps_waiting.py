"""Tasks that wait for other tasks (the pause-on-wait hook).

A second module of the tests' app: workers import it through ``include``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pprunner
from pprunner import ResultTimeout, gather
from tests.apps import app


@app.task
def slow_child() -> str:
    time.sleep(0.3)
    return "child done"


@app.task
def parent_of_slow_child() -> str:
    return slow_child.enqueue().result(timeout=30)


@app.task
def fan_out(depth: int, strategy: str) -> int:
    """A binary tree of invocations; returns how many ran below and including it."""
    if depth == 0:
        return 1
    children = [fan_out.enqueue(depth - 1, strategy) for _ in range(2)]
    return 1 + sum(gather(children, strategy=strategy))


@app.task
def leaf(n: int) -> int:
    time.sleep(0.01)
    return n


@app.task
def parent_of_leaves(count: int, strategy: str) -> int:
    return sum(gather([leaf.enqueue(n) for n in range(count)], strategy=strategy))


@app.task
def parent_of_failure() -> None:
    from tests.apps import fail

    fail.enqueue("the child broke").result()


@app.task
def impatient_parent(seconds: float) -> str:
    child = slow_child.enqueue()
    try:
        child.result(timeout=seconds, strategy="poll")
    except ResultTimeout as exc:
        return f"{type(exc).__name__}: {exc}"
    return "not timed out"


@app.task
def wait_for_id(invocation_id: str) -> object:
    return app.handle(invocation_id).result(timeout=30)


@app.task
def waits_on_itself() -> object:
    me = pprunner.current_context().invocation.id  # type: ignore[union-attr]
    return app.handle(me).result(timeout=30)


@app.task
def parent_of_a_waiter_on_itself() -> object:
    me = pprunner.current_context().invocation.id  # type: ignore[union-attr]
    return wait_for_id.enqueue(me).result(timeout=30)


@app.task(max_attempts=3)
def blocks_until_released(marker_dir: str) -> str:
    Path(marker_dir, f"started-{os.getpid()}").write_text("")
    deadline = time.monotonic() + 120
    while not Path(marker_dir, "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


@app.task(max_attempts=3)
def parent_of_blocked_child(marker_dir: str) -> str:
    return blocks_until_released.enqueue(marker_dir).result(timeout=60)
