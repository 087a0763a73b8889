"""``pprunner dramatiq``: the command users type, run from ``examples/dramatiq_app``
(no PYTHONPATH) against a real Redis (database 9 of the tests' server, keys under a
namespace of the module's own); messages sent and results read with Dramatiq's API.

dramatiq missing: a skip here, a failure in CI (``PPRUNNER_REQUIRE_DRAMATIQ=1``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

if importlib.util.find_spec("dramatiq") is None:
    if os.environ.get("PPRUNNER_REQUIRE_DRAMATIQ", "") not in ("", "0"):
        raise RuntimeError("PPRUNNER_REQUIRE_DRAMATIQ is set but dramatiq is not installed: "
                           "pip install -e '.[test]'")
    pytest.skip("dramatiq is not installed (pip install 'pprunner[dramatiq]')",
                allow_module_level=True)

import psutil
import redis
from dramatiq.common import dq_name, xq_name
from dramatiq.results import ResultFailure, ResultTimeout

from tests.conftest import REPO, wait_until
from tests.optional import require_server

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]

APP = REPO / "examples" / "dramatiq_app"


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    return redis_base.split("?")[0].rsplit("/", 1)[0] + "/9"


@contextlib.contextmanager
def example(redis_url: str, **settings: str) -> Iterator[ModuleType]:
    """The example's tasks module as the producer imports it (a copy of its own for
    each use), on database 9 under a namespace and queue of its own, in the
    environment the command inherits; its keys are deleted afterwards."""
    namespace = f"pprunner-test-{uuid.uuid4().hex[:8]}"
    settings = {"DRAMATIQ_APP_REDIS": redis_url, "DRAMATIQ_APP_NAMESPACE": namespace,
                "DRAMATIQ_APP_QUEUE": namespace, **settings}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        spec = importlib.util.spec_from_file_location(f"tasks_{namespace}", APP / "tasks.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
        module.broker.close()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        client.close()


@pytest.fixture(scope="module")
def app(redis_url: str) -> Iterator[ModuleType]:
    with example(redis_url) as module:
        yield module


class Command:
    """``pprunner dramatiq tasks ...`` started from the example's folder, in a session
    of its own; it and its workers are killed in teardown."""

    def __init__(self, args: tuple[str, ...], env: dict[str, str], log: Path) -> None:
        environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.log_path = log
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("pprunner")), "dramatiq", "tasks", *args],
                cwd=APP, start_new_session=True, env={**environ, **env}, stderr=stderr)

    def log(self) -> str:
        """What it logged so far (shown with a failed test's output once it is closed)."""
        return self.log_path.read_text(errors="replace")

    def workers(self) -> set[int]:
        """The worker processes alive now (one that just died is left out)."""
        alive = set()
        with contextlib.suppress(psutil.NoSuchProcess):
            # forked by the template, a child of the command's process
            for child in psutil.Process(self.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "pprunner worker" in " ".join(child.cmdline()):
                        alive.add(child.pid)
        return alive

    def close(self) -> None:
        family = [self.process.pid]
        with contextlib.suppress(psutil.NoSuchProcess):
            family += [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.log_path.exists():
            sys.stderr.write(self.log())
            self.log_path.unlink()


@pytest.fixture
def command(app: ModuleType, tmp_path: Path) -> Iterator[Any]:
    started: list[Command] = []

    def start(*args: str, app: ModuleType = app, **env: str) -> Command:
        running = Command(args, {**env, "DRAMATIQ_APP_QUEUE": app.QUEUE,
                                 "DRAMATIQ_APP_NAMESPACE": app.NAMESPACE,
                                 **({"DRAMATIQ_APP_RABBITMQ": app.RABBITMQ}
                                    if app.RABBITMQ else {})},
                          tmp_path / f"command-{len(started)}.log")
        started.append(running)
        processes = int(args[args.index("--processes") + 1])
        probe = app.add.send(1, 2)
        deadline = time.monotonic() + 60
        while running.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ResultTimeout):
                assert result(app, probe, timeout=1) == 3  # booted and consuming
                wait_until(lambda: len(running.workers()) == processes, what="every worker")
                return running
        pytest.fail(f"pprunner dramatiq did not consume (exit code {running.process.poll()})")

    yield start
    for running in started:
        running.close()


def result(app: ModuleType, message: Any, timeout: float = 20) -> Any:
    return message.get_result(backend=app.results, block=True, timeout=int(timeout * 1000))


def first_attempts_pid(marker_dir: Path) -> int:
    """The pid of the worker running ``crash_once``'s first attempt, once it runs."""
    marker = marker_dir / "first"
    wait_until(lambda: marker.exists() and marker.read_text().endswith("\n"),
               what="the first attempt")
    return int(marker.read_text())


def test_the_documented_command_runs_the_example(app, command) -> None:
    running = command("--processes", "2", "--threads", "1")
    messages = [app.pid.send(0.2) for _ in range(6)]
    pids = {result(app, m) for m in messages}
    assert pids == running.workers() and len(pids) == 2  # both consumed, in parallel


def test_a_killed_worker_is_replaced_alone_and_its_message_retried(app, command,
                                                                  tmp_path: Path) -> None:
    running = command("--processes", "2", "--threads", "1")
    message = app.crash_once.send(str(tmp_path))
    victim = first_attempts_pid(tmp_path)
    survivor = (running.workers() - {victim}).pop()

    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    pid, retries = result(app, message)
    assert time.monotonic() - killed_at < 5  # not the broker's 60 s heartbeat timeout
    assert pid != victim and retries == 1  # Dramatiq's Retries counted the attempt
    assert survivor in running.workers()  # the other worker was never stopped
    wait_until(lambda: len(running.workers()) == 2, what="a replacement")
    assert running.process.poll() is None


def assert_killed_at_its_time_limit(app: ModuleType, running: Command) -> None:
    """``blocks(60)``, which Dramatiq's TimeLimit cannot interrupt, fails with Dramatiq's
    own error well before the 60 s, and the one worker was replaced."""
    (before,) = running.workers()
    started = time.monotonic()
    with pytest.raises(ResultFailure) as failure:
        result(app, app.blocks.send(60))
    assert failure.value.orig_exc_type == "TimeLimitExceeded"  # Dramatiq's own error
    assert time.monotonic() - started < 20  # the 60 s sleep did not run out
    assert result(app, app.pid.send()) != before  # replaced, and it serves on


def test_a_blocking_call_past_its_time_limit_is_killed_as_timelimitexceeded(app,
                                                                           command) -> None:
    assert_killed_at_its_time_limit(app, command("--processes", "1", "--threads", "1"))


def test_workers_are_recycled_after_max_tasks_per_child(app, command) -> None:
    """The worker at its limit serves on until its replacement booted (no capacity
    gap), so the second pid shows after a few more messages."""
    running = command("--processes", "1", "--threads", "1", PPRUNNER_MAX_TASKS_PER_CHILD="2")
    pids: list[int] = []
    for _ in range(100):
        pids.append(result(app, app.pid.send(0.05)))
        if len(set(pids)) == 2:
            break
    assert len(set(pids)) == 2, "never recycled"
    assert running.process.poll() is None


def test_an_actor_blocking_on_another_messages_result_lends_its_slot(app, command) -> None:
    """One worker of one thread: the message it waits for runs only in the worker
    started while its slot is lent (with ``dramatiq`` the wait fails). The waiting
    worker must not have prefetched that message: ``dramatiq_queue_prefetch`` at
    ``--threads``, as the docs say."""
    command("--processes", "1", "--threads", "1", dramatiq_queue_prefetch="1")
    assert result(app, app.add_and_wait.send(2, 3)) == 5


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_lets_the_running_message_finish(app, command, signum,
                                                       tmp_path: Path) -> None:
    running = command("--processes", "1", "--threads", "1")
    message = app.pid.send(1.5, str(tmp_path / "started"))
    wait_until((tmp_path / "started").exists, what="the message to start")

    running.process.send_signal(signum)

    assert running.process.wait(timeout=30) == 0
    assert result(app, message, timeout=1) > 0  # it finished before the worker stopped


def test_sighup_replaces_every_worker_and_keeps_consuming(app, command) -> None:
    running = command("--processes", "2", "--threads", "1")
    before = running.workers()

    running.process.send_signal(signal.SIGHUP)

    wait_until(lambda: len(running.workers() - before) == 2, timeout=60,
               what="two new workers")
    assert result(app, app.add.send(2, 3)) == 5
    assert running.process.poll() is None


@pytest.mark.parametrize("on", ["app", "rabbit"])
def test_past_the_shutdown_timeout_the_message_is_requeued_without_an_attempt(
        on, request, command, tmp_path: Path) -> None:
    """On Redis the supervisor requeues it; on RabbitMQ the broker does, and the
    supervisor neither charges an attempt nor dead-letters it."""
    app = request.getfixturevalue(on)
    running = command("--processes", "1", "--threads", "1", "--worker-shutdown-timeout", "500",
                      app=app)
    message = app.crash_once.send(str(tmp_path))
    first = first_attempts_pid(tmp_path)

    running.process.send_signal(signal.SIGTERM)
    running.process.wait(timeout=30)

    command("--processes", "1", "--threads", "1", app=app)
    pid, retries = result(app, message)
    assert pid != first and retries == 0  # handed back, not charged


AMQP = os.environ.get("PPRUNNER_DRAMATIQ_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")


@pytest.fixture
def rabbit(redis_url: str) -> Iterator[ModuleType]:
    """The example on RabbitMQ (results still in Redis), on a queue of its own, which is
    deleted afterwards with its delay and dead-letter queues."""
    require_server(AMQP, 5672, "PPRUNNER_REQUIRE_DRAMATIQ")
    with example(redis_url, DRAMATIQ_APP_RABBITMQ=AMQP) as module:
        try:
            yield module
        finally:
            for name in (module.QUEUE, dq_name(module.QUEUE), xq_name(module.QUEUE)):
                module.broker.channel.queue_delete(name)


def queued(rabbit: ModuleType, queue: str) -> int:
    """Messages waiting in ``queue`` (those of a closed connection included)."""
    return rabbit.broker.channel.queue_declare(queue, passive=True).method.message_count


def runs(marker_dir: Path, count: int) -> list[tuple[int, int]]:
    """``hangs``' first ``count`` attempts (pid, retries), once they started."""
    path = marker_dir / "runs"
    lines = wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= count
                       and path.read_text().splitlines(), what=f"{count} attempts")
    return [tuple(map(int, line.split())) for line in lines]  # type: ignore[misc]


def stop_gracefully(running: Command) -> None:
    """SIGTERM: the workers' consumers close after sending their acks (a drop's ack is
    sent by the consumer's connection later than it is logged)."""
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=30) == 0


