"""pprunner's taskiq receiver on taskiq's ``InMemoryBroker``, in this process (as a taskiq
project's own tests run their tasks): sync tasks on pprunner's workers, async ones here.

taskiq missing: a skip here, a failure in CI (``PPRUNNER_REQUIRE_TASKIQ=1``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any

import pytest

if importlib.util.find_spec("taskiq") is None:
    if os.environ.get("PPRUNNER_REQUIRE_TASKIQ", "") not in ("", "0"):
        raise RuntimeError("PPRUNNER_REQUIRE_TASKIQ is set but taskiq is not installed: "
                           "pip install -e '.[test]'")
    pytest.skip("taskiq is not installed (pip install 'pprunner[taskiq]')",
                allow_module_level=True)

from pprunner_plugins.taskiq import Receiver
from tests import taskiq_memory_tasks as tasks

pytestmark = [pytest.mark.taskiq, pytest.mark.slow, pytest.mark.timeout(60)]


async def results(*sent: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> list[Any]:
    """Send each ``(task, args, labels)`` in turn and wait for its result."""
    await tasks.broker.startup()
    try:
        answers = []
        for task, args, labels in sent:
            handle = await task.kicker().with_labels(**labels).kiq(*args)
            answers.append(await handle.wait_result(timeout=30))
        return answers
    finally:
        await tasks.broker.shutdown()


def test_sync_tasks_run_on_pprunner_workers_and_stop_at_their_timeout() -> None:
    receiver = tasks.broker.receiver = Receiver(tasks.broker, processes=1)
    try:
        on_worker, on_loop, timed_out, after = asyncio.run(results(
            (tasks.pid, (), {}), (tasks.loop_pid, (), {}),
            (tasks.sleep, (30,), {"timeout": 1}), (tasks.pid, (), {})))
    finally:
        receiver.pool.shutdown()
    assert on_worker.return_value != os.getpid()
    assert on_loop.return_value == os.getpid()
    assert timed_out.is_err and isinstance(timed_out.error, TimeoutError)
    assert after.return_value not in (os.getpid(), on_worker.return_value)
