"""``taskiq worker ... --receiver pprunner_plugins.taskiq:Receiver``: the real command,
started from a taskiq project folder (``tests/taskiq_project``, no PYTHONPATH) against
taskiq-redis's ListQueueBroker (no acks) and RedisStreamBroker (acked when the result is
saved) on database 5 of the tests' Redis, each test on a queue of its own; tasks sent
and results read with taskiq's own API.

taskiq or taskiq-redis missing: a skip here, a failure in CI
(``PPRUNNER_REQUIRE_TASKIQ=1``); Redis missing: see ``tests/redis_server.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.optional import require

require(("taskiq", "taskiq_redis"), "PPRUNNER_REQUIRE_TASKIQ",
        "pip install 'pprunner[taskiq]' taskiq-redis")

import psutil  # noqa: E402
import redis  # noqa: E402

from pprunner.errors import WorkerLost  # noqa: E402
from tests.conftest import REPO, kill_tree, project_module, wait_until  # noqa: E402
from tests.redis_server import database_url  # noqa: E402

pytestmark = [pytest.mark.taskiq, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]

PROJECT = REPO / "tests" / "taskiq_project"
RECEIVER = "pprunner_plugins.taskiq:Receiver"
taskiq_tasks = project_module(PROJECT, "taskiq_tasks")


@pytest.fixture(scope="module")
def taskiq_url(redis_base: str) -> Iterator[str]:
    """Database 5 of the tests' Redis, emptied after the module."""
    url = database_url(redis_base, 5)
    yield url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


