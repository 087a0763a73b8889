"""pprunner as a Celery pool: a real ``celery worker`` (its own command line,
``--pool custom`` or the ``worker_pool`` setting) on real Redis and RabbitMQ,
with a Redis result backend, checked against what Celery's prefork promises.

Brokers: Redis at ``$PPRUNNER_CELERY_REDIS`` (default database 7 of
127.0.0.1:6379, flushed afterwards) and RabbitMQ at ``$PPRUNNER_CELERY_AMQP``
(guest on 127.0.0.1:5672, a queue of this run's own, deleted afterwards). A
missing Celery or broker skips with the reason, unless
``PPRUNNER_REQUIRE_CELERY=1`` (CI) makes it a failure.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import REPO, wait_until
from tests.optional import require_server

REQUIRED = os.environ.get("PPRUNNER_REQUIRE_CELERY") == "1"
if REQUIRED:
    import celery  # noqa: F401 - CI: a missing Celery fails here
else:
    pytest.importorskip("celery", reason="Celery is not installed (pip install -e '.[test]')")

import redis  # noqa: E402
from celery import Celery, signals  # noqa: E402
from celery.exceptions import TaskRevokedError  # noqa: E402

from pprunner import ConfigError  # noqa: E402
from pprunner.jobs import Call, Cancelled, Finished, Lost, Started, TimedOut  # noqa: E402
from pprunner_plugins.celery import child, settings  # noqa: E402
from pprunner_plugins.celery import pool as pool_module  # noqa: E402
from pprunner_plugins.celery.jobs import Job  # noqa: E402
from pprunner_plugins.celery.pool import TaskPool  # noqa: E402
from tests import celery_app  # noqa: E402

pytestmark = [pytest.mark.celery, pytest.mark.timeout(120)]

REDIS = os.environ.get("PPRUNNER_CELERY_REDIS", "redis://127.0.0.1:6379/7")
AMQP = os.environ.get("PPRUNNER_CELERY_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
#: how long a test waits for a task's result
RESULT_TIMEOUT = 30


def _reachable(url: str, default_port: int) -> None:
    """Skip (or, when required, fail) unless the broker at ``url`` answers."""
    require_server(url, default_port, "PPRUNNER_REQUIRE_CELERY", "PPRUNNER_REQUIRE_REDIS")


#: the ``celery`` script of this environment: workers start the way users start them
CELERY = str(Path(sys.executable).with_name("celery"))


def user_environ() -> dict[str, str]:
    """This environment without ``PYTHONPATH``: what a user's shell gives the ``celery``
    script, which finds ``-A`` from its working directory."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


class Worker:
    """A ``celery worker`` subprocess in its own process group, always reaped."""

    def __init__(self, tmp: Path, broker: str, *options: str, pool_setting: bool = False,
                 pool_alias: bool = False, concurrency: int = 2, ready: bool = True,
                 **env: str) -> None:
        self.name = f"pprunner-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        self.queue = f"pprunner-tests-{uuid.uuid4().hex[:8]}"
        self.markers = tmp / "markers"
        self.markers.mkdir()
        self.log = tmp / "worker.log"
        self.app = celery_app.make_app(broker, REDIS, self.queue)
        env = {**user_environ(),
               celery_app.BROKER_ENV: broker, celery_app.BACKEND_ENV: REDIS,
               celery_app.QUEUE_ENV: self.queue, celery_app.MARKERS_ENV: str(self.markers),
               **env}
        pool = ["--pool", "custom"]
        if pool_alias:  # registered by pprunner's celery.commands entry point
            pool = ["--pool", "pprunner"]
        elif pool_setting:
            env[celery_app.POOL_SETTING_ENV] = "1"
            pool = []
        else:
            env["CELERY_CUSTOM_WORKER_POOL"] = celery_app.POOL
        argv = [CELERY, "-A", "tests.celery_app", "worker", *pool,
                "-c", str(concurrency), "-n", self.name, "-l", "INFO", "--without-mingle",
                "--without-gossip", *options]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        if ready:
            try:
                self.wait_ready(concurrency)
            except BaseException:  # the caller never gets the worker to stop: stop it here
                self.stop()
                raise

    def wait_ready(self, concurrency: int) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"the worker exited:\n{self.output()}"
            pids = self.pool_info(timeout=0.5).get("processes", [])
            return len(pids) == concurrency and all(self.initialized(p) for p in pids)
        wait_until(ready, 60, "the Celery worker and its children to be ready")

    def initialized(self, pid: int) -> bool:
        return (self.markers / f"init-{pid}").exists()

    def pool_info(self, timeout: float = 2.0) -> dict[str, Any]:
        stats = self.app.control.inspect(destination=[self.name], timeout=timeout).stats()
        return dict((stats or {}).get(self.name, {}).get("pool", {}))

    def prefetch_count(self) -> int:
        """The consumer's prefetch window (``celery inspect stats``)."""
        stats = self.app.control.inspect(destination=[self.name], timeout=2).stats()
        return int((stats or {}).get(self.name, {}).get("prefetch_count", -1))

    def send(self, task: str, *args: Any, **options: Any) -> Any:
        return self.app.send_task(task, args, **options)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Reap the whole process group, whatever state it is in."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        with contextlib.suppress(Exception):
            if self.app.conf.broker_url.startswith("amqp"):
                with self.app.connection_for_write() as connection:
                    connection.default_channel.queue_delete(self.queue)
        close_app(self.app)


