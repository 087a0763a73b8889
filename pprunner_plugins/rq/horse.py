"""The work horse's side: a persistent process that runs RQ jobs with RQ's own code.

RQ's ``SpawnWorker`` shows how a horse re-enters RQ in a fresh interpreter: it
rebuilds the worker (class and settings), the job, the queue and the
execution, then calls ``perform_job``. A pprunner horse does the same, except
that :func:`boot` (the supervisor's initializer) builds the worker once and
:func:`run_job` is then called for job after job. Everything a job records —
its result, ``Retry``, callbacks, dependents, ``job.meta``, result TTLs — is
RQ's ``perform_job`` doing it, in the horse, as with RQ's forked horses.
"""

from __future__ import annotations

import logging
import os
import random
from datetime import datetime, timezone
from typing import Any, ClassVar

import attrs
from redis import ConnectionPool
from rq.executions import Execution
from rq.logutils import setup_loghandlers
from rq.timeouts import BaseTimeoutException

import pprunner
from pprunner.worker import finish_jobs_when_orphaned

from . import compat
from .peers import Peers

logger = logging.getLogger("pprunner.rq")


@attrs.frozen
class HorseSettings:
    """What a horse needs to rebuild its worker (pickled onto the horse's pipe).

    The attributes are those ``SpawnWorker`` hands its horses, so a worker
    subclass or a custom job/queue/death-penalty class behaves in the horse as
    in the worker.
    """

    worker_class: type[Any]
    name: str
    queues: tuple[str, ...]
    connection: tuple[type[Any], type[Any], dict[str, Any]]
    serializer: Any
    attributes: dict[str, Any]
    logging: tuple[str | None, str, str]


class _Horse:
    """The horse's worker (built by :func:`boot`) and its queues by name."""

    worker: ClassVar[Any] = None
    queues: ClassVar[dict[str, Any]] = {}
    #: set by the tracked death penalty when a timeout was raised in the job
    timed_out: ClassVar[str | None] = None


def boot(settings: HorseSettings) -> None:
    """The supervisor's initializer: rebuild the RQ worker in this process.

    Like RQ's horses, it leaves the worker's process group, so a signal sent
    to the whole group (Ctrl-C, ``kill -TERM -PGID``) reaches the worker, which
    shuts down warm, and not the job it waits for.
    """
    os.setpgrp()
    random.seed()
    _log_as_the_worker(*settings.logging)
    connection_class, pool_class, pool_kwargs = settings.connection
    connection = connection_class(connection_pool=ConnectionPool(connection_class=pool_class,
                                                                 **pool_kwargs))
    attributes = settings.attributes
    worker = settings.worker_class(
        list(settings.queues), name=settings.name, connection=connection,
        job_class=attributes["job_class"], queue_class=attributes["queue_class"],
        serializer=settings.serializer, prepare_for_work=False)
    for name, value in attributes.items():
        setattr(worker, name, value)
    worker.death_penalty_class = _tracked(worker.death_penalty_class)
    worker._is_horse = True
    worker.log = logging.getLogger("rq.worker")
    # as a forked horse whose worker is SIGKILLed: the job ends and is recorded as RQ does
    finish_jobs_when_orphaned(on_orphaned=Peers(worker, worker.dead_after).stand_in)
    _Horse.worker = worker
    _Horse.queues = {}


def use_rq_logging(level: str | None, date_format: str, log_format: str) -> None:
    """RQ's log handlers, with the worker's ``--log-format`` and ``--date-format``,
    for RQ's loggers and pprunner's (a line of pprunner's reads as one of RQ's)."""
    for name in ("rq.worker", "rq.job", "pprunner"):
        setup_loghandlers(level, date_format, log_format, name=name)


def _log_as_the_worker(level: str | None, date_format: str, log_format: str) -> None:
    """Every line the horse logs is formatted as its worker's, as a forked horse's
    is: pprunner's handler on the root logger (set up before the initializer runs)
    gives way to the worker's setup, where a job's own loggers have none either."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    use_rq_logging(level, date_format, log_format)


def run_job(job_id: str, queue_name: str, execution_id: str, execution_started: float) -> bool:
    """Run one job with RQ's ``perform_job``; returns what it returns.

    The execution is the one the worker created (``prepare_execution``); it is
    rebuilt from what the worker sent rather than fetched, which saves the
    round trip ``SpawnWorker`` makes. A job that raised one of RQ's timeouts
    (the job's own, or a callback's) may have been interrupted anywhere: the
    horse asks to be replaced before it takes another job.
    """
    worker = _Horse.worker
    worker.setup_work_horse_signals()
    os.environ["RQ_WORKER_ID"], os.environ["RQ_JOB_ID"] = worker.name, job_id  # as RQ's horses
    job = worker.job_class.fetch(job_id, connection=worker.connection,
                                 serializer=worker.serializer)
    queue = _Horse.queues.get(queue_name)
    if queue is None:
        queue = _Horse.queues[queue_name] = worker.queue_class(
            queue_name, connection=worker.connection, job_class=worker.job_class,
            serializer=worker.serializer, death_penalty_class=worker.death_penalty_class)
    execution = Execution(id=execution_id, job_id=job_id, connection=worker.connection,
                          worker_name=worker.name)
    execution.created_at = datetime.fromtimestamp(execution_started, tz=timezone.utc)
    execution._job = job
    _Horse.timed_out = None
    try:
        return bool(compat.perform_job(worker, job, queue, execution))
    finally:
        if _Horse.timed_out:
            context = pprunner.current_context()
            if context is not None:
                context.replace_after_job(f"job {job_id} raised {_Horse.timed_out}")


def _tracked(penalty_class: type[Any]) -> type[Any]:
    """The worker's death-penalty class, noting in the horse when it fired."""

    class Tracked(penalty_class):
        def __exit__(self, kind: Any, value: Any, traceback: Any) -> Any:
            if kind is not None and issubclass(kind, BaseTimeoutException):
                _Horse.timed_out = kind.__name__
            return super().__exit__(kind, value, traceback)

    Tracked.__name__ = Tracked.__qualname__ = penalty_class.__name__
    return Tracked
