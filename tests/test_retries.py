"""Retry policy: retry_on, Retry, back-off, history, and the dead-letter commands."""

from __future__ import annotations

import time

import pytest

import pprunner
from pprunner import App, Backoff, ExitCode, InlineSupervisor, Retry, Status, TaskFailed
from tests import apps
from tests.conftest import cli_env, run_cli

NO_PAUSE = Backoff(base=0, jitter=False)


@pytest.fixture
def inline_app() -> App:
    return App(backend="memory://", max_attempts=3)


def drain(app: App) -> None:
    assert InlineSupervisor(app, burst=True).run() == ExitCode.OK


def test_an_exception_in_retry_on_earns_another_attempt(inline_app: App) -> None:
    @inline_app.task(name="flaky", retry_on=(ConnectionError,), retry_backoff=NO_PAUSE)
    def flaky() -> int:
        attempt = pprunner.current_context().invocation.attempts  # type: ignore[union-attr]
        if attempt < 3:
            raise ConnectionError(f"attempt {attempt}")
        return attempt

    handle = flaky.enqueue()
    drain(inline_app)
    assert handle.result(timeout=1) == 3
    assert [e.message for e in handle.invocation().history] == ["attempt 1", "attempt 2"]


def test_other_exceptions_fail_at_once(inline_app: App) -> None:
    @inline_app.task(name="wrong", retry_on=(ConnectionError,), retry_backoff=NO_PAUSE)
    def wrong() -> None:
        raise KeyError("nope")

    handle = wrong.enqueue()
    drain(inline_app)
    with pytest.raises(TaskFailed, match="KeyError"):
        handle.result(timeout=1)
    assert handle.invocation().attempts == 1


def test_a_task_can_ask_for_a_retry_until_attempts_run_out(inline_app: App) -> None:
    @inline_app.task(name="again", max_attempts=2)
    def again() -> None:
        raise Retry("not yet", delay=0)

    handle = again.enqueue()
    drain(inline_app)
    with pytest.raises(TaskFailed) as failure:
        handle.result(timeout=1)
    assert failure.value.remote_type == "pprunner.errors.Retry"
    invocation = handle.invocation()
    assert invocation.attempts == 2 and len(invocation.history) == 2


def test_a_retry_waits_for_its_back_off(inline_app: App) -> None:
    @inline_app.task(name="later", retry_on=(ValueError,),
                     retry_backoff=Backoff(base=0.3, jitter=False))
    def later() -> float:
        if pprunner.current_context().invocation.attempts == 1:  # type: ignore[union-attr]
            raise ValueError("first")
        return time.time()

    enqueued = time.time()
    handle = later.enqueue()
    drain(inline_app)
    assert handle.result(timeout=1) - enqueued >= 0.3


def test_backoff_grows_caps_and_jitters() -> None:
    fixed = Backoff(base=2, factor=1, jitter=False)
    assert [fixed.delay(n) for n in (1, 2, 5)] == [2, 2, 2]
    growing = Backoff(base=1, factor=2, max=5, jitter=False)
    assert [growing.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    jittered = [Backoff(base=4, factor=1).delay(1) for _ in range(50)]
    assert all(2 <= d <= 4 for d in jittered) and len(set(jittered)) > 1
    with pytest.raises(ValueError, match="bad back-off"):
        Backoff(factor=0.5)


@pytest.mark.slow
def test_failed_lists_the_dead_letters_and_retry_requeues_them(app: App, db_url: str) -> None:
    handles = [apps.fail.enqueue(f"broken {n}") for n in range(3)]
    assert run_cli("run", "--app", "tests.apps:app", "--inline", "--burst",
                   env=cli_env(db_url)).returncode == ExitCode.OK
    listing = run_cli("failed", "--app", "tests.apps:app", "--history", env=cli_env(db_url))
    assert listing.returncode == ExitCode.OK, listing.stderr
    assert "failed: 3" in listing.stdout
    assert all(h.id in listing.stdout for h in handles)
    assert "attempt 1: ValueError: broken 0" in listing.stdout

    one = run_cli("retry", "--app", "tests.apps:app", handles[0].id, env=cli_env(db_url))
    assert "requeued 1" in one.stdout and handles[0].status() == Status.PENDING
    rest = run_cli("retry", "--app", "tests.apps:app", "--all", env=cli_env(db_url))
    assert "requeued 2" in rest.stdout
    assert app.backend.counts()[Status.FAILED] == 0
    unknown = run_cli("retry", "--app", "tests.apps:app", "nope", env=cli_env(db_url))
    assert unknown.returncode == ExitCode.USAGE_ERROR and "left alone: nope" in unknown.stderr


@pytest.mark.slow
def test_show_prints_an_invocation_with_every_attempt(app: App, db_url: str) -> None:
    ok, broken = apps.add.enqueue(2, 3), apps.fail.enqueue("kaput")
    assert run_cli("run", "--app", "tests.apps:app", "--inline", "--burst",
                   env=cli_env(db_url)).returncode == ExitCode.OK
    shown = run_cli("show", "--app", "tests.apps:app", ok.id, env=cli_env(db_url)).stdout
    assert f"{ok.id}  {apps.add.name}  SUCCESS  attempts 1/3" in shown
    assert "result: 5" in shown
    failed = run_cli("show", "--app", "tests.apps:app", broken.id, "--traceback",
                     env=cli_env(db_url)).stdout
    assert "attempt 1: ValueError: kaput" in failed
    assert "raise ValueError(message)" in failed
    missing = run_cli("show", "--app", "tests.apps:app", "nope", env=cli_env(db_url))
    assert missing.returncode == ExitCode.USAGE_ERROR
    assert "no invocation with id 'nope'" in missing.stderr
