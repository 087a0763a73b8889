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

from importlib.metadata import PackageNotFoundError, version

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
from .invocation import ErrorInfo, Invocation, Returned, RunnerInfo, Status
from .retries import Backoff
from .supervisor import Supervisor
from .task import App, Handle, Task, gather, load_app, wait
from .worker import WorkerContext, current_context

try:
    __version__ = version("pprunner")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

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