def test_on_rabbitmq_each_killed_attempt_counts_and_the_last_is_dead_lettered(
        rabbit, command, tmp_path: Path) -> None:
    """``max_retries=1``: the first death is retried once, the second dead-letters the
    message; RabbitMQ's own redeliveries of the killed attempts never run, and the
    other worker went on."""
    running = command("--processes", "2", "--threads", "1", "--worker-shutdown-timeout",
                      "5000", app=rabbit)
    message = rabbit.hangs.send(str(tmp_path))
    ((victim, retries),) = runs(tmp_path, 1)
    survivor = (running.workers() - {victim}).pop()
    os.kill(victim, signal.SIGKILL)
    second, again = runs(tmp_path, 2)[1]
    os.kill(second, signal.SIGKILL)

    with pytest.raises(ResultFailure) as failure:
        result(rabbit, message)
    assert failure.value.orig_exc_type == "WorkerDied"
    assert (retries, again) == (0, 1)  # the second attempt was Retries' count of one
    assert survivor in running.workers() or survivor == second
    wait_until(lambda: running.log().count(f"dropped message {message.message_id}") == 2,
               what="both redeliveries dropped")
    stop_gracefully(running)  # what a worker still held would go back to the queue
    assert [line for line in (tmp_path / "runs").read_text().splitlines()] == [
        f"{victim} 0", f"{second} 1"]  # no third run: the redeliveries were dropped
    assert queued(rabbit, rabbit.QUEUE) == 0  # nothing left behind...
    assert queued(rabbit, xq_name(rabbit.QUEUE)) == 1  # ...but the dead-lettered message


