"""``pprunner huey``: the real command, started from a Huey project folder
(``tests/huey_project``, no PYTHONPATH) against a real Redis (database 13 of the
tests' server); tasks enqueued and results read with Huey's own API.

huey missing: a skip here, a failure in CI (``PPRUNNER_REQUIRE_HUEY=1``); Redis
missing: see ``tests/redis_server.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("huey") is None:
    if os.environ.get("PPRUNNER_REQUIRE_HUEY", "") not in ("", "0"):
        raise RuntimeError("PPRUNNER_REQUIRE_HUEY is set but huey is not installed: "
                           "pip install -e '.[test]'")
    pytest.skip("huey is not installed (pip install 'pprunner[huey]')", allow_module_level=True)

import psutil
import redis
from huey.exceptions import TaskException

from pprunner import ExitCode
from tests.conftest import REPO, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]

PROJECT = REPO / "tests" / "huey_project"
EXAMPLE = REPO / "examples" / "huey_app"
sys.path.insert(0, str(PROJECT))
import huey_sqlite_tasks  # noqa: E402  (the project's modules, as its producers import them)
import huey_supervised  # noqa: E402
import huey_tasks  # noqa: E402

sys.path.remove(str(PROJECT))


@pytest.fixture(scope="module")
def huey_url(redis_base: str) -> Iterator[str]:
    """Database 13 of the tests' Redis."""
    url = redis_base.split("?")[0].rsplit("/", 1)[0] + "/13"
    yield url
    with redis.Redis.from_url(url) as client:
        client.flushdb()


@pytest.fixture
def huey(huey_url: str) -> Any:
    """The project's Huey, on the tests' Redis, with an empty queue."""
    with redis.Redis.from_url(huey_url) as client:
        client.flushdb()
    _store_in(huey_tasks.huey, url=huey_url)
    return huey_tasks.huey


