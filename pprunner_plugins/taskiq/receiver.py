"""taskiq's own receiver, its sync tasks pushed to a ``pprunner.Executor``.

``taskiq worker`` builds a receiver in each of its worker processes with its
own arguments plus each ``--receiver_arg name=value``; here those are
pprunner settings (``processes``, ``max_memory_per_child``, ``time_limit``,
...), over ``[tool.pprunner]`` and ``PPRUNNER_*`` as for every pprunner
command. Everything else is taskiq's ``Receiver``: the prefetcher and the
runner, parameter parsing, dependencies, middleware, acks, results; async
tasks run on the event loop. What changes for a sync task:

- it runs on one of ``processes`` persistent, supervised worker processes
  (spawned; ``os.cpu_count()`` of them unless told) instead of a thread;
  its arguments and result are pickled, so what taskiq injects that does not
  pickle (``Context``) is for async tasks;
- past its ``timeout`` label taskiq answers ``TimeoutError`` as it does for
  an async task, and :data:`HARD_LIMIT_GRACE` later pprunner kills the worker
  if it still runs it (taskiq alone lets the thread run on); the
  ``time_limit`` setting is the hard limit of tasks without the label;
- a worker that dies under it is replaced, and the task answered, at once:
  a message acked late (``when_executed``, ``when_saved``) by a broker that
  acks is sent again, up to ``max_attempts`` runs; otherwise it ends with
  :class:`~pprunner.errors.WorkerLost` as its error, which taskiq's
  middleware (its retries) sees as any error;
- ``--max-tasks-per-child`` recycles pprunner's worker after that many
  tasks, its replacement booted first (taskiq alone ends its own worker
  process, and its slot with it); ``max_memory_per_child`` recycles by
  resident memory; the ``taskiq worker`` process itself runs on.

A sync task that waits for another task's result (``wait_result``) lends
its worker's slot meanwhile, so a pool whose every worker waits cannot
deadlock.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from taskiq import receiver
from taskiq.abc.broker import AckableMessage, AsyncBroker
from taskiq.acks import AcknowledgeType
from taskiq.exceptions import NoResultError
from taskiq.message import TaskiqMessage

from pprunner import Executor, config
from pprunner.errors import WorkerLost

from . import waiting

logger = logging.getLogger("pprunner.taskiq")

#: seconds past a task's ``timeout`` label before pprunner kills the worker still running
#: it: taskiq has answered ``TimeoutError`` by then; the kill stops what taskiq cannot
HARD_LIMIT_GRACE = 1.0
#: the label that counts a message's runs whose worker died (sent again with the message)
DEATHS_LABEL = "pprunner_worker_deaths"
#: the acks after which a message taskiq has not acked yet can be sent again
LATE_ACKS = (AcknowledgeType.WHEN_EXECUTED, AcknowledgeType.WHEN_SAVED)
#: the Executor's arguments among pprunner's settings (the others pass as they are)
EXECUTOR_ARGUMENTS = ("processes", "max_tasks_per_child", "max_memory_per_child",
                      "time_limit", "soft_time_limit", "max_attempts", "start_method")

#: what taskiq's own receiver takes (``taskiq worker`` passes them; the rest are settings)
TASKIQ_ARGUMENTS = frozenset(inspect.signature(receiver.Receiver).parameters)
#: whether the message the current callback handles can be acked (a broker that acks)
_ackable: contextvars.ContextVar[bool] = contextvars.ContextVar("pprunner_taskiq_ackable",
                                                                 default=False)


class WorkerLostRequeued(NoResultError):
    """The task's worker died and its message was sent again: this run stores no result
    (a :class:`taskiq.exceptions.NoResultError`), the next run will."""

    __template__ = "its worker died; the message was sent again"


class Receiver(receiver.Receiver):
    """taskiq's ``Receiver``; sync tasks run on pprunner's workers (the module docstring).

    :param max_tasks_to_execute: taskiq's ``--max-tasks-per-child``: here pprunner's
        ``max_tasks_per_child``.
    :param settings: the ``--receiver_arg`` pairs: pprunner settings.
    """

    def __init__(self, broker: AsyncBroker, executor: Any = None, *,
                 max_tasks_to_execute: int | None = None, **settings: Any) -> None:
        taskiq_arguments = {name: settings.pop(name) for name in list(settings)
                            if name in TASKIQ_ARGUMENTS}
        self.settings = config.load(
            {"processes": os.cpu_count() or 1, "log_level": "WARNING"},
            {**settings, "max_tasks_per_child": max_tasks_to_execute},
            overrides_source="taskiq worker's --receiver_arg")
        super().__init__(broker, executor, **taskiq_arguments)
        self.pool = make_executor(self.settings, import_roots(
            task.original_func for task in broker.get_all_tasks().values()))

    async def callback(self, message: bytes | AckableMessage, *args: Any,
                       **kwargs: Any) -> None:
        _ackable.set(isinstance(message, AckableMessage))  # this callback's own task
        await super().callback(message, *args, **kwargs)

    async def run_task(self, target: Callable[..., Any], message: TaskiqMessage,
                       *args: Any, **kwargs: Any) -> Any:
        if not inspect.iscoroutinefunction(target):
            target = self._on_a_worker(target, message)
        return await super().run_task(target, message, *args, **kwargs)

    async def listen(self, finish_event: asyncio.Event) -> None:
        """taskiq's, once the workers have booted (a task's ``timeout`` runs from when it
        is received), and the workers stopped after it."""
        try:
            await asyncio.wrap_future(self.pool.submit(os.getpid))
            await super().listen(finish_event)
        finally:
            await asyncio.to_thread(self.pool.shutdown, wait=True, cancel_futures=True)

    def _on_a_worker(self, target: Callable[..., Any],
                     message: TaskiqMessage) -> Callable[..., Any]:
        """``target`` as a coroutine function that runs it on a pprunner worker, so
        taskiq's own code (its timeout among it) awaits it as it awaits an async task."""
        time_limit = hard_limit(message)

        @functools.wraps(target)
        async def on_a_worker(*args: Any, **kwargs: Any) -> Any:
            future = self.pool.submit_limited(target, args, kwargs, time_limit=time_limit)
            try:
                return await asyncio.wrap_future(future)
            except WorkerLost as lost:
                if not self._sends_again(message):
                    raise
                await self._send_again(message, lost)
                raise WorkerLostRequeued() from lost

        return on_a_worker

    def _sends_again(self, message: TaskiqMessage) -> bool:
        """Whether a message whose worker died is sent again: taskiq acks it late, the
        broker acks at all, and it has runs left."""
        ack_type = message.labels.get("ack_type", self.ack_time)
        runs = int(message.labels.get(DEATHS_LABEL, 0)) + 1
        return (_ackable.get() and ack_type in LATE_ACKS
                and runs < self.settings.max_attempts)

    async def _send_again(self, message: TaskiqMessage, lost: WorkerLost) -> None:
        """The message again, through the broker, before taskiq acks the original."""
        message.labels[DEATHS_LABEL] = int(message.labels.get(DEATHS_LABEL, 0)) + 1
        logger.warning("task %s (%s): %s; sent again (run %d of at most %d)",
                       message.task_id, message.task_name, lost,
                       message.labels[DEATHS_LABEL] + 1, self.settings.max_attempts)
        await self.broker.kick(self.broker.formatter.dumps(message))