def close_app(app: Celery) -> None:
    """Close a client app and the Redis connections its result backend holds."""
    backend = app.backend  # older Celery leaves its connections open at close()
    for close in (backend.result_consumer.stop, backend.client.connection_pool.disconnect):
        with contextlib.suppress(Exception):
            close()
    app.close()
    # what Celery and redis-py still hold in reference cycles goes now, not in
    # whichever later test the collector happens to run in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _flush_redis() -> None:
    client = redis.Redis.from_url(REDIS)
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def redis_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker for the module: ``--pool pprunner``, two children, Redis broker."""
    _reachable(REDIS, 6379)
    folder = tmp_path_factory.mktemp("celery-redis")
    worker = Worker(folder, REDIS, pool_alias=True,
                    PPRUNNER_HEALTH_FILE=str(folder / "health.json"))
    yield worker
    worker.stop()
    _flush_redis()


@pytest.fixture(scope="module")
def amqp_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """The pool chosen by the ``worker_pool`` setting, on RabbitMQ, with worker-wide
    time limits and task-count recycling."""
    _reachable(AMQP, 5672)
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path_factory.mktemp("celery-amqp"), AMQP, "--soft-time-limit", "1.5",
                    "--time-limit", "4", "--max-tasks-per-child", "3", pool_setting=True)
    yield worker
    worker.stop()


def started_pid(result: Any) -> int:
    """The pid Celery stored with the STARTED state (``task_track_started``)."""
    wait_until(lambda: result.state == "STARTED", RESULT_TIMEOUT, "the task to start")
    return int(result.info["pid"])


def marked_pid(result: Any, marker: Path) -> int:
    """The pid of the child running a ``sleep_unless_marked*`` task, once the task has
    left its marker: Celery stores STARTED before the task's body runs, and a kill
    before the marker would make the redelivered run a first run."""
    pid = started_pid(result)
    wait_until(marker.exists, RESULT_TIMEOUT, "the task's marker")
    return pid


# -- results, states, signals, stats ----------------------------------------------------


def test_results_come_back_through_the_pprunner_pool(redis_worker: Worker) -> None:
    results = [redis_worker.send("t.add", i, i) for i in range(20)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == [2 * i for i in range(20)]
    info = redis_worker.pool_info()
    assert info["implementation"] == "pprunner_plugins.celery.pool:TaskPool"
    assert info["pprunner"]["start-method"] == "template"
    assert info["pprunner"]["delivery"] == "hosted"  # on Celery's event loop


def test_the_worker_is_its_main_process_and_its_children_only(redis_worker: Worker) -> None:
    """1 + N processes as with prefork, and the template the children are forked from:
    no resource tracker (their calls are importable, never __main__'s)."""
    main = psutil.Process(redis_worker.process.pid)

    def descendants_and_children() -> tuple[set[int], set[int]]:
        return ({c.pid for c in main.children(recursive=True)},
                set(redis_worker.pool_info()["processes"]))

    # bounded poll: a child replaced by an earlier test may still be on its way out
    wait_until(lambda: len(set.union(*descendants_and_children())) == 3, 30,
               "the worker's descendants to settle")
    descendants, children = descendants_and_children()
    assert len(children) == 2
    (template,) = [c for c in main.children() if c.pid not in children]
    assert "pprunner template" in " ".join(template.cmdline())
    assert descendants == children | {template.pid}


def test_pprunner_health_reads_the_workers_health_file(redis_worker: Worker) -> None:
    health_file = redis_worker.log.parent / "health.json"

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pprunner", "health", "--file",
                               str(health_file), "--ready"], cwd=REPO, capture_output=True,
                              text=True, timeout=60)

    # the file is rewritten each second: the children's boot may not be in it yet
    wait_until(lambda: check().returncode == 0, 30, "a ready health file")
    assert check().stdout.strip() == "ready"
    assert json.loads(health_file.read_text())["pid"] == redis_worker.process.pid


def test_children_are_named_and_titled_as_preforks_with_a_log_file_each(tmp_path: Path) -> None:
    """``%(processName)s`` is ``ForkPoolWorker-N``, ``-f celery%I.log`` gives each child
    its own file, and ``pgrep -f celery`` finds the children (Celery's title first)."""
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS, "-f", str(tmp_path / "celery%I.log"))
    try:
        assert [worker.send("t.add", i, i).get(timeout=RESULT_TIMEOUT) for i in range(6)] \
            == [2 * i for i in range(6)]
        for pid in worker.pool_info()["processes"]:
            title = " ".join(psutil.Process(pid).cmdline()).strip()
            assert re.fullmatch(r"\[celeryd: \S+:ForkPoolWorker-(\d)\] pprunner worker \1: idle",
                                title), title
        logs = {path.name: path.read_text() for path in tmp_path.glob("celery-*.log")}
        assert sorted(logs) == ["celery-1.log", "celery-2.log"], logs
        for index in (1, 2):
            assert f"/ForkPoolWorker-{index}]" in logs[f"celery-{index}.log"], logs
        assert re.search(r"INFO/ForkPoolWorker-\d\] Task t.add\[", "".join(logs.values()))
    finally:
        worker.stop()


def test_ready_is_logged_once_every_child_has_booted(redis_worker: Worker) -> None:
    """Celery's "ready." comes after the pool's start: spawned children have booted by
    then, so the first task does not wait for them."""
    stamp = re.search(rf"\[([\d-]+ [\d:]+,\d+): INFO/MainProcess\] {redis_worker.name} ready\.",
                      redis_worker.output())
    assert stamp is not None, redis_worker.output()
    ready_at = datetime.datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    # worker_process_init in the first two children (it runs before a child has booted)
    inits = sorted(marker.stat().st_mtime for marker in redis_worker.markers.glob("init-*"))
    assert len(inits) >= 2 and inits[1] <= ready_at + 0.001, (inits, ready_at)


