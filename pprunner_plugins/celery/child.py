"""The Celery pool's side in each child: Celery's own bootstrap, then Celery's
own trace function for every task.

This module is passed to the supervisor as a plugin, so it is registered in
every child too (its ``pprunner_worker_exit`` hook fires Celery's
``worker_process_shutdown`` there). A child gets the worker's app by import
path (:class:`AppRef`) when the app has one, and inherits it when the pool
fell back to ``fork`` for an app built at run time.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import attrs

import pprunner

logger = logging.getLogger("pprunner.celery")

#: the worker's app in this child, set by :func:`boot`
_app: Any = None
_hostname: str | None = None


@attrs.frozen
class AppRef:
    """Where a child finds the worker's Celery app: ``module.attribute``."""

    module: str
    attribute: str

    def load(self) -> Any:
        return getattr(importlib.import_module(self.module), self.attribute)

    def __str__(self) -> str:
        return f"{self.module}:{self.attribute}"

    @classmethod
    def find(cls, app: Any) -> AppRef | None:
        """The import path of ``app``: a module-level name bound to this very app
        object (the ``-A`` module, or the one named by ``app.main``), so a spawned
        child that imports it gets the same app, tasks and config. None for an app
        that no importable module holds (built at run time, or in ``__main__``)."""
        candidates = sorted(
            (name for name, module in list(sys.modules.items())
             if module is not None and name != "__main__"
             and not name.startswith(("celery.", "kombu.", "pprunner"))),
            key=lambda name: (name != app.main, name.count("."), name))
        for name in candidates:
            for attribute, value in list(vars(sys.modules[name]).items()):
                if value is app:
                    return cls(name, attribute)
        return None


def boot(app: Any, hostname: str, spawned: bool) -> None:
    """The child's initializer: Celery's own ``process_initializer`` with the app.

    ``app`` is an :class:`AppRef` (imported here) or, for a forked child, the
    app itself. A spawned child is a fresh interpreter, and Celery sets itself
    up for one when ``FORKED_BY_MULTIPROCESSING`` is set (as billiard's spawn
    does); it has to be set before the initializer runs.
    """
    global _app, _hostname
    from celery.concurrency.prefork import process_initializer

    if spawned:
        os.environ["FORKED_BY_MULTIPROCESSING"] = "1"
    _app = app.load() if isinstance(app, AppRef) else app
    _hostname = hostname
    process_initializer(_app, hostname)


def run_traced(target: Callable[..., Any], task_module: str | None,
               args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """Run Celery's trace function (``target``) for one task message.

    A task the child does not know yet (registered in the worker after this
    child booted) is imported from its module first, and gets its tracer as
    Celery's initializer gives every task.
    """
    name = args[0] if args else None
    if _app is not None and isinstance(name, str) and name not in _app.tasks and task_module:
        _learn_tasks(task_module)
    return target(*args, **kwargs)


def _learn_tasks(module: str) -> None:
    from celery.app.trace import build_tracer

    importlib.import_module(module)
    for name, task in _app.tasks.items():
        if getattr(task, "__trace__", None) is None:
            task.__trace__ = build_tracer(name, task, _app.loader, _hostname, app=_app)
    logger.info("imported %s for a task registered after this child started", module)


@pprunner.hookimpl
def pprunner_worker_exit(context: Any) -> None:
    """Celery's ``worker_process_shutdown``, as prefork's children send it."""
    if _app is not None:
        from celery.concurrency.prefork import process_destructor

        process_destructor(os.getpid(), 0)