def hard_limit(message: TaskiqMessage) -> float | None:
    """When pprunner kills the worker running the task: :data:`HARD_LIMIT_GRACE` after its
    ``timeout`` label; without one, the ``time_limit`` setting (the executor's)."""
    timeout = message.labels.get("timeout")
    return None if timeout is None else float(timeout) + HARD_LIMIT_GRACE


def make_executor(settings: config.Config, roots: Iterable[str]) -> Executor:
    """The pool of one ``taskiq worker`` process, from pprunner's ``settings``; its
    workers import the tasks' modules from ``roots``."""
    values = settings.to_dict()
    named = {name: values.pop(name) for name in EXECUTOR_ARGUMENTS}
    return Executor(max_workers=named["processes"],
                    max_tasks_per_child=named["max_tasks_per_child"] or None,
                    max_memory_per_child=named["max_memory_per_child"] or None,
                    time_limit=named["time_limit"], soft_time_limit=named["soft_time_limit"],
                    start_method=named["start_method"], initializer=waiting.prepare_worker,
                    initargs=(tuple(roots),), **values)


def import_roots(functions: Iterable[Callable[..., Any]]) -> list[str]:
    """The folders the tasks' modules are imported from (``taskiq worker`` takes its
    current folder off ``sys.path`` once it imported them; a worker needs it)."""
    roots = []
    for function in functions:
        module = sys.modules.get(function.__module__)
        path = getattr(module, "__file__", None)
        if path is None:
            continue
        root = os.path.dirname(os.path.abspath(path))
        for _ in range(function.__module__.count(".") + (path.endswith("__init__.py"))):
            root = os.path.dirname(root)
        if root not in roots:
            roots.append(root)
    return roots