class Producer:
    """taskiq's producer side on a loop of its own: sends tasks, waits for results."""

    def __init__(self, url: str, queue: str, kind: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.broker = taskiq_tasks.make_broker(url, queue, kind)
        self.loop.run_until_complete(self.broker.startup())

    def send(self, task: Any, *args: Any, **labels: Any) -> Any:
        kicker = task.kicker().with_broker(self.broker).with_labels(**labels)
        return self.loop.run_until_complete(kicker.kiq(*args))

    def result(self, sent: Any, timeout: float = 30) -> Any:
        return self.loop.run_until_complete(sent.wait_result(timeout=timeout))

    def value(self, task: Any, *args: Any, **labels: Any) -> Any:
        """Send and wait; the task's return value (its error fails the test)."""
        result = self.result(self.send(task, *args, **labels))
        assert not result.is_err, result.error
        return result.return_value

    def close(self) -> None:
        self.loop.run_until_complete(self.broker.shutdown())
        self.loop.close()


class Worker:
    """``taskiq worker taskiq_tasks:broker --receiver ...`` in the project folder, in a
    session of its own, one taskiq worker process unless told."""

    def __init__(self, url: str, queue: str, kind: str, *arguments: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(TASKIQ_TEST_REDIS_URL=url, TASKIQ_TEST_QUEUE=queue, TASKIQ_TEST_BROKER=kind)
        script = Path(sys.executable).parent / "taskiq"
        # read while the command runs and after it exited; closed in close()
        self.log = tempfile.NamedTemporaryFile(prefix="pprunner-taskiq-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(script), "worker", "taskiq_tasks:broker", "--workers", "1", *arguments],
            cwd=PROJECT, env=env, start_new_session=True, stdout=self.log, stderr=self.log)

    def taskiq_process(self) -> psutil.Process:
        """The taskiq worker process (the child of taskiq's process manager)."""
        return wait_until(lambda: self._alive() and psutil.Process(self.process.pid).children(),
                          30, "the taskiq worker process")[0]

    def pprunner_workers(self, count: int) -> list[int]:
        """The pprunner workers' pids, once there are ``count`` of them."""
        return wait_until(lambda: len(pids := self._workers()) == count and pids,
                          30, f"{count} pprunner workers")

    def _workers(self) -> list[int]:
        found = []
        for child in self.taskiq_process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if " ".join(child.cmdline()).startswith("pprunner worker"):
                    found.append(child.pid)
        return sorted(found)

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"taskiq worker exited: {self.wait()[1]}")
        return True

    def wait(self, timeout: float = 30) -> tuple[int, str]:
        """Its exit status and everything it logged."""
        return self.process.wait(timeout=timeout), Path(self.log.name).read_text()

    def close(self) -> None:
        kill_tree(self.process)
        self.log.close()


class Project:
    """One test's queue: its workers and its producer, all stopped after the test."""

    def __init__(self, url: str, kind: str) -> None:
        self.url, self.kind = url, kind
        self.queue = f"pprunner-taskiq-{uuid.uuid4().hex[:12]}"
        self.producer = Producer(url, self.queue, kind)
        self.started: list[Worker] = []

    def worker(self, *arguments: str, receiver: bool = True) -> Worker:
        if receiver:
            arguments = ("--receiver", RECEIVER, *arguments)
        self.started.append(Worker(self.url, self.queue, self.kind, *arguments))
        return self.started[-1]

    def close(self) -> None:
        for worker in self.started:
            worker.close()
        self.producer.close()
        client = redis.Redis.from_url(self.url)
        for key in client.scan_iter(f"{self.queue}*"):
            client.delete(key)
        client.close()


@pytest.fixture(params=["list", "stream"])
def project(request: pytest.FixtureRequest, taskiq_url: str) -> Iterator[Project]:
    """A queue on ListQueueBroker, then on RedisStreamBroker."""
    made = Project(taskiq_url, request.param)
    yield made
    made.close()


@pytest.fixture
def list_project(taskiq_url: str) -> Iterator[Project]:
    made = Project(taskiq_url, "list")
    yield made
    made.close()


@pytest.fixture
def stream_project(taskiq_url: str) -> Iterator[Project]:
    made = Project(taskiq_url, "stream")
    yield made
    made.close()


def has_exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_while_held(project: Project, folder: Path) -> tuple[Any, int]:
    """Send a task that holds its worker, SIGKILL that worker: the task's handle, the pid."""
    sent = project.producer.send(taskiq_tasks.hold, str(folder), "held")
    victim = int(wait_until((folder / "held").exists, 30, "the task to start")
                 and (folder / "held").read_text())
    os.kill(victim, signal.SIGKILL)
    return sent, victim


def test_sync_tasks_run_on_pprunner_workers_and_async_tasks_on_the_loop(
        project: Project) -> None:
    worker = project.worker("--receiver_arg", "processes=2")
    taskiq_pid = worker.taskiq_process().pid
    assert project.producer.value(taskiq_tasks.loop_pid) == taskiq_pid
    sent = [project.producer.send(taskiq_tasks.sleep, 0.3) for _ in range(6)]
    ran_on = {project.producer.result(s).return_value for s in sent}
    assert ran_on == set(worker.pprunner_workers(2))
    assert project.producer.value(taskiq_tasks.add, 2, 3) == 5


def test_a_sync_task_past_its_timeout_is_answered_and_its_worker_killed(
        list_project: Project, tmp_path: Path) -> None:
    worker = list_project.worker("--receiver_arg", "processes=1")
    sent = list_project.producer.send(taskiq_tasks.hold, str(tmp_path), "held", timeout=1)
    result = list_project.producer.result(sent)
    assert result.is_err and isinstance(result.error, TimeoutError)
    held = int((tmp_path / "held").read_text())
    wait_until(lambda: has_exited(held), 10, "the worker past the time limit to be killed")
    assert not (tmp_path / "held.again").exists()
    (replacement,) = worker.pprunner_workers(1)
    assert replacement != held
    assert list_project.producer.value(taskiq_tasks.pid) == replacement


def test_a_killed_worker_s_task_fails_at_once_where_the_broker_does_not_ack(
        list_project: Project, tmp_path: Path) -> None:
    worker = list_project.worker("--receiver_arg", "processes=2")
    sent, victim = kill_while_held(list_project, tmp_path)
    result = list_project.producer.result(sent, timeout=10)
    assert result.is_err and isinstance(result.error, WorkerLost)
    assert "SIGKILL" in str(result.error)
    assert victim not in worker.pprunner_workers(2)
    assert not (tmp_path / "held.again").exists()


def test_a_killed_worker_s_message_acked_late_is_sent_again_at_once(
        stream_project: Project, tmp_path: Path) -> None:
    worker = stream_project.worker("--receiver_arg", "processes=2")
    sent, victim = kill_while_held(stream_project, tmp_path)
    assert stream_project.producer.result(sent, timeout=10).return_value == "ran again"
    again = int((tmp_path / "held.again").read_text())
    assert again != victim and again in worker.pprunner_workers(2)


def test_a_task_that_kills_every_worker_ends_after_max_attempts_runs(
        stream_project: Project, tmp_path: Path) -> None:
    worker = stream_project.worker("--receiver_arg", "processes=1",
                                   "--receiver_arg", "max_attempts=2")
    result = stream_project.producer.result(
        stream_project.producer.send(taskiq_tasks.die_every_time, str(tmp_path)))
    assert result.is_err and isinstance(result.error, WorkerLost)
    assert len((tmp_path / "runs").read_text().split()) == 2
    worker.pprunner_workers(1)
    assert stream_project.producer.value(taskiq_tasks.add, 1, 1) == 2


def test_max_tasks_per_child_recycles_pprunner_workers_not_the_taskiq_process(
        list_project: Project) -> None:
    worker = list_project.worker("--max-tasks-per-child", "2", "--receiver_arg", "processes=1")
    taskiq_pid = worker.taskiq_process().pid
    pids = [list_project.producer.value(taskiq_tasks.pid) for _ in range(6)]
    assert len(set(pids)) >= 3
    assert all(pids.count(pid) <= 3 for pid in set(pids))  # a pid serves on until replaced
    assert list_project.producer.value(taskiq_tasks.loop_pid) == taskiq_pid


def test_max_memory_per_child_recycles_a_worker_that_grew(list_project: Project) -> None:
    list_project.worker("--receiver_arg", "processes=1",
                        "--receiver_arg", "max_memory_per_child=150")
    small = list_project.producer.value(taskiq_tasks.allocate, 1)
    assert list_project.producer.value(taskiq_tasks.allocate, 1) == small
    grown = list_project.producer.value(taskiq_tasks.allocate, 200)
    assert grown == small
    wait_until(lambda: has_exited(grown), 30, "the grown worker to be recycled")
    assert list_project.producer.value(taskiq_tasks.pid) != grown


def test_a_sync_task_that_waits_for_another_lends_its_worker_s_slot(
        list_project: Project) -> None:
    list_project.worker("--receiver_arg", "processes=1")
    parent, child = list_project.producer.value(taskiq_tasks.wait_for_child)
    assert parent != child


def test_bad_input_fails_its_task_and_the_pool_serves_on(list_project: Project) -> None:
    worker = list_project.worker("--receiver_arg", "processes=1")
    client = redis.Redis.from_url(list_project.url)
    client.lpush(list_project.queue, b"\x00 not a taskiq message")
    client.close()
    failed = list_project.producer.result(list_project.producer.send(taskiq_tasks.fail, "no"))
    assert failed.is_err and isinstance(failed.error, ValueError)
    unsent = list_project.producer.result(
        list_project.producer.send(taskiq_tasks.unpicklable_result))
    assert unsent.is_err and "cannot pickle" in str(unsent.error)
    (pid,) = worker.pprunner_workers(1)
    assert list_project.producer.value(taskiq_tasks.pid) == pid


def test_an_unknown_receiver_arg_stops_the_worker_with_the_known_settings(
        list_project: Project) -> None:
    worker = list_project.worker("--receiver_arg", "procesess=2")
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.wait(timeout=20)
    logged = Path(worker.log.name).read_text()
    assert "unknown setting 'procesess'" in logged and "processes" in logged


def test_a_killed_taskiq_worker_process_takes_its_pprunner_workers_along(
        list_project: Project) -> None:
    """Whatever ends the taskiq process that runs the supervisor (here SIGKILL; taskiq's
    own graceful stop with ``ListQueueBroker(socket_timeout=None)`` can hang in taskiq
    itself), its workers do not outlive it; taskiq starts another with a pool of its own."""
    worker = list_project.worker("--receiver_arg", "processes=2")
    list_project.producer.value(taskiq_tasks.pid)
    family = worker.pprunner_workers(2)
    killed = worker.taskiq_process()
    killed.kill()
    wait_until(lambda: all(has_exited(pid) for pid in family), 10, "every pprunner worker gone")
    again = list_project.producer.value(taskiq_tasks.pid)
    assert again not in family and worker.taskiq_process().pid != killed.pid
