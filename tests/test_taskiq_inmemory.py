"""pprunner's taskiq receiver on taskiq's ``InMemoryBroker``, where a taskiq project's
own tests run their tasks: ``tests/taskiq_project/in_memory.py``, started in the project
folder with no PYTHONPATH, runs the project's tasks in its own process.

taskiq missing: a skip here, a failure in CI (``PPRUNNER_REQUIRE_TASKIQ=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.optional import require

require(("taskiq", "taskiq_redis"), "PPRUNNER_REQUIRE_TASKIQ",
        "pip install 'pprunner[taskiq]' taskiq-redis")

pytestmark = [pytest.mark.taskiq, pytest.mark.slow, pytest.mark.timeout(60)]


def test_sync_tasks_run_on_pprunner_workers_and_stop_at_their_timeout() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run([sys.executable, "in_memory.py"], cwd=REPO / "tests" / "taskiq_project",
                         env={**env, "TASKIQ_TEST_BROKER": "memory"}, capture_output=True,
                         text=True, timeout=50, check=False)
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["on_loop"] == seen["pid"] != seen["on_worker"]
    assert seen["timed_out"] == "TimeoutError"
    assert seen["after"] not in (seen["pid"], seen["on_worker"])  # the timed-out one's replacement
