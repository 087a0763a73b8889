"""taskiq 0.13 on taskiq-redis's ``ListQueueBroker``: ``taskiq worker`` three ways.

The pool is ``taskiq worker benchmarks.peer_apps.taskiq_app:broker`` with two
processes doing the sync work, each way as taskiq's docs give it:

- ``taskiq-threads``: taskiq's default, ``--workers 2`` (two worker processes,
  each running sync tasks in its thread pool);
- ``taskiq-process-pool``: ``--workers 1 --use-process-pool
  --max-process-pool-processes 2`` (a ``ProcessPoolExecutor``);
- ``taskiq-pprunner``: ``--workers 1 --receiver pprunner_plugins.taskiq:Receiver
  --receiver_arg processes=2`` (pprunner's supervised workers).

A pool is ready once two tasks sent at once have come back (a taskiq worker
process with a pool of its own has one connection waiting on Redis, not two).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

from .. import system
from ..system import WORKERS, AnsweredRun, Value
from .cli_pool import BOOT_TIMEOUT_S, console_script
from .redis_peer import RedisPeer

#: how often the producer looks for a result (taskiq's default is every 0.2 s)
CHECK_INTERVAL_S = 0.005
#: kill_answered: the task that tells whether the pool serves on is sent this long after
#: the kill
AFTER_KILL_S = 0.5
#: a CPU-bound task's loop: about 25 ms of pure Python here
BURN_ITERATIONS = 250_000


class TaskiqThreads(RedisPeer):
    name = "taskiq-threads"
    requires = ("taskiq", "taskiq_redis")
    app_module = "benchmarks.peer_apps.taskiq_app"
    dequeue_command = "brpop"
    #: taskiq's SIGTERM: its workers stop theirs (pprunner's workers among them)
    graceful_stop = True
    #: ``taskiq worker``'s options beyond the broker
    options: ClassVar[tuple[str, ...]] = ("--workers", str(WORKERS))

    def setup(self, workdir: Path) -> None:
        super().setup(workdir)
        self.loop = asyncio.new_event_loop()
        self.cleanup.callback(self.loop.close)
        self.loop.run_until_complete(self.tasks.broker.startup())
        self.cleanup.callback(self.loop.run_until_complete, self.tasks.broker.shutdown())

    def command(self) -> list[str]:
        return [console_script("taskiq"), "worker", f"{self.app_module}:broker", *self.options]

    def send(self, task: str, *args: Any) -> Any:
        return self.loop.run_until_complete(getattr(self.tasks, task).kiq(*args))

    def answer(self, handle: Any, timeout: float) -> Any:
        """The task's ``TaskiqResult``; TimeoutError without one within ``timeout``."""
        self.pool.alive()
        answered, _ = self.loop.run_until_complete(arrival(handle, timeout))
        if answered is None:
            raise TimeoutError(f"no result for task {handle.task_id} within {timeout:g} s")
        return answered

    def result(self, handle: Any, timeout: float) -> Any:
        answered = self.answer(handle, timeout)
        if answered.is_err:
            raise RuntimeError(f"task {handle.task_id} failed: {answered.error!r}")
        return answered.return_value

    def _wait_ready(self) -> None:
        for handle in [self.send("stamp") for _ in range(WORKERS)]:
            self.result(handle, BOOT_TIMEOUT_S)

    def cpu_throughput(self, count: int) -> float:
        self._start()
        started = time.perf_counter()
        handles = [self.send("burn", BURN_ITERATIONS) for _ in range(count)]
        for handle in handles:
            self.result(handle, BOOT_TIMEOUT_S + count)
        return time.perf_counter() - started

    def kill_answered(self, task_s: float, bound_s: float) -> AnsweredRun:
        self._start()
        marker = self.workdir / "attempts.log"
        killed = self.send("announce_and_sleep", str(marker), task_s)
        killed_at = system.start_and_kill(marker)
        (answer, answered_at), (served, _) = self.loop.run_until_complete(
            self._killed_and_after(killed, killed_at + bound_s))
        never = f"never (> {bound_s:g} s)"
        if answer is None:
            answered: Value = never
            said = "none"
        else:
            answered = answered_at - killed_at
            said = type(answer.error).__name__ if answer.is_err else "ran again"
        if served is None:
            serving: Value = never
        elif served.is_err:
            serving = f"never ({type(served.error).__name__})"
        else:
            serving = float(served.return_value) - killed_at
        return AnsweredRun(answered_s=answered, answer=said, serving_s=serving)

    async def _killed_and_after(self, killed: Any, deadline: float
                                ) -> tuple[tuple[Any, float], tuple[Any, float]]:
        """The killed task's result and when it came, and that of a stamp sent
        :data:`AFTER_KILL_S` after the kill (a pool the death broke has heard of it by
        then), both by ``deadline`` (``time.time()``)."""
        answer = asyncio.ensure_future(arrival(killed, deadline - time.time()))
        await asyncio.sleep(AFTER_KILL_S)
        after = await self.tasks.stamp.kiq()
        served = await arrival(after, deadline - time.time())
        return await answer, served


async def arrival(handle: Any, timeout: float) -> tuple[Any, float]:
    """The task's ``TaskiqResult`` and when it was seen, or ``(None, 0)`` after ``timeout``."""
    from taskiq.exceptions import TaskiqResultTimeoutError

    try:
        answered = await handle.wait_result(check_interval=CHECK_INTERVAL_S,
                                            timeout=max(timeout, CHECK_INTERVAL_S))
    except TaskiqResultTimeoutError:
        return None, 0.0
    return answered, time.time()


class TaskiqProcessPool(TaskiqThreads):
    name = "taskiq-process-pool"
    options = ("--workers", "1", "--use-process-pool", "--max-process-pool-processes",
               str(WORKERS))


class TaskiqPprunner(TaskiqThreads):
    name = "taskiq-pprunner"
    requires = ("taskiq", "taskiq_redis", "pprunner_plugins.taskiq")
    options = ("--workers", "1", "--receiver", "pprunner_plugins.taskiq:Receiver",
               "--receiver_arg", f"processes={WORKERS}")
