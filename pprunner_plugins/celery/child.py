"""The Celery pool's side in each child: Celery's own bootstrap, then Celery's
own trace function for every task.

This module is passed to the supervisor as a plugin, so it is registered in
every child too (its ``pprunner_worker_exit`` hook fires Celery's
``worker_process_shutdown`` there). A child gets the worker's app by import
path (:class:`AppRef`) when the app has one, and inherits it when the pool
fell back to ``fork`` for an app built at run time.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from setproctitle import getproctitle

import pprunner
from pprunner.channel import peak_rss
from pprunner.proctitle import keep_prefix

logger = logging.getLogger("pprunner.celery")

#: the worker's app in this child, set by :func:`boot`
_app: Any = None
_hostname: str | None = None
#: Celery's --max-memory-per-child (KiB) in this child, 0: none
_max_memory_kib = 0


@attrs.frozen
class AppRef:
    """Where a child finds the worker's Celery app: ``module.attribute``, found
    on ``path``. Celery puts the working directory (or ``--workdir``) on
    ``sys.path`` only while it imports ``-A``: a spawned child adds the folder
    the app's package was found in, as the worker had it then."""

    module: str
    attribute: str
    path: str | None = None

    def load(self) -> Any:
        if self.path is not None and self.path not in sys.path:
            sys.path.insert(0, self.path)
        return getattr(importlib.import_module(self.module), self.attribute)

    def __str__(self) -> str:
        return f"{self.module}:{self.attribute}"

    @classmethod
    def find(cls, app: Any) -> AppRef | None:
        """The import path of ``app``: a module-level name bound to this very app
        object (the ``-A`` module, or the one named by ``app.main``), so a spawned
        child that imports it gets the same app, tasks and config. None for an app
        that no importable module holds (built at run time, or in ``__main__``,
        which billiard also registers as ``__mp_main__``)."""
        candidates = sorted(
            (name for name, module in list(sys.modules.items())
             if module is not None and getattr(module, "__name__", None) == name
             and name != "__main__"
             and not name.startswith(("celery.", "kombu.", "pprunner"))),
            key=lambda name: (name != app.main, name.count("."), name))
        for name in candidates:
            for attribute, value in list(vars(sys.modules[name]).items()):
                if value is app:
                    return cls(name, attribute, _found_on(name))
        return None


def _found_on(module: str) -> str | None:
    """The ``sys.path`` folder the top package of ``module`` was imported from."""
    top = sys.modules.get(module.partition(".")[0])
    locations = list(getattr(top, "__path__", None) or [])  # a package: its folder
    location = locations[0] if locations else getattr(top, "__file__", None)
    return os.path.dirname(os.path.abspath(location)) if location else None


def prepare(app: AppRef) -> None:
    """Import the app and finalize it (its tasks bound, as prefork's main process has
    them before it forks): once, in the template the children are forked from."""
    app.load().finalize(auto=True)


def boot(app: Any, hostname: str, spawned: bool, max_memory_kib: int = 0) -> None:
    """The child's initializer: Celery's own ``process_initializer`` with the app.

    ``app`` is an :class:`AppRef` (imported here) or, for a forked child, the
    app itself. A spawned child is a fresh interpreter, and Celery sets itself
    up for one when ``FORKED_BY_MULTIPROCESSING`` is set (as billiard's spawn
    does); it has to be set before the initializer runs. ``max_memory_kib`` is
    Celery's ``--max-memory-per-child``, checked after each task (:func:`run_traced`).
    """
    global _app, _hostname, _max_memory_kib
    from celery.concurrency.prefork import process_initializer

    if spawned:
        os.environ["FORKED_BY_MULTIPROCESSING"] = "1"
    _app = app.load() if isinstance(app, AppRef) else app
    _hostname = hostname
    _max_memory_kib = max_memory_kib
    context = pprunner.current_context()
    if context is not None:
        _name_like_prefork(context.slot)
    process_initializer(_app, hostname)
    keep_prefix(f"{getproctitle()} ")  # Celery's "celeryd: <hostname>:ForkPoolWorker-N"
    allow_joins()


def _name_like_prefork(slot: int) -> None:
    """Name this child as billiard names prefork's (``ForkPoolWorker-N``, the log
    format's ``%(processName)s``) and give it prefork's process index, which
    Celery's ``%i``/``%I`` log file placeholders read; the slot's number, so a
    replacement keeps its predecessor's name and log file."""
    import multiprocessing

    from billiard import process

    name = f"ForkPoolWorker-{slot}"
    multiprocessing.current_process().name = name
    billiard_process = process.current_process()
    billiard_process.name = name
    billiard_process.index = slot - 1  # billiard's index counts from 0, %I from 1


