"""pprunner: a persistent-process supervisor for Python task queues.

>>> from pprunner import App
>>> app = App(backend="sqlite:///jobs.db")
>>> @app.task
... def add(x, y):
...     return x + y
>>> add.enqueue(1, 2).result(timeout=10)  # with `pprunner run --app module:app` running
3
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        AppLoadError,
        BackendError,
        ConfigError,
        IllegalTransition,
        MissingCapability,
        NotOwner,
        PluginError,
        PprunnerError,
        ResultTimeout,
        Retry,
        SerializationError,
        SoftTimeLimitExceeded,
        TaskFailed,
        TimeLimitExceeded,
        UnknownInvocation,
        WaitCycle,
        WorkerLost,
    )
    from .executor import Executor
    from .exitcodes import ExitCode
    from .hookspecs import hookimpl
    from .inline import InlineSupervisor
    from .invocation import ErrorInfo, Invocation, Returned, RunnerInfo, Status
    from .retries import Backoff
    from .supervisor import Supervisor
    from .task import App, Handle, Task, gather, load_app, wait
    from .worker import WorkerContext, current_context

#: where each public name is defined. Imported on first use (PEP 562): a worker process
#: imports this package on its way to ``pprunner.worker`` and needs neither the
#: supervisor nor the executor, whose imports would be most of its start-up time.
_HOMES = {
    "errors": ("AppLoadError", "BackendError", "ConfigError", "IllegalTransition",
               "MissingCapability", "NotOwner", "PluginError", "PprunnerError",
               "ResultTimeout", "Retry", "SerializationError", "SoftTimeLimitExceeded",
               "TaskFailed", "TimeLimitExceeded", "UnknownInvocation", "WaitCycle",
               "WorkerLost"),
    "executor": ("Executor",),
    "exitcodes": ("ExitCode",),
    "hookspecs": ("hookimpl",),
    "inline": ("InlineSupervisor",),
    "invocation": ("ErrorInfo", "Invocation", "Returned", "RunnerInfo", "Status"),
    "retries": ("Backoff",),
    "supervisor": ("Supervisor",),
    "task": ("App", "Handle", "Task", "gather", "load_app", "wait"),
    "worker": ("WorkerContext", "current_context"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _HOME_OF:
        value = getattr(importlib.import_module(f".{_HOME_OF[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # asked once
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pprunner")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "App",
    "AppLoadError",
    "BackendError",
    "Backoff",
    "ConfigError",
    "ErrorInfo",
    "Executor",
    "ExitCode",
    "Handle",
    "IllegalTransition",
    "InlineSupervisor",
    "Invocation",
    "MissingCapability",
    "NotOwner",
    "PluginError",
    "PprunnerError",
    "ResultTimeout",
    "Retry",
    "Returned",
    "RunnerInfo",
    "SerializationError",
    "SoftTimeLimitExceeded",
    "Status",
    "Supervisor",
    "Task",
    "TaskFailed",
    "TimeLimitExceeded",
    "UnknownInvocation",
    "WaitCycle",
    "WorkerContext",
    "WorkerLost",
    "__version__",
    "current_context",
    "gather",
    "hookimpl",
    "load_app",
    "wait",
]
