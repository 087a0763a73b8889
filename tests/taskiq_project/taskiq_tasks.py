"""A taskiq project for the tests: ``taskiq worker taskiq_tasks:broker`` is started in
this folder. ``TASKIQ_TEST_BROKER`` picks taskiq-redis's broker (``list``:
ListQueueBroker, no acks; ``stream``: RedisStreamBroker, acked when saved) on
``TASKIQ_TEST_REDIS_URL`` (a database of the tests' own; the keys are prefixed by
``TASKIQ_TEST_QUEUE``), or taskiq's ``InMemoryBroker`` (``memory``)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from taskiq import InMemoryBroker
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker


def make_broker(url: str, queue: str, kind: str) -> Any:
    """taskiq-redis's broker of ``kind`` on ``url``, with its result backend; a producer
    makes its own (``task.kicker().with_broker(...)``). ``memory``: taskiq's in-memory
    broker (``in_memory.py``)."""
    if kind == "memory":
        return InMemoryBroker()
    if kind == "stream":  # consumer_id 0: messages sent before the worker started count
        broker: Any = RedisStreamBroker(url, queue_name=queue, consumer_group_name=queue,
                                        consumer_id="0")
    else:
        # BRPOP blocks until a message comes: without socket_timeout=None, redis-py 8's 5 s
        # default ends it (and the idle taskiq worker process with it) every 5 s
        broker = ListQueueBroker(url, queue_name=queue, socket_timeout=None)
    return broker.with_result_backend(RedisAsyncResultBackend(url, prefix_str=queue))


broker = make_broker(os.environ.get("TASKIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/12"),
                     os.environ.get("TASKIQ_TEST_QUEUE", "pprunner-taskiq"),
                     os.environ.get("TASKIQ_TEST_BROKER", "list"))


@broker.task
def pid() -> int:
    """The pid of the process that ran it."""
    return os.getpid()


@broker.task
async def loop_pid() -> int:
    """An async task: the pid of the ``taskiq worker`` process (its event loop)."""
    return os.getpid()


@broker.task
def sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@broker.task
def hold(folder: str, name: str) -> str:
    """Writes its pid to ``folder/name``, then runs until ``folder/name.go`` exists (or
    its worker is killed); a second run of the same message returns at once."""
    marker, again = Path(folder, name), Path(folder, f"{name}.again")
    if marker.exists():
        announce(again)
        return "ran again"
    announce(marker)
    deadline = time.monotonic() + 60
    while not Path(folder, f"{name}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


def announce(marker: Path) -> None:
    """This process's pid into ``marker`` in one step: a reader never sees half of it."""
    partial = marker.with_name(f"{marker.name}.partial")
    partial.write_text(str(os.getpid()))
    partial.replace(marker)


@broker.task
def die_every_time(folder: str) -> None:
    """Kills its own worker, and counts its runs in ``folder/runs``."""
    runs = Path(folder, "runs")
    with runs.open("a") as log:
        log.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), 9)


@broker.task
def fail(text: str) -> None:
    raise ValueError(text)


@broker.task
def unpicklable_result() -> Any:
    return threading.Lock()


@broker.task
def add(x: int, y: int) -> int:
    return x + y


@broker.task
def allocate(megabytes: int) -> int:
    """Keeps ``megabytes`` of memory in its worker (until the worker is recycled)."""
    _kept.append(bytearray(megabytes * 1024 * 1024))
    return os.getpid()


_kept: list[bytearray] = []


@broker.task
def wait_for_child() -> tuple[int, int]:
    """A sync task that waits for another sync task's result: (its pid, the child's)."""

    async def kick_and_wait() -> int:
        await broker.startup()  # this process's own connections, on this loop
        try:
            child = await pid.kiq()
            return (await child.wait_result(timeout=30)).return_value
        finally:
            await broker.shutdown()

    return os.getpid(), asyncio.run(kick_and_wait())