def test_the_started_state_carries_the_childs_pid(redis_worker: Worker) -> None:
    result = redis_worker.send("t.sleep", 1)
    pid = started_pid(result)
    assert pid in redis_worker.pool_info()["processes"]
    assert pid != redis_worker.process.pid
    assert result.get(timeout=RESULT_TIMEOUT) == "slept 1"


def test_worker_process_init_fired_in_each_child_before_its_tasks(redis_worker: Worker) -> None:
    pids = {redis_worker.send("t.whoami").get(timeout=RESULT_TIMEOUT) for _ in range(6)}
    assert pids <= set(redis_worker.pool_info()["processes"])
    assert all(redis_worker.initialized(pid) for pid in pids)


def test_acks_late_acknowledges_once_the_task_is_done(redis_worker: Worker,
                                                     tmp_path: Path) -> None:
    client = redis.Redis.from_url(REDIS)
    result = redis_worker.send("t.sleep_unless_marked_late", str(tmp_path / "m"), 1)

    def unacknowledged() -> bool:
        """Its message is among the transport's unacknowledged ones (which may hold
        other tests' too: a worker they stopped under a prefetched task leaves them)."""
        return any(result.id.encode() in message for message in client.hvals("unacked"))

    started_pid(result)
    assert unacknowledged()  # held, unacknowledged, while it runs
    assert result.get(timeout=RESULT_TIMEOUT) == "first run"
    wait_until(lambda: not unacknowledged(), 10, "the late ack")
    client.close()


def test_autoretry_for_and_retry_run_the_task_again(redis_worker: Worker) -> None:
    assert redis_worker.send("t.autoretry", 2).get(timeout=RESULT_TIMEOUT) == 2
    assert redis_worker.send("t.retry", 2).get(timeout=RESULT_TIMEOUT) == 2
    failed = redis_worker.send("t.autoretry", 5)
    with pytest.raises(ValueError, match="attempt 3 fails"):
        failed.get(timeout=RESULT_TIMEOUT)


# -- a child killed under a task ----------------------------------------------------------


def test_sigkill_under_a_task_is_preforks_worker_lost_error(redis_worker: Worker,
                                                            tmp_path: Path) -> None:
    result = redis_worker.send("t.sleep_unless_marked", str(tmp_path / "m"), 30)
    pid = marked_pid(result, tmp_path / "m")
    os.kill(pid, signal.SIGKILL)
    wait_until(result.ready, RESULT_TIMEOUT, "the lost task's failure")
    assert type(result.result).__name__ == "WorkerLostError"
    assert re.fullmatch(r"Worker exited prematurely: signal 9 \(SIGKILL\) Job: \d+\.",
                        str(result.result)), result.result
    # the pool replaced the child and serves on
    wait_until(lambda: len(redis_worker.pool_info().get("processes", [])) == 2, 30,
               "the replacement child")
    assert redis_worker.send("t.add", 1, 1).get(timeout=RESULT_TIMEOUT) == 2


def test_acks_late_with_reject_on_worker_lost_redelivers_the_killed_task(
        redis_worker: Worker, tmp_path: Path) -> None:
    result = redis_worker.send("t.sleep_unless_marked_late", str(tmp_path / "m"), 30)
    os.kill(marked_pid(result, tmp_path / "m"), signal.SIGKILL)
    assert result.get(timeout=RESULT_TIMEOUT) == "second run"


# -- limits, revokes, resizing -------------------------------------------------------------


def test_a_per_task_soft_limit_raises_celerys_own_exception(redis_worker: Worker) -> None:
    result = redis_worker.send("t.soft_limited")
    assert result.get(timeout=RESULT_TIMEOUT) == \
        "billiard.exceptions.SoftTimeLimitExceeded"  # celery.exceptions re-exports it
    # and the worker logs Celery's warning, as prefork's parent does
    warning = f"Soft time limit (0.5s) exceeded for t.soft_limited[{result.id}]"
    wait_until(lambda: warning in redis_worker.output(), 10, "Celery's soft limit warning")


def test_a_per_task_hard_limit_fails_with_time_limit_exceeded(redis_worker: Worker) -> None:
    result = redis_worker.send("t.hard_limited")
    wait_until(result.ready, RESULT_TIMEOUT, "the hard limit")
    assert type(result.result).__name__ == "TimeLimitExceeded"
    assert redis_worker.send("t.add", 2, 2).get(timeout=RESULT_TIMEOUT) == 4


def test_revoke_with_terminate_ends_the_running_task(redis_worker: Worker) -> None:
    result = redis_worker.send("t.sleep", 30)
    pid = started_pid(result)
    redis_worker.app.control.revoke(result.id, terminate=True, destination=[redis_worker.name])
    with pytest.raises(TaskRevokedError):
        result.get(timeout=RESULT_TIMEOUT)
    wait_until(lambda: not psutil.pid_exists(pid) or
               psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10, "the child to end")
    assert redis_worker.send("t.add", 3, 3).get(timeout=RESULT_TIMEOUT) == 6


def test_pool_grow_and_shrink_by_remote_control(redis_worker: Worker) -> None:
    control = redis_worker.app.control
    control.pool_grow(1, destination=[redis_worker.name], reply=True)
    wait_until(lambda: len(redis_worker.pool_info().get("processes", [])) == 3, 30,
               "a third child")
    control.pool_shrink(1, destination=[redis_worker.name], reply=True)
    wait_until(lambda: len(redis_worker.pool_info().get("processes", [])) == 2, 30,
               "back to two children")