class Command:
    """``pprunner huey ...`` (or another ``program``) started in a project folder, in a
    session of its own."""

    def __init__(self, url: str, folder: Path, *arguments: str,
                 program: tuple[str, ...] = ("pprunner", "huey"), **env_vars: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["HUEY_TEST_REDIS_URL"] = env["HUEY_REDIS_URL"] = url  # tests', example's
        env.update(env_vars)
        script = Path(sys.executable).parent / program[0]
        # read while the command runs and after it exited; closed in close()
        self.log = tempfile.NamedTemporaryFile(prefix="pprunner-huey-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen([str(script), *program[1:], *arguments], cwd=folder,
                                        env=env, start_new_session=True, stderr=self.log)

    def workers(self, count: int) -> list[int]:
        """The worker processes' pids, once there are ``count`` of them."""
        return wait_until(lambda: len(pids := self.current()) == count and pids,
                          30, f"{count} worker processes")

    def current(self) -> list[int]:
        """Booted workers: their process titles say so."""
        if self.process.poll() is not None:
            pytest.fail(f"pprunner huey exited: {self.wait()[1]}")
        found = []
        # forked by the template, a child of the command's process
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if " ".join(child.cmdline()).startswith("pprunner worker"):
                    found.append(child.pid)
        return sorted(found)

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> tuple[int, str]:
        """Its exit status and everything it logged."""
        return self.process.wait(timeout=timeout), self.logged()

    def logged(self) -> str:
        return Path(self.log.name).read_text()

    def close(self) -> None:
        with contextlib.suppress(psutil.Error):
            family = [psutil.Process(self.process.pid),
                      *psutil.Process(self.process.pid).children(recursive=True)]
            for member in family:
                member.kill()
            psutil.wait_procs(family, timeout=10)
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def command(huey: Any, huey_url: str) -> Iterator[Any]:
    started: list[Command] = []

    def start(*arguments: str, folder: Path = PROJECT, **options: Any) -> Command:
        running = Command(huey_url, folder, *arguments, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def test_each_worker_process_runs_hueys_own_worker(huey: Any, command: Any) -> None:
    running = command("huey_tasks.huey", "--workers", "2")
    workers = running.workers(2)
    results = [huey_tasks.sleep(0.3) for _ in range(6)]
    assert {r.get(blocking=True, timeout=30) for r in results} == set(workers)


def test_a_killed_worker_is_replaced_alone_and_its_task_runs_again(
        huey: Any, command: Any, tmp_path: Path) -> None:
    running = command("huey_tasks.huey", "--workers", "2")
    workers = running.workers(2)
    result = huey_tasks.block_first(str(tmp_path))
    victim = int(wait_until((tmp_path / "first").exists, what="the first attempt")
                 and (tmp_path / "first").read_text())
    (other,) = set(workers) - {victim}

    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    again = result.get(blocking=True, timeout=30, backoff=1.0)
    rerun_after = time.monotonic() - killed_at

    assert again == other  # re-enqueued at once and taken by the worker that kept going
    assert rerun_after < 5, f"the task ran again {rerun_after:.2f} s after the kill"
    replaced = running.workers(2)
    assert other in replaced and victim not in replaced


def test_a_task_stuck_past_its_timeout_is_killed_and_fails_with_task_timeout(
        huey: Any, command: Any, tmp_path: Path) -> None:
    running = command("huey_tasks.huey", "--workers", "1")
    (worker,) = running.workers(1)
    result = huey_tasks.stuck_in_native_code(str(tmp_path))
    with pytest.raises(TaskException) as raised:
        result.get(blocking=True, timeout=30)
    assert "TaskTimeout" in raised.value.metadata["error"]
    assert huey_tasks.pid().get(blocking=True, timeout=30) != worker  # replaced


def test_max_tasks_recycles_a_worker_without_losing_a_task(huey: Any, command: Any) -> None:
    """pprunner's max_tasks_per_child: a worker at its limit serves on until its
    replacement booted (no capacity gap), so it may run a few more tasks first."""
    running = command("huey_tasks.huey", "--workers", "1", "-M", "2")
    running.workers(1)
    results = [huey_tasks.sleep(0.3) for _ in range(10)]
    pids = [r.get(blocking=True, timeout=30) for r in results]
    assert len(set(pids)) >= 2


def test_sigint_stops_gracefully_after_the_running_task(
        huey: Any, command: Any) -> None:
    running = command("huey_tasks.huey", "--workers", "1")
    running.workers(1)
    result = huey_tasks.sleep(1.5)
    wait_until(lambda: huey.pending_count() == 0, what="the task to be taken")
    running.signal(signal.SIGINT)
    code, _err = running.wait()
    assert code == 0
    assert result.get() is not None  # finished, its result stored


def test_sigterm_stops_at_once_and_hands_the_running_task_back(
        huey: Any, command: Any, tmp_path: Path) -> None:
    """Huey's interrupt signal (SIGTERM unless ``-g TERM``): its own consumer
    interrupts the task and loses it; pprunner puts it back in the queue."""
    running = command("huey_tasks.huey", "--workers", "1")
    running.workers(1)
    huey_tasks.block_first(str(tmp_path))
    wait_until((tmp_path / "first").exists, what="the task to start")
    started = time.monotonic()
    running.signal(signal.SIGTERM)
    running.wait()
    assert time.monotonic() - started < 10
    assert huey.pending_count() == 1


def test_the_example_runs_with_its_documented_commands(command: Any, huey_url: str) -> None:
    running = command("tasks.huey", "--workers", "2", folder=EXAMPLE)
    running.workers(2)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    printed = subprocess.run([sys.executable, "enqueue.py"], cwd=EXAMPLE, check=True,
                             env={**env, "HUEY_REDIS_URL": huey_url}, timeout=60,
                             capture_output=True, text=True).stdout.splitlines()
    *whereami, add, slow, crash = printed
    assert len(whereami) == 3 and all(line.startswith("whereami: worker pid")
                                      for line in whereami)
    assert (add, slow) == ("add: 5", "slow: failed: TaskTimeout('timeout (1s)')")
    assert crash.startswith("crash: ran again in worker pid")
    running.signal(signal.SIGINT)
    assert running.wait()[0] == 0


def test_a_delayed_task_is_enqueued_by_hueys_scheduler_in_the_supervisor(
        huey: Any, command: Any) -> None:
    running = command("huey_tasks.huey", "--workers", "1")
    (worker,) = running.workers(1)
    result = huey_tasks.pid.schedule(delay=2)
    wait_until(lambda: huey.scheduled_count() == 1, what="the worker to put it in the schedule")
    assert result.get(blocking=True, timeout=30) == worker


def test_sighup_replaces_every_worker_and_the_command_keeps_serving(
        huey: Any, command: Any) -> None:
    running = command("huey_tasks.huey", "--workers", "2")
    before = set(running.workers(2))
    running.signal(signal.SIGHUP)
    wait_until(lambda: not before & set(running.current()) and len(running.current()) == 2,
               30, "every worker replaced")
    assert huey_tasks.pid().get(blocking=True, timeout=30) not in before
    assert running.process.poll() is None


def test_at_most_once_leaves_a_killed_workers_task_interrupted(
        huey: Any, command: Any, tmp_path: Path) -> None:
    running = command("huey_tasks.huey", "--workers", "1", "--at-most-once")
    running.workers(1)
    result = huey_tasks.block_first(str(tmp_path))
    os.kill(int(wait_until((tmp_path / "first").exists, what="the task to start")
                and (tmp_path / "first").read_text()), signal.SIGKILL)
    running.workers(1)
    assert huey_tasks.pid().get(blocking=True, timeout=30) > 0  # served after it
    assert result.get() is None and huey.pending_count() == 0  # not run again
    running.signal(signal.SIGINT)
    assert "did not finish (at most once)" in running.wait()[1]


def test_sqlite_huey_runs_tasks_and_gets_a_killed_workers_task_back(
        command: Any, tmp_path: Path) -> None:
    database = str(tmp_path / "huey.db")
    _store_in(huey_sqlite_tasks.huey, filename=database)
    running = command("huey_sqlite_tasks.huey", "--workers", "2", HUEY_TEST_SQLITE=database)
    _workers, victim, result = _kill_under_a_task(huey_sqlite_tasks, running, tmp_path)
    assert result.get(blocking=True, timeout=30) not in (victim, None)


def _store_in(instance: Any, **storage: str) -> None:
    """The project's Huey ``instance`` (in this process) on the storage the test's
    command uses."""
    instance.storage_kwargs.update(storage)
    old, instance.storage = instance.storage, instance.create_storage()
    old.close()
    with contextlib.suppress(AttributeError):  # a Redis storage's pool: close() leaves it
        old.conn.connection_pool.disconnect()


def _kill_under_a_task(tasks: Any, running: Command, tmp_path: Path) -> tuple[set[int], int, Any]:
    """With two workers, each serving: SIGKILL the one that runs ``tasks.block_first``'s
    first attempt. The workers, the one killed and the task's result handle."""
    workers = set(running.workers(2))
    assert tasks.pid().get(blocking=True, timeout=30) in workers
    result = tasks.block_first(str(tmp_path))
    victim = int(wait_until((tmp_path / "first").exists, what="the first attempt")
                 and (tmp_path / "first").read_text())
    os.kill(victim, signal.SIGKILL)
    return workers, victim, result


def test_the_time_limit_setting_bounds_a_task_without_a_timeout(
        huey: Any, command: Any) -> None:
    running = command("huey_tasks.huey", "--workers", "1", PPRUNNER_TIME_LIMIT="0.5")
    (worker,) = running.workers(1)
    with pytest.raises(TaskException) as raised:
        huey_tasks.sleep(60).get(blocking=True, timeout=30)
    assert "TaskTimeout" in raised.value.metadata["error"]
    assert huey_tasks.pid().get(blocking=True, timeout=30) != worker


def test_max_memory_per_child_recycles_workers_without_losing_a_task(
        huey: Any, command: Any) -> None:
    running = command("huey_tasks.huey", "--workers", "1", PPRUNNER_MAX_MEMORY_PER_CHILD="1")
    running.workers(1)
    results = [huey_tasks.sleep(0.3) for _ in range(8)]
    assert len({r.get(blocking=True, timeout=30) for r in results}) >= 2


def test_workers_do_not_outlive_a_sigkilled_command(huey: Any, command: Any) -> None:
    running = command("huey_tasks.huey", "--workers", "2")
    workers = [psutil.Process(pid) for pid in running.workers(2)]
    running.signal(signal.SIGKILL)
    _gone, alive = psutil.wait_procs(workers, timeout=15)
    assert alive == []


def test_parents_waiting_on_children_do_not_deadlock_a_fixed_pool(
        huey: Any, command: Any) -> None:
    """Both workers hold a parent blocked in ``result.get(blocking=True)``: with
    Huey's own consumer nothing is left to run the children."""
    running = command("huey_tasks.huey", "--workers", "2")
    running.workers(2)
    parents = [huey_tasks.parent(3) for _ in range(2)]
    assert all(p.get(blocking=True, timeout=30) >= 1 for p in parents)


def test_a_waits_timeout_inside_a_task_raises_hueys_resulttimeout(
        huey: Any, command: Any) -> None:
    """The wait goes through pprunner's (the slot is lent meanwhile); its timeout is
    Huey's own error in the task, as with Huey's consumer."""
    running = command("huey_tasks.huey", "--workers", "1")
    running.workers(1)
    waited = huey_tasks.wait_for_a_task_never_sent(0.3)
    assert waited.get(blocking=True, timeout=30) == "huey.exceptions.ResultTimeout"


def test_a_second_sigint_stops_at_once_and_hands_the_running_task_back(
        huey: Any, command: Any, tmp_path: Path) -> None:
    running = command("huey_tasks.huey", "--workers", "1")
    running.workers(1)
    huey_tasks.block_first(str(tmp_path))
    wait_until((tmp_path / "first").exists, what="the task to start")
    running.signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: stopping gracefully" in running.logged(),
               what="the graceful stop to begin")
    running.signal(signal.SIGINT)
    code, err = running.wait()
    assert code == ExitCode.INTERRUPTED and "SIGINT: stopping at once" in err
    assert huey.pending_count() == 1


def test_huey_consumer_runs_pprunners_workers_through_create_consumer(
        huey: Any, command: Any, tmp_path: Path) -> None:
    """The class route: Huey's own command, a Huey whose ``create_consumer`` gives
    pprunner's ``Consumer``; a killed worker's task runs again on the other one."""
    _store_in(huey_supervised.huey, url=huey.storage_kwargs["url"])
    running = command("huey_supervised.huey", "-w", "2", program=("huey_consumer",))
    workers, victim, result = _kill_under_a_task(huey_supervised, running, tmp_path)
    assert result.get(blocking=True, timeout=30) == (workers - {victim}).pop()
    running.signal(signal.SIGINT)
    code, logged = running.wait()
    assert code == 0, logged
