"""The core's own implementations of its hooks.

Registered before any plugin and marked ``trylast``, so a plugin's
implementation of a firstresult hook always takes precedence.
"""

from __future__ import annotations

import contextlib
import inspect
import multiprocessing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .backend import Backend
from .errors import UnknownTask
from .hookspecs import hookimpl
from .invocation import Invocation, Returned, RunnerInfo, check_headers
from .jobs import Call, Runnable
from .spawn import WorkerProcess, WorkerSpec, main_module_hidden, signals_blocked
from .waiting import strategy_named

if TYPE_CHECKING:
    from .worker import WorkerContext


@hookimpl(trylast=True)
def pprunner_enqueue(job: Invocation | Call, headers: dict[str, str],
                     send: Callable[[Invocation | Call], None]) -> Invocation | Call:
    """Sends the job as it is when no plugin added headers: the usual case costs no copy."""
    if headers != job.headers:
        job = attrs.evolve(job, headers=check_headers(headers))
    send(job)
    return job


@hookimpl(trylast=True)
def pprunner_spawn_worker(spec: WorkerSpec, start_method: str) -> WorkerProcess:
    from . import launch, template, worker  # the child's side: importing it here keeps
                                            # the core light
    if start_method == "template":
        forked = template.fork_for(spec)
        if forked is not None:
            return forked
        start_method = "spawn"  # what a template cannot fork starts fresh
    if start_method == "spawn" and not spec.calls_from_main and launch.supported():
        return launch.start(spec)  # no resource tracker, no __main__ preparation
    context: Any = multiprocessing.get_context(start_method)
    process = context.Process(target=worker.main, args=(spec,),
                              name=f"pprunner-worker-{spec.slot}")
    # Pull mode (and hosts whose calls are importable): the worker never needs the main
    # script. Otherwise calls may name functions of the main script (its __main__ guard
    # keeps its top level from running again), as with the standard library's pools.
    hide_main = contextlib.nullcontext() if spec.calls_from_main else main_module_hidden()
    with signals_blocked(), hide_main:
        process.start()
    return process


@hookimpl(trylast=True)
def pprunner_heartbeat(backend: Backend | None, runners: Sequence[RunnerInfo],
                       at: float) -> None:
    if backend is not None:  # push mode has no backend to record them in
        backend.record_heartbeats(runners, at)


@hookimpl(trylast=True)
def pprunner_resolve_job(job: Invocation | Call, context: WorkerContext) -> Runnable:
    """Registered tasks only: a name from a shared queue never imports anything."""
    if isinstance(job, Call):
        return Runnable(job.function, job.args, dict(job.kwargs))
    app = context.app
    assert app is not None, "a pulled invocation comes with its app"
    task = app.tasks.get(job.task)
    if task is None:
        raise UnknownTask(f"task {job.task!r} is not registered in app {app.name!r}; "
                          f"registered: {', '.join(sorted(app.tasks))}")
    args, kwargs = app.codec.decode_call(job)
    return Runnable(task.function, args, kwargs, task)


@hookimpl(trylast=True)
def pprunner_execute(function: Callable[..., Any], args: list[Any],
                     kwargs: dict[str, Any]) -> Returned:
    """Calls the function; an ``async def`` one runs on the worker's one event loop."""
    value = function(*args, **kwargs)
    if inspect.iscoroutine(value):
        from .worker_loop import run_coroutine  # asyncio only for those who use it

        value = run_coroutine(value)
    return Returned(value)


@hookimpl(trylast=True)
def pprunner_pause_on_wait(context: Any, waiter: Any, invocation_ids: Sequence[str],
                           timeout: float | None, strategy: str,
                           pending: Callable[[], Sequence[str]] | None) -> Sequence[Any]:
    """The built-in strategies (:mod:`pprunner.waiting`), chosen by name."""
    return strategy_named(strategy)(context, waiter, invocation_ids, timeout, pending)