def test_pool_restart_replaces_every_child(redis_worker: Worker) -> None:
    before = set(redis_worker.pool_info()["processes"])
    redis_worker.app.control.pool_restart(destination=[redis_worker.name], reply=True)
    wait_until(lambda: not before & set(redis_worker.pool_info().get("processes", [])), 60,
               "every child to be replaced")
    assert redis_worker.send("t.add", 4, 4).get(timeout=RESULT_TIMEOUT) == 8


# -- result.get() inside a task: the waiting child lends its slot ----------------------------


def test_tasks_that_wait_for_subtasks_lend_their_slots(tmp_path: Path) -> None:
    """Both children run a parent that waits for a subtask: with prefork this is
    refused (or, allowed, deadlocks); here each waiting child lends its slot, so
    the subtasks run in extra children, which retire once the waits are over.
    (A worker of its own: its results' connections are closed with it.)"""
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS)
    try:
        tag = f"parents-{uuid.uuid4().hex[:6]}"
        parents = [worker.send("t.parent", x, tag, 2) for x in (1, 2)]
        assert [p.get(timeout=RESULT_TIMEOUT) for p in parents] == [2, 4]
        assert worker.send("t.parent_of_group", 3).get(timeout=RESULT_TIMEOUT) == [0, 2, 4]
        assert "waits for its own result" in \
            worker.send("t.wait_for_itself").get(timeout=RESULT_TIMEOUT)
        wait_until(lambda: len(worker.pool_info().get("processes", [])) == 2, 30,
                   "back to two children")
        assert worker.send("t.add", 5, 5).get(timeout=RESULT_TIMEOUT) == 10
        assert "retires: its lent slot was given back" in worker.output()  # they existed
        children = {c.pid for c in psutil.Process(worker.process.pid).children(recursive=True)
                    if "pprunner template" not in " ".join(c.cmdline())}
        assert set(worker.pool_info()["processes"]) == children  # the live children only
        del parents
    finally:
        worker.stop()


def test_a_wait_past_the_lending_limit_fails_its_task_instead_of_hanging(tmp_path: Path) -> None:
    """``-c 1``: one slot may be lent; a second task that waits while the first does
    would leave no child for their subtasks. Its wait raises, naming the setting; the
    other parent's subtask then runs."""
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS, concurrency=1)
    try:
        # each waits up to 600 s for its subtask (x, no tag, no siblings, timeout)
        parents = [worker.send("t.parent", x, "", 1, 600) for x in (1, 2)]
        for result in parents:
            wait_until(result.ready, 60, "every parent to end")
        outcomes = sorted((r.result if r.successful() else type(r.result).__name__
                           for r in parents), key=str)
        assert outcomes in ([2, "LendingLimitReached"], [4, "LendingLimitReached"]), outcomes
        refused = next(r.result for r in parents if not r.successful())
        assert "pprunner_max_lent_slots = -c" in str(refused), refused
        assert "its wait is refused" in worker.output()
    finally:
        worker.stop()


def test_an_acks_late_parent_widens_the_prefetch_window_for_its_subtask(
        tmp_path: Path) -> None:
    """With -c 1 and prefetch multiplier 1 the consumer may hold one unacknowledged
    message, and an acks-late parent is unacknowledged while it waits: the window
    grows with the lent slot (as after pool_grow), so the subtask is fetched and the
    wait ends; once it is over the window is back to one."""
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS, "--prefetch-multiplier", "1", concurrency=1)
    try:
        assert worker.send("t.parent", 3).get(timeout=RESULT_TIMEOUT) == 6
        assert worker.send("t.parent_late", 4, 20).get(timeout=RESULT_TIMEOUT) == 8
        wait_until(lambda: worker.prefetch_count() == 1, 30, "the window back to one")
    finally:
        worker.stop()


# -- RabbitMQ, the worker_pool setting, worker-wide limits, recycling ------------------------


def test_on_rabbitmq_chosen_by_the_worker_pool_setting(amqp_worker: Worker) -> None:
    assert amqp_worker.send("t.add", 20, 22).get(timeout=RESULT_TIMEOUT) == 42
    assert amqp_worker.pool_info()["implementation"] == "pprunner_plugins.celery.pool:TaskPool"


def test_worker_wide_soft_and_hard_limits(amqp_worker: Worker) -> None:
    assert amqp_worker.send("t.catch_soft_limit", 10).get(timeout=RESULT_TIMEOUT) == \
        "billiard.exceptions.SoftTimeLimitExceeded"
    assert amqp_worker.pool_info()["timeouts"] == [1.5, 4.0]
    result = amqp_worker.send("t.ignore_soft_limit", 30)
    wait_until(result.ready, RESULT_TIMEOUT, "the worker-wide hard limit")
    assert type(result.result).__name__ == "TimeLimitExceeded"


def test_max_tasks_per_child_recycles_children(amqp_worker: Worker) -> None:
    pids = [amqp_worker.send("t.whoami").get(timeout=RESULT_TIMEOUT) for _ in range(10)]
    assert len(set(pids)) >= 4  # 10 tasks, at most 3 per child
    assert max(pids.count(p) for p in set(pids)) <= 3
    assert amqp_worker.pool_info()["max-tasks-per-child"] == 3


