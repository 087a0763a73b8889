"""The same project's tasks on ``SqliteHuey`` (in the file ``HUEY_TEST_SQLITE`` names)."""

from __future__ import annotations

import os

import huey_tasks
from huey import SqliteHuey

huey = SqliteHuey("pprunner-tests", filename=os.environ.get("HUEY_TEST_SQLITE", "huey.db"))

pid = huey.task()(huey_tasks.pid.func)
block_first = huey.task()(huey_tasks.block_first.func)