def test_on_rabbitmq_a_blocking_call_past_its_time_limit_fails_as_timelimitexceeded(
        rabbit, command) -> None:
    running = command("--processes", "1", "--threads", "1", app=rabbit)
    assert_killed_at_its_time_limit(rabbit, running)
    wait_until(lambda: "dropped message" in running.log(), what="the redelivery dropped")
    stop_gracefully(running)
    assert queued(rabbit, rabbit.QUEUE) == 0  # the killed delivery was not run again
    assert queued(rabbit, xq_name(rabbit.QUEUE)) == 1


def test_workers_do_not_outlive_a_sigkilled_command(app, command) -> None:
    running = command("--processes", "2", "--threads", "1")
    workers = [psutil.Process(pid) for pid in running.workers()]

    running.process.kill()
    running.process.wait(timeout=10)

    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == [] and len(gone) == 2


def test_without_dramatiq_the_command_says_how_to_install_it(monkeypatch, capsys) -> None:
    import pprunner_plugins.dramatiq as plugin
    from pprunner import cli
    from pprunner_plugins._optional import OptionalLibrary

    monkeypatch.setattr(plugin, "DRAMATIQ", OptionalLibrary("no_such_dramatiq", "dramatiq"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["dramatiq", "tasks", "--processes", "2"])
    assert exited.value.code == 2
    assert "[dramatiq]'" in capsys.readouterr().err


def test_with_prefetch_at_threads_a_killed_worker_holds_nothing_more(app, command,
                                                                    tmp_path: Path) -> None:
    """Dramatiq's ``dramatiq_queue_prefetch`` set to ``--threads``: the messages queued
    behind the one a worker was killed under wait for no broker heartbeat timeout."""
    command("--processes", "1", "--threads", "1", dramatiq_queue_prefetch="1")
    first = app.crash_once.send(str(tmp_path))
    behind = app.add.send(20, 22)
    victim = first_attempts_pid(tmp_path)

    os.kill(victim, signal.SIGKILL)

    assert result(app, behind, timeout=10) == 42
    assert result(app, first)[0] != victim