def test_on_rabbitmq_a_killed_acks_late_task_is_redelivered(amqp_worker: Worker,
                                                            tmp_path: Path) -> None:
    # its own limits, above the worker's 4 s: on a loaded machine the kill must not
    # race the task's end
    result = amqp_worker.send("t.sleep_unless_marked_late", str(tmp_path / "m"), 30,
                              time_limit=60, soft_time_limit=50)
    os.kill(marked_pid(result, tmp_path / "m"), signal.SIGKILL)
    assert result.get(timeout=RESULT_TIMEOUT) == "second run"


# -- shutting down ----------------------------------------------------------------------


def test_cold_shutdown_ends_the_children_at_once(tmp_path: Path) -> None:
    """SIGQUIT: Celery's cold shutdown does not wait for the running task, and no child
    outlives the worker."""
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS, concurrency=1)
    try:
        pid = started_pid(worker.send("t.sleep", 60))
        worker.process.send_signal(signal.SIGQUIT)
        worker.process.wait(timeout=30)  # long before the task's 60 s
        wait_until(lambda: not psutil.pid_exists(pid)
                   or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10,
                   "the child to be gone")
    finally:
        worker.stop()


def test_max_memory_per_child_recycles_a_child_over_it(tmp_path: Path) -> None:
    """Celery's KiB: every child is over 1 KiB after a task, so each takes one and is
    replaced; no task is lost on the way."""
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS, "--max-memory-per-child=1", concurrency=1)
    try:
        pids = [worker.send("t.whoami").get(timeout=RESULT_TIMEOUT) for _ in range(3)]
        assert len(set(pids)) == 3, pids
    finally:
        worker.stop()


def test_max_memory_per_child_is_the_peak_after_a_task_as_with_prefork(tmp_path: Path) -> None:
    """A task that allocates 150 MiB and frees them under a 100 MiB limit: its child's
    peak is over the limit, so the next task runs in another child."""
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS, f"--max-memory-per-child={100 * 1024}", concurrency=1)
    try:
        first, second = (worker.send("t.whoami").get(timeout=RESULT_TIMEOUT) for _ in range(2))
        assert first == second  # below the limit, the child stays
        assert worker.send("t.allocate", 150).get(timeout=RESULT_TIMEOUT) == first
        assert worker.send("t.whoami").get(timeout=RESULT_TIMEOUT) != first
        assert "exceeds --max-memory-per-child (102400 KiB)" in worker.output()
    finally:
        worker.stop()


def test_autoscale_grows_the_pool_under_load(tmp_path: Path) -> None:
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS, "--autoscale=3,1", concurrency=1)
    try:
        results = [worker.send("t.sleep", 3) for _ in range(3)]
        pids = {started_pid(r) for r in results}
        assert len(pids) == 3  # three children ran the three tasks at once
        assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == ["slept 3"] * 3
    finally:
        worker.stop()


def test_forked_children_boot_with_celerys_stand_in_for_stderr(tmp_path: Path) -> None:
    """Celery replaces sys.stderr with a log proxy that has no file descriptor, and a
    forked child (``pprunner_start_method = "fork"``, or an app with no import path)
    inherits it: the child still boots and runs tasks."""
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS, concurrency=1, PPRUNNER_START_METHOD="fork")
    try:
        (child,) = worker.pool_info()["processes"]
        assert worker.send("t.whoami").get(timeout=RESULT_TIMEOUT) == child
        assert re.search(r"started 1 workers \(fork\)", worker.output()), worker.output()
    finally:
        worker.stop()


def test_warm_shutdown_finishes_the_running_task(tmp_path: Path) -> None:
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS, concurrency=1)
    try:
        result = worker.send("t.sleep", 2)
        pid = started_pid(result)
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=60) == 0, worker.output()
        assert result.get(timeout=RESULT_TIMEOUT) == "slept 2"
        assert (worker.markers / f"shutdown-{pid}").exists()  # worker_process_shutdown
    finally:
        worker.stop()


def test_sigterm_to_the_process_group_fails_running_tasks_as_prefork(tmp_path: Path) -> None:
    """supervisord's and systemd's stop: every child gets SIGTERM with the worker, dies
    of it as prefork's do, and its early-acked task ends FAILURE with prefork's error
    (it would stay STARTED forever otherwise)."""
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS)
    try:
        results = [worker.send("t.sleep", 60) for _ in range(2)]
        for result in results:
            started_pid(result)
        os.killpg(worker.process.pid, signal.SIGTERM)
        for result in results:
            wait_until(result.ready, RESULT_TIMEOUT, "the task's failure")
            assert result.state == "FAILURE"
            assert re.fullmatch(r"Worker exited prematurely: signal 15 \(SIGTERM\) Job: \d+\.",
                                str(result.result)), result.result
        assert worker.process.wait(timeout=30) == 0, worker.output()
        assert "killed by SIGTERM" in worker.output()
    finally:
        worker.stop()


@pytest.mark.parametrize("busy", [True, False], ids=["busy", "idle"])
def test_ctrl_c_twice_is_a_quiet_cold_shutdown(tmp_path: Path, busy: bool) -> None:
    """The second Ctrl-C is Celery's cold shutdown, which stops the pool from its
    signal handler, in the middle of the warm one: no traceback, no death by SIGINT."""
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS)
    try:
        pids = [started_pid(worker.send("t.sleep", 60)) for _ in range(2 if busy else 0)]
        worker.process.send_signal(signal.SIGINT)
        # Celery says the warm shutdown is under way (asked by remote control instead,
        # a ping's reply consumer leaves kombu a channel blocked in BRPOP, which its
        # after-fork hook then reads from in every process this test process forks)
        wait_until(lambda: "Warm shutdown" in worker.output(), 30, "the warm shutdown")
        worker.process.send_signal(signal.SIGINT)
        assert worker.process.wait(timeout=30) >= 0, worker.output()  # long before 60 s
        assert "Traceback" not in worker.output() and "Error" not in worker.output()
        assert not any(psutil.pid_exists(pid) for pid in pids)
    finally:
        worker.stop()


