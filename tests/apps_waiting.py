"""Tasks that wait for other tasks (the pause-on-wait hook).

A second module of the tests' app: workers import it through ``include``.
"""

from __future__ import annotations

import time

from tests.apps import app


@app.task
def slow_child() -> str:
    time.sleep(0.3)
    return "child done"


@app.task
def parent_of_slow_child() -> str:
    return slow_child.enqueue().result(timeout=30)

