"""A host-framework adapter in miniature, built on pprunner's public push-mode seams only.

It has what a real host plugin has: the host's own task registry (an
allow-list) and message format, a pool object the host's consumer feeds
(``apply_async`` with callbacks, ``terminate_job``, ``grow``), events
delivered on the host's event loop through :meth:`Dispatcher.fileno`, the
host's bootstrap in every worker (an initializer), and worker-side hooks
(registered in each worker because this module is passed as a plugin):
resolving the host's messages, and putting the host's context around each
job. ``tests/test_push_mode.py`` drives it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

import pprunner
from pprunner import config as config_module
from pprunner.dispatch import Dispatcher
from pprunner.errors import UnknownTask
from pprunner.jobs import Call, Event, Runnable
from pprunner.supervisor import Supervisor, SupervisorView

# -- the host's side of the world: its tasks and its messages --------------------------

TASKS: dict[str, Callable[..., Any]] = {}
#: set in each worker by the host's bootstrap (the initializer)
BOOTED: dict[str, Any] = {}
#: the message the job runs now, as the host's own "current task" (set by the wrapper)
CURRENT: list[HostMessage] = []


def host_task(function: Callable[..., Any]) -> Callable[..., Any]:
    TASKS[function.__name__] = function
    return function


@attrs.frozen
class HostMessage:
    """The host's own message: a task name and JSON arguments, as its broker carries them."""

    task: str
    body: str
    id: str = attrs.Factory(lambda: os.urandom(4).hex())


def run_message(message: HostMessage) -> Any:
    """Never called: :func:`pprunner_resolve_job` resolves calls to it (by the registry)."""
    raise AssertionError("resolved by the adapter's pprunner_resolve_job")


@host_task
def add(x: int, y: int) -> int:
    return x + y


@host_task
def whoami() -> dict[str, Any]:
    return {"pid": os.getpid(), "booted": BOOTED.get("by"), "current": CURRENT[-1].id,
            "init_hook": BOOTED.get("init_hook")}


@host_task
def fail(message: str) -> None:
    raise ValueError(message)


@host_task
def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@host_task
def replace_me() -> int:
    """A job after which its worker must not run another (a host's own timeout fired)."""
    context = pprunner.current_context()
    assert context is not None
    context.replace_after_job("the host's job asked for it")
    return os.getpid()


@host_task
def note_then_die(*notes: str) -> None:
    """Tells the host what it took on, then dies: the notes must still arrive first."""
    context = pprunner.current_context()
    assert context is not None
    for note in notes:
        context.note(note)
    os.kill(os.getpid(), signal.SIGKILL)


@host_task
def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def bootstrap(marker_dir: str) -> None:
    """The host's own worker bootstrap (what Celery's process_initializer is to it)."""
    BOOTED["by"] = "bootstrap"
    Path(marker_dir, f"booted-{os.getpid()}").touch()


# -- worker-side hooks (this module is registered in every worker) ---------------------


@pprunner.hookimpl
def pprunner_worker_init(context: Any) -> None:
    BOOTED["init_hook"] = context.runner_id


@pprunner.hookimpl
def pprunner_resolve_job(job: Any, context: Any) -> Runnable | None:
    """The host's messages run only tasks in the host's registry."""
    if not (isinstance(job, Call) and job.function is run_message):
        return None
    message: HostMessage = job.args[0]
    if message.task not in TASKS:
        raise UnknownTask(f"the host has no task {message.task!r}")
    return Runnable(TASKS[message.task], json.loads(message.body), {})


@pprunner.hookimpl(wrapper=True)
def pprunner_execute(job: Any) -> Any:
    """Puts the host's "current task" around every job, as a host's tracer would."""
    CURRENT.append(job.args[0] if job.args and isinstance(job.args[0], HostMessage) else None)
    try:
        return (yield)
    finally:
        CURRENT.pop()


@pprunner.hookimpl
def pprunner_worker_exit(context: Any) -> None:
    marker_dir = os.environ.get("HOST_ADAPTER_MARKERS")
    if marker_dir:
        Path(marker_dir, f"exited-{os.getpid()}").touch()


# -- the parent's side: the pool a host's consumer feeds ----------------------------------


@attrs.define
class Observed:
    """What the supervisor-side hooks saw (registered in the parent only)."""

    started: list[tuple[str, int | None]] = attrs.Factory(list)
    finished: list[tuple[str, str]] = attrs.Factory(list)
    supervisors: list[SupervisorView] = attrs.Factory(list)
    #: runner ids of workers that reported ready
    ready: list[str] = attrs.Factory(list)
    stopping: list[str] = attrs.Factory(list)

    @pprunner.hookimpl
    def pprunner_job_started(self, call: Call, runner: Any) -> None:
        self.started.append((call.id, runner.pid))

    @pprunner.hookimpl
    def pprunner_job_finished(self, call: Call, ending: Any) -> None:
        self.finished.append((call.id, type(ending).__name__))

    @pprunner.hookimpl
    def pprunner_worker_ready(self, runner: Any) -> None:
        self.ready.append(runner.id)

    @pprunner.hookimpl
    def pprunner_supervisor_started(self, supervisor: SupervisorView) -> None:
        self.supervisors.append(supervisor)

    @pprunner.hookimpl
    def pprunner_supervisor_stopping(self, supervisor: SupervisorView) -> None:
        self.stopping.append(supervisor.id)


class HostPool:
    """The shape of a host's pool: start, ``apply_async`` with callbacks, stop."""

    def __init__(self, processes: int, marker_dir: str, **settings: Any) -> None:
        self.observed = Observed()
        self.dispatcher = Dispatcher(deliver="loop")  # events come on the host's loop
        config = config_module.resolve([("the host", {
            "processes": processes, "log_level": "WARNING", **settings})])
        os.environ["HOST_ADAPTER_MARKERS"] = marker_dir  # the workers inherit it
        self.supervisor = Supervisor(
            dispatcher=self.dispatcher, config=config,
            initializer=Call(bootstrap, (marker_dir,)),
            plugins=[sys.modules[__name__], self.observed])

    def start(self) -> HostPool:
        self.supervisor.start()
        return self

    def apply_async(self, message: HostMessage, callback: Callable[[Event], None],
                    time_limit: float | None = None, max_attempts: int = 1,
                    runner_id: str | None = None) -> Call:
        call = Call(run_message, (message,), time_limit=time_limit, name=message.task,
                    max_attempts=max_attempts, runner_id=runner_id)
        self.dispatcher.submit(call, callback)
        return call

    def stop(self) -> None:
        self.supervisor.stop(timeout=60)
        self.dispatcher.shutdown()