def test_a_blocking_consumer_is_served_by_the_dispatcher_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu's filesystem transport has no event loop (Celery consumes it with its
    blocking loop): results, a child killed under a task, and a warm shutdown that
    lets the running task finish, as on Redis and RabbitMQ."""
    _reachable(REDIS, 6379)
    folder = tmp_path / "broker"
    (folder / "control").mkdir(parents=True)
    monkeypatch.setenv(celery_app.FOLDER_ENV, str(folder))  # for this process's app too
    worker = Worker(tmp_path, "filesystem://")
    try:
        assert worker.pool_info()["pprunner"]["delivery"] == "thread"
        results = [worker.send("t.add", i, i) for i in range(10)]
        assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == [2 * i for i in range(10)]
        lost = worker.send("t.sleep_unless_marked", str(tmp_path / "m"), 30)
        os.kill(marked_pid(lost, tmp_path / "m"), signal.SIGKILL)
        wait_until(lost.ready, RESULT_TIMEOUT, "the lost task's failure")
        assert str(lost.result).startswith("Worker exited prematurely: signal 9 (SIGKILL)")
        running = worker.send("t.sleep", 2)
        started_pid(running)
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=60) == 0, worker.output()
        assert running.get(timeout=RESULT_TIMEOUT) == "slept 2"
    finally:
        worker.stop()


def test_children_that_cannot_boot_stop_the_worker_with_the_cause(tmp_path: Path) -> None:
    _reachable(REDIS, 6379)
    worker = Worker(tmp_path, REDIS, ready=False, **{celery_app.FAIL_INIT_ENV: "1",
                                                      "PPRUNNER_CRASH_LOOP_PERIOD": "2"})
    try:
        assert worker.process.wait(timeout=60) != 0
        output = worker.output()
        assert re.search(r"the pprunner pool cannot run tasks: workers keep dying before they "
                         r"boot: worker \d \(runner", output), output
        assert "exited with code 3" in output
    finally:
        worker.stop()


# -- started the way users start it: a project folder, the celery script ------------------

#: Celery's tutorial layout (``proj/celery.py`` with ``include``, ``proj/tasks.py``) and
#: an app in the script run as ``__main__`` (it calls ``worker_main``)
PROJECT = {
    "proj/__init__.py": "",
    "proj/celery.py": """
import os
from celery import Celery
app = Celery("proj", broker=os.environ["PROJ_BROKER"], backend=os.environ["PROJ_BROKER"],
             include=["proj.tasks"])
app.conf.task_default_queue = os.environ["PROJ_QUEUE"]
""",
    "proj/tasks.py": """
import os
from .celery import app
@app.task
def add(x, y):
    return x + y
""",
    "myapp.py": """
import os, sys
from celery import Celery
app = Celery("myapp", broker=os.environ["PROJ_BROKER"], backend=os.environ["PROJ_BROKER"])
app.conf.task_default_queue = os.environ["PROJ_QUEUE"]
@app.task(name="proj.tasks.add")
def add(x, y):
    return x + y
if __name__ == "__main__":
    app.worker_main(sys.argv[1:])
