"""Tasks on taskiq's ``InMemoryBroker`` (``tests/test_taskiq_inmemory.py``): the broker a
taskiq project's own tests use, its receiver swapped for pprunner's."""

from __future__ import annotations

import os
import time

from taskiq import InMemoryBroker

broker = InMemoryBroker()


@broker.task
def pid() -> int:
    return os.getpid()


@broker.task
async def loop_pid() -> int:
    return os.getpid()


@broker.task
def sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()
