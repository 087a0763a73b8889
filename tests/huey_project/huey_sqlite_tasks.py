"""The same project's tasks on ``SqliteHuey`` (in the file ``HUEY_TEST_SQLITE`` names)."""

from __future__ import annotations

import os
import tempfile

import huey_tasks
from huey import SqliteHuey

#: importing creates the file: outside the checkout unless the tests name one
huey = SqliteHuey("pprunner-tests", filename=os.environ.get(
    "HUEY_TEST_SQLITE", os.path.join(tempfile.gettempdir(), "pprunner-huey-tests.db")))

pid = huey.task()(huey_tasks.pid.func)
block_first = huey.task()(huey_tasks.block_first.func)