""",
}


@contextlib.contextmanager
def project_worker(tmp_path: Path, argv: list[str], cwd: Path) -> Iterator[Any]:
    """A worker started by ``argv`` in ``cwd`` with no ``PYTHONPATH``, on the
    project in ``tmp_path/project``; yields a function that runs ``proj.tasks.add``
    through it. The process group is reaped whatever happens."""
    _reachable(REDIS, 6379)
    folder = tmp_path / "project"
    for name, text in PROJECT.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    queue = f"pprunner-project-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    env = {**user_environ(), "PROJ_BROKER": REDIS, "PROJ_QUEUE": queue}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    client = Celery("client", broker=REDIS, backend=REDIS, set_as_current=False)

    def add(x: int, y: int) -> int:
        result = client.send_task("proj.tasks.add", (x, y), queue=queue)
        wait_until(lambda: result.ready() or process.poll() is not None, 60, "the result")
        assert result.ready(), log.read_text(errors="replace")
        return int(result.get(timeout=1))

    try:
        yield add
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        close_app(client)


@pytest.mark.parametrize("how", ["project folder", "--workdir"])
def test_the_celery_script_from_a_project_folder_gives_children_its_path(
        tmp_path: Path, how: str) -> None:
    """Celery puts the working directory (or ``--workdir``) on ``sys.path`` only
    while it imports ``-A``: spawned children still find ``proj``."""
    folder = tmp_path / "project"
    argv = [CELERY, "-A", "proj", "worker", "--pool", "pprunner", "-c", "2", "-l", "INFO"]
    cwd = folder
    if how == "--workdir":
        argv, cwd = [CELERY, "--workdir", str(folder), *argv[1:]], tmp_path
    folder.mkdir()
    with project_worker(tmp_path, argv, cwd) as add:
        assert [add(i, i) for i in range(4)] == [0, 2, 4, 6]


def test_an_app_in_the_script_run_as_main_makes_children_fork(tmp_path: Path) -> None:
    """``python myapp.py worker``: the app lives in ``__main__`` (billiard also
    calls it ``__mp_main__``), which a spawned child cannot import: children fork."""
    folder = tmp_path / "project"
    folder.mkdir()
    argv = [sys.executable, "myapp.py", "worker", "--pool", "pprunner", "-c", "1", "-l", "INFO"]
    with project_worker(tmp_path, argv, folder) as add:
        assert add(2, 3) == 5
    assert "children start with fork instead of template" in \
        (tmp_path / "worker.log").read_text()


# -- the parts, without a broker -------------------------------------------------------------


def test_celery_pprunner_shows_the_settings_a_worker_of_this_app_uses() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PPRUNNER_START_METHOD": "forkserver"}
    shown = subprocess.run([sys.executable, "-m", "celery", "-A", "tests.celery_app",
                            "pprunner"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "pool: celery -A tests.celery_app worker --pool pprunner" in shown.stdout
    assert "pprunner_start_method = 'forkserver'" in shown.stdout
    bad = subprocess.run([sys.executable, "-m", "celery", "-A", "tests.celery_app",
                          "pprunner"], cwd=REPO, env={**env, "PPRUNNER_BOOT_TIMEOUT": "-1"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("pprunner: setting 'boot_timeout' from environment "
                                  "PPRUNNER_BOOT_TIMEOUT: expected a number > 0, got '-1'")


def test_a_celery_without_a_pool_option_to_extend_gets_a_reason_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.bin.worker import worker

    from pprunner_plugins.celery import command

    monkeypatch.setattr(worker, "params", [p for p in worker.params if p.name != "pool"])
    problem = command.register_pool_alias()
    assert problem is not None
    assert "--pool custom" in problem and command.POOL in problem


def test_settings_come_from_celery_then_its_config_then_the_environment() -> None:
    config = settings.resolve(
        {"limit": 3, "maxtasksperchild": 7, "max_memory_per_child": 1500},
        {"pprunner_boot_timeout": 9, "pprunner_start_method": "forkserver", "broker_url": "x"},
        environ={"PPRUNNER_START_METHOD": "fork", "PPRUNNER_SERIALIZER": "msgpack"})
    assert (config.processes, config.max_tasks_per_child) == (3, 7)
    assert config.max_memory_per_child == 2  # 1500 KiB, rounded up to MiB
    assert (config.boot_timeout, config.start_method) == (9, "fork")
    assert config.log_level == "WARNING"
    assert config.metrics_port is None
    metered = settings.resolve({"limit": 1}, {"pprunner_metrics_port": 9100},
                               environ={"PPRUNNER_METRICS_PORT": "127.0.0.1:9101-9102"})
    assert metered.metrics_port == "127.0.0.1:9101-9102"
    assert settings.resolve({"limit": 1}, {"pprunner_metrics_port": 9100},
                            environ={}).metrics_port == "9100"


@pytest.mark.parametrize(("key", "message"), [
    ("pprunner_processes", "pprunner_processes is Celery's to set here: use -c"),
    ("pprunner_bogus", "unknown setting 'pprunner_bogus' in the Celery config"),
])
def test_settings_refuse_what_is_not_pprunners_to_set(key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings.resolve({"limit": 2}, {key: 1}, environ={})


def test_a_bad_setting_is_one_line_at_pool_creation() -> None:
    app = Celery("bad", set_as_current=False)
    app.conf.pprunner_start_method = "teleport"
    with pytest.raises(ConfigError, match="start_method"):
        TaskPool(2, app=app)
    app.close()


def test_an_app_without_import_path_makes_children_fork(caplog: pytest.LogCaptureFixture) -> None:
    app = Celery("built_at_run_time", set_as_current=False)
    assert child.AppRef.find(app) is None
    assert str(child.AppRef.find(celery_app.app)) == "tests.celery_app:app"
    pool = TaskPool(2, app=app)
    with caplog.at_level(logging.WARNING, "pprunner.celery"):
        assert pool._app_for_children() == (app, "fork")
    assert "start with fork instead of template" in caplog.text
    app.close()


def test_main_process_setup_receivers_get_one_warning_with_spawned_children(
        caplog: pytest.LogCaptureFixture) -> None:
    """``celeryd_init``/``worker_init`` run in the main process: with spawn, what they
    set never reaches tasks; the pool says so, pointing at ``worker_process_init``."""
    def setup(**_: Any) -> None:
        pass

    with caplog.at_level(logging.WARNING, "pprunner.celery"):
        pool_module._warn_about_main_process_setup("spawn")
        assert "worker_init" not in caplog.text  # Celery's own receivers do not count
        signals.worker_init.connect(setup)
        try:
            pool_module._warn_about_main_process_setup("spawn")
        finally:
            signals.worker_init.disconnect(setup)
    assert re.search(r"receivers of worker_init \(tests\.test_celery\.\S+setup\) run in the "
                     r"worker's main process only; with spawn children .* worker_process_init",
                     caplog.text), caplog.text


def test_events_become_billiards_callbacks() -> None:
    seen: list[tuple[str, Any]] = []

    def error(info: Any) -> None:
        seen.append(("error", getattr(info.exception, "exc", info.exception)))

    call = Call(print, name="t.x", time_limit=3)
    job = Job(7, call, callback=lambda v: seen.append(("callback", v)),
              accept_callback=lambda pid, at: seen.append(("accepted", pid)),
              error_callback=error,
              timeout_callback=lambda soft, timeout: seen.append(("timeout", (soft, timeout))))
    job.notify(Started(call, 42, "r", 1))
    job.notify(Lost(call, 42, -9, "SIGKILL", "was killed by SIGKILL"))
    job.notify(TimedOut(call, 42, 3))
    job.notify(Finished(call, (0, 5, 0.1), 42))
    job.notify(Cancelled(call, "stopping"))
    assert seen[0] == ("accepted", 42)
    assert str(seen[1][1]) == "Worker exited prematurely: signal 9 (SIGKILL) Job: 7."
    assert type(seen[2][1]).__name__ == "TimeLimitExceeded"
    assert seen[3] == ("timeout", (False, 3))
    assert seen[4] == ("callback", (0, 5, 0.1))
    assert len(seen) == 5  # a cancelled call is left unacked: no callback


# -- the example, with the README's commands ---------------------------------------------


#: the example's default broker (read, not imported: importing it makes its app current)
EXAMPLE_REDIS = re.findall(r'^REDIS = "(.+)"$', (REPO / "examples" / "celery_app" /
                                                   "__init__.py").read_text(), re.M)[0]


def test_the_example_runs_with_the_readmes_commands() -> None:
    _reachable(REDIS, 6379)
    database = EXAMPLE_REDIS  # the README's commands, the example's own database
    assert not database.endswith("/0")
    env = user_environ()
    worker = subprocess.Popen(
        [CELERY, "-A", "examples.celery_app", "worker", "--pool",
         "pprunner", "-c", "2", "-l", "INFO", "-n", f"example-{uuid.uuid4().hex[:8]}@%h"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        sent = subprocess.run([sys.executable, "-m", "examples.celery_app"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        log = worker.communicate(timeout=30)[0].decode(errors="replace")
        client = redis.Redis.from_url(database)
        client.flushdb()
        client.close()
    assert sent.returncode == 0, sent.stderr + log
    lines = sent.stdout.splitlines()
    assert lines[:2] == ["add: [0, 2, 4, 6, 8]", "patient: stopped at the soft limit"], log
    assert lines[2].startswith("dies_once: survived, in child "), log


def test_a_task_that_ran_past_its_soft_limit_gets_the_warning_even_if_it_ended_first() -> None:
    """The child's own timer raises the soft limit; when the task's end reaches the
    parent before the parent's timer fires, the runtime Celery measured says it."""
    seen: list[tuple[bool, float]] = []
    job = Job(1, Call(print, name="t.x", soft_time_limit=0.5),
              timeout_callback=lambda soft, timeout: seen.append((soft, timeout)))
    job.cancel_soft_warning = lambda: None  # the parent's timer, not fired yet
    job.notify(Finished(job.call, (0, "caught it", 0.5012), 42))
    assert seen == [(True, 0.5)]