#: the blocking waits of Celery's result classes (``GroupResult`` inherits
#: ``ResultSet``'s; ``AsyncResult.wait`` is an alias of ``get``, ``collect`` calls it)
WAITS = {"AsyncResult": ("get", "wait"), "ResultSet": ("get", "join", "join_native")}


def allow_joins() -> None:
    """Let tasks in this child wait for other tasks' results (Celery's
    ``process_initializer`` forbids it, as prefork must), and make each such
    wait lend this child's slot (:meth:`pprunner.WorkerContext.lend_slot`), so
    the pool runs another child meanwhile. Installed once per child."""
    from celery import _state, result

    _state._set_task_join_will_block(False)
    signal.signal(REFUSE_WAIT, signal.SIG_IGN)
    for class_name, methods in WAITS.items():
        cls = getattr(result, class_name)
        for name in methods:
            wait = cls.__dict__[name]
            if not getattr(wait, "lends_slot", False):
                setattr(cls, name, _lending(wait))


#: the signal the pool sends a child whose wait can never end (:func:`_refuse_wait`)
REFUSE_WAIT = signal.SIGUSR2


class LendingLimitReached(RuntimeError):
    """Raised in a task's ``result.get()`` when every child of the worker waits and
    ``pprunner_max_lent_slots`` allows no more: the wait could never end."""


def _lending(wait: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(wait)
    def lending_wait(self: Any, *args: Any, **kwargs: Any) -> Any:
        context = pprunner.current_context()
        if context is None or context.job is None:  # not inside a task of this child
            return wait(self, *args, **kwargs)
        _refuse_waiting_for_itself(self)
        signal.signal(REFUSE_WAIT, _refuse_wait)
        try:
            with context.lend_slot():
                return wait(self, *args, **kwargs)
        finally:
            signal.signal(REFUSE_WAIT, signal.SIG_IGN)  # a late one finds no wait

    lending_wait.lends_slot = True  # type: ignore[attr-defined]
    return lending_wait


def _refuse_wait(signum: int, frame: Any) -> None:
    """The pool's word that this child's wait can never end: it raises in the wait."""
    context = pprunner.current_context()
    bound = context.config.max_lent_slots if context is not None else None
    raise LendingLimitReached(
        f"every child of this worker waits in result.get() and no more slots can be lent "
        f"(pprunner_max_lent_slots = {'-c' if bound is None else bound}): this wait could "
        f"never end; raise pprunner_max_lent_slots or -c, or wait with a timeout")


def _refuse_waiting_for_itself(results: Any) -> None:
    """A task that waits for its own result would wait forever: it raises instead.
    (Longer cycles, A waiting for B waiting for A, are not detected: they end
    with the wait's timeout.)"""
    from celery import current_task

    own = getattr(getattr(current_task, "request", None), "id", None)
    ids = {r.id for r in getattr(results, "results", None) or (results,)}
    if own is not None and own in ids:
        raise RuntimeError(f"task {current_task.name}[{own}] waits for its own result, "
                           "which can never be ready")


def run_traced(target: Callable[..., Any], task_module: str | None,
               args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """Run Celery's trace function (``target``) for one task message.

    A task the child does not know yet (registered in the worker after this
    child booted) is imported from its module first, and gets its tracer as
    Celery's initializer gives every task.
    """
    _die_of_sigterm()
    name = args[0] if args else None
    if _app is not None and isinstance(name, str) and name not in _app.tasks and task_module:
        _learn_tasks(task_module)
    try:
        return target(*args, **kwargs)
    finally:
        _replace_if_over_memory()


def _replace_if_over_memory() -> None:
    """prefork's ``--max-memory-per-child``: the child's peak resident memory
    (maxrss) after a task, so a task that allocated past the limit and freed it
    again still gets its child replaced (pprunner's own setting reads the
    current memory)."""
    peak_kib = peak_rss() // 1024
    if _max_memory_kib and peak_kib > _max_memory_kib:
        context = pprunner.current_context()
        if context is not None:
            context.replace_after_job(f"peak memory {peak_kib} KiB exceeds "
                                      f"--max-memory-per-child ({_max_memory_kib} KiB)")


def _die_of_sigterm() -> None:
    """A child dies of SIGTERM, as prefork's do (the default action), instead of
    handing its task back: a SIGTERM to the whole process group (supervisord's
    and systemd's stop) or ``revoke(terminate=True)`` then ends the task as
    prefork ends it (``WorkerLostError ... signal 15``, or ``Terminated``), which
    settles an early-acked task too. Set before the first task, once pprunner's
    worker has installed its own handler; a warm shutdown still lets tasks
    finish: the pool stops children by message (by SIGTERM only past
    ``pprunner_shutdown_timeout``)."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
