"""``TASKIQ_TEST_BROKER=memory python in_memory.py``: the project's tasks on taskiq's
``InMemoryBroker`` with pprunner's receiver, in this process, as a project's own tests
run them; prints each result (its value, or its error's type) as JSON."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import taskiq_tasks as tasks

from pprunner_plugins.taskiq import Receiver

#: (name, task, arguments, labels), sent in this order, each once the one before ended
SENT = (("on_worker", tasks.pid, (), {}), ("on_loop", tasks.loop_pid, (), {}),
        ("timed_out", tasks.sleep, (30,), {"timeout": 1}), ("after", tasks.pid, (), {}))


async def results() -> dict[str, Any]:
    await tasks.broker.startup()
    try:
        answers = {}
        for name, task, args, labels in SENT:
            handle = await task.kicker().with_labels(**labels).kiq(*args)
            result = await handle.wait_result(timeout=30)
            answers[name] = type(result.error).__name__ if result.is_err else result.return_value
        return answers
    finally:
        await tasks.broker.shutdown()


if __name__ == "__main__":
    receiver = tasks.broker.receiver = Receiver(tasks.broker, processes=1)
    try:
        print(json.dumps({"pid": os.getpid(), **asyncio.run(results())}))
    finally:
        receiver.pool.shutdown()
