"""The arq and SAQ examples (``examples/arq_app``, ``examples/saq_app``): each queue's own
worker command, started from the repository root with no PYTHONPATH, against the tests'
Redis (arq: database 4, SAQ: database 3); jobs sent and results read with each queue's
own API. Their blocking work runs on ``pprunner.Executor``: a job whose process is
SIGKILLed fails alone, with ``WorkerLost``, and the next job runs.

arq or SAQ missing: a skip here, a failure with ``PPRUNNER_REQUIRE_ARQ_SAQ=1`` (tox
``py3-arqsaq``: arq needs redis-py < 6, so they have an environment of their own).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.optional import require

require(("arq", "saq"), "PPRUNNER_REQUIRE_ARQ_SAQ", "pip install arq 'saq[redis]'")

import redis  # noqa: E402

from examples import blocking_work  # noqa: E402
from pprunner.errors import WorkerLost  # noqa: E402
from tests.conftest import REPO, kill_tree  # noqa: E402
from tests.redis_server import database_url  # noqa: E402

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]


class QueueWorker:
    """A queue's worker command, run from the repository root on database ``number``."""

    def __init__(self, redis_base: str, number: int, variable: str, *command: str) -> None:
        self.url = database_url(redis_base, number)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.process = subprocess.Popen([str(Path(sys.executable).parent / command[0]),
                                         *command[1:]], cwd=REPO, env={**env, variable: self.url},
                                        start_new_session=True, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

    def close(self) -> None:
        kill_tree(self.process)
        client = redis.Redis.from_url(self.url)
        client.flushdb()
        client.close()


@pytest.fixture
def queue_worker(redis_base: str) -> Iterator[Any]:
    started: list[QueueWorker] = []

    def start(number: int, variable: str, *command: str) -> QueueWorker:
        started.append(QueueWorker(redis_base, number, variable, *command))
        return started[-1]

    yield start
    for worker in started:
        worker.close()


async def holder_killed(marker: Path) -> None:
    """Wait for the job holding a process to start, then SIGKILL that process."""
    for _ in range(3000):
        if marker.exists():
            os.kill(int(marker.read_text()), signal.SIGKILL)
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the holding job never started")


def test_arq_a_killed_process_fails_its_job_alone(queue_worker: Any, tmp_path: Path) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    worker = queue_worker(4, "ARQ_REDIS_URL", "arq", "examples.arq_app.tasks.WorkerSettings")

    async def jobs() -> None:
        arq = await create_pool(RedisSettings.from_dsn(worker.url))
        try:
            crunched = await arq.enqueue_job("crunch", 1000)
            assert await crunched.result(timeout=30) == blocking_work.crunch(1000)
            held = await arq.enqueue_job("hold", str(tmp_path / "held"), 60)
            await holder_killed(tmp_path / "held")
            with pytest.raises(WorkerLost, match="SIGKILL"):
                await held.result(timeout=30)
            after = await arq.enqueue_job("crunch", 10)
            assert await after.result(timeout=30) == blocking_work.crunch(10)
        finally:
            await arq.aclose()

    asyncio.run(jobs())


def test_saq_a_killed_process_fails_its_job_alone(queue_worker: Any, tmp_path: Path) -> None:
    from saq import Queue, Status

    worker = queue_worker(3, "SAQ_REDIS_URL", "saq", "examples.saq_app.tasks.settings")

    async def jobs() -> None:
        queue = Queue.from_url(worker.url, name="pprunner-example")
        await queue.connect()
        try:
            # retries: SAQ's first sweep, as its worker starts, may abort ("swept") a job
            # it dequeues meanwhile
            assert await queue.apply("crunch", n=1000, timeout=30,
                                     retries=2) == blocking_work.crunch(1000)
            held = await queue.enqueue("hold", marker=str(tmp_path / "held"), seconds=60,
                                       timeout=60)
            await holder_killed(tmp_path / "held")
            await held.refresh(until_complete=30)
            assert held.status == Status.FAILED and "WorkerLost" in (held.error or "")
            assert await queue.apply("crunch", n=10, timeout=30) == blocking_work.crunch(10)
        finally:
            await queue.disconnect()

    asyncio.run(jobs())