def test_the_consumers_slots_follow_the_waiting_tasks_up_to_the_bound() -> None:
    from kombu.asynchronous.semaphore import LaxBoundedSemaphore

    app = Celery("lend", set_as_current=False)
    app.conf.pprunner_max_lent_slots = 1
    slots = LaxBoundedSemaphore(2)
    pool = TaskPool(2, app=app, semaphore=slots, threads=False)
    pool._slots = slots
    ran: list[int] = []
    for i in range(3):
        slots.acquire(ran.append, i)
    assert ran == [0, 1]  # the third task waits for a slot
    pool._lend(+1)
    assert ran == [0, 1, 2]  # a waiting task lent its slot
    pool._lend(+1)
    assert slots.initial_value == 3  # the second wait is past the bound: nothing lent
    pool._lend(-1)
    assert slots.initial_value == 3  # one task still waits
    pool._lend(-1)
    assert (slots.initial_value, slots.value, pool._owed) == (2, 0, 1)
    pool._ended(Job(1, Call(print)))  # three ran in two slots: the first end repays
    assert slots.value == 0
    pool._ended(Job(2, Call(print)))
    assert slots.value == 1
    app.close()


@pytest.mark.parametrize("consumer", ["hub", "blocking"])
def test_grow_and_shrink_move_the_consumers_slots_one_for_one(consumer: str) -> None:
    """kombu's own grow(n) frees 2n slots, billiard's takes no count: the pool
    adds and removes exactly n, whichever semaphore the consumer gave it."""
    from billiard.pool import LaxBoundedSemaphore as BilliardSemaphore
    from kombu.asynchronous.semaphore import LaxBoundedSemaphore as KombuSemaphore

    app = Celery("resize", set_as_current=False)
    slots: Any = KombuSemaphore(2) if consumer == "hub" else BilliardSemaphore(2)
    pool = TaskPool(2, app=app, semaphore=slots, threads=consumer == "blocking")
    resized: list[int] = []
    pool._resize = resized.append  # type: ignore[method-assign]
    pool._slots = slots
    free = (lambda: slots.value) if consumer == "hub" else (lambda: slots._value)
    pool.grow(2)
    assert (resized, free()) == ([4], 4)
    pool.shrink(1)
    assert free() == 3
    app.close()


def test_grow_lets_exactly_n_waiting_tasks_through_the_hubs_slots() -> None:
    from kombu.asynchronous.semaphore import LaxBoundedSemaphore as KombuSemaphore

    app = Celery("resize-waiting", set_as_current=False)
    slots = KombuSemaphore(1)
    pool = TaskPool(1, app=app, semaphore=slots, threads=False)
    pool._resize = lambda processes: None  # type: ignore[method-assign]
    pool._slots = slots
    ran: list[int] = []
    for i in range(3):
        slots.acquire(ran.append, i)
    assert ran == [0]
    pool.grow(1)
    assert ran == [0, 1] and slots.value == 0  # one more slot: one more task, not two
    app.close()
