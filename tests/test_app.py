"""App, tasks and handles without worker processes (memory backend, inline)."""

from __future__ import annotations

import pytest

import pprunner
from pprunner import App, ResultTimeout, SerializationError, Status, TaskFailed
from pprunner.errors import AppLoadError
from pprunner.invocation import IllegalTransition, check_transition


@pytest.fixture
def app() -> App:
    return App(backend="memory://", max_attempts=2)


def test_a_task_is_registered_by_its_module_and_name(app: App) -> None:
    @app.task
    def double(x: int) -> int:
        return 2 * x

    @app.task(name="custom", max_attempts=5)
    def other() -> None: ...

    assert double.name == f"{__name__}.test_a_task_is_registered_by_its_module_and_name." \
                          "<locals>.double"
    assert app.tasks == {double.name: double, "custom": other}
    assert double(4) == 8  # calling a task runs it here
    assert (double.max_attempts, other.max_attempts) == (2, 5)


def test_registering_a_name_twice_is_refused(app: App) -> None:
    app.task(name="x")(lambda: None)
    with pytest.raises(ValueError, match="registered twice"):
        app.task(name="x")(lambda: None)


def test_max_attempts_must_be_positive(app: App) -> None:
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        app.task(max_attempts=0)(lambda: None)


def test_enqueue_returns_a_pending_handle_at_once(app: App) -> None:
    @app.task
    def noop() -> None: ...

    handle = noop.enqueue()
    assert handle.status() == Status.PENDING
    with pytest.raises(ResultTimeout, match="still PENDING"):
        handle.result(timeout=0.01)


def test_an_argument_that_cannot_be_encoded_is_named(app: App) -> None:
    app.configure(source="the test", serializer="json")  # whatever the tox env's default
    @app.task
    def takes(a: object, b: object = None) -> None: ...

    with pytest.raises(SerializationError, match="argument 1 of type set"):
        takes.enqueue(1, {2})
    with pytest.raises(SerializationError, match="keyword argument 'b' of type bytes"):
        takes.enqueue(1, b=b"x")
    assert app.backend.counts()[Status.PENDING] == 0  # nothing half-enqueued


def test_inline_results_and_failures(app: App) -> None:
    @app.task
    def divide(x: float, y: float) -> float:
        return x / y

    ok, bad = divide.enqueue(6, 3), divide.enqueue(1, 0)
    assert pprunner.InlineSupervisor(app, burst=True).run() == pprunner.ExitCode.OK
    assert ok.result(timeout=1) == 2
    with pytest.raises(TaskFailed) as failure:
        bad.result(timeout=1)
    assert failure.value.remote_type == "ZeroDivisionError"
    assert "return x / y" in failure.value.remote_traceback
    assert bad.id in str(failure.value)


def test_current_context_is_none_outside_a_worker() -> None:
    assert pprunner.current_context() is None


def test_an_app_defined_in_a_function_cannot_be_located() -> None:
    local = App(backend="memory://")
    with pytest.raises(AppLoadError, match="cannot find this app"):
        local.locate()


def test_the_transition_table_refuses_what_it_does_not_list() -> None:
    check_transition(Status.PENDING, Status.RUNNING)
    for old, new in [(Status.SUCCESS, Status.PENDING), (Status.PENDING, Status.SUCCESS),
                     (Status.FAILED, Status.RUNNING)]:
        with pytest.raises(IllegalTransition, match=f"cannot go from {old} to {new}"):
            check_transition(old, new)
