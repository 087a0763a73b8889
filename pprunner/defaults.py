"""The core's own implementations of its hooks.

Registered before any plugin and marked ``trylast``, so a plugin's
implementation of a firstresult hook always takes precedence.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .backend import Backend
from .hookspecs import hookimpl
from .invocation import Invocation, Returned, RunnerInfo
from .spawn import WorkerProcess, WorkerSpec, main_module_hidden, signals_blocked
from .waiting import strategy_named

if TYPE_CHECKING:
    from .task import Task


@hookimpl(trylast=True)
def pprunner_spawn_worker(spec: WorkerSpec, start_method: str) -> WorkerProcess:
    from . import worker  # the child's entry point; importing it here keeps the core light

    context: Any = multiprocessing.get_context(start_method)
    process = context.Process(target=worker.main, args=(spec,),
                              name=f"pprunner-worker-{spec.slot}")
    with signals_blocked(), main_module_hidden():
        process.start()
    return process


@hookimpl(trylast=True)
def pprunner_heartbeat(backend: Backend, runners: Sequence[RunnerInfo], at: float) -> None:
    backend.record_heartbeats(runners, at)


@hookimpl(trylast=True)
def pprunner_execute(task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> Returned:
    return Returned(task.function(*args, **kwargs))


@hookimpl(trylast=True)
def pprunner_pause_on_wait(context: Any, waiter: Invocation, invocation_ids: Sequence[str],
                           timeout: float | None, strategy: str) -> list[Invocation]:
    """The built-in strategies (:mod:`pprunner.waiting`), chosen by name."""
    return strategy_named(strategy)(context, waiter, invocation_ids, timeout)
