"""Where RQ 2.x and 3.x differ, in one place.

RQ 3.0 passes the job's ``Execution`` to ``perform_job``,
``monitor_work_horse``, ``maintain_heartbeats`` and ``handle_job_failure``
and keeps a worker's executions in a dict; 2.x keeps one in
``worker.execution``. RQ 3.0 also split the end of ``perform_job`` into
``_finalize_success``/``_finalize_failure``; 2.x inlines it.

redis-py 8.2's ``PubSubWorkerThread.stop`` joins the thread (``timeout`` bounds
it); earlier ones only clear its flag.
"""

from __future__ import annotations

import inspect
import sys
import traceback
from typing import Any

from redis.client import PubSubWorkerThread
from rq.job import JobStatus
from rq.worker import BaseWorker

#: redis-py 8.2 and later: PubSubWorkerThread.stop(timeout) joins the thread
_STOP_JOINS = "timeout" in inspect.signature(PubSubWorkerThread.stop).parameters
#: RQ 3.0 and later: perform_job(job, queue, execution)
PASSES_EXECUTION = "execution" in inspect.signature(BaseWorker.perform_job).parameters


def perform_job(worker: Any, job: Any, queue: Any, execution: Any) -> bool:
    """``worker.perform_job`` for this job's execution, whichever RQ this is."""
    if PASSES_EXECUTION:
        worker.executions.clear()  # one job at a time: a leftover would be reported as running
        worker.execution = execution
        return bool(worker.perform_job(job, queue, execution))
    worker.execution = execution
    return bool(worker.perform_job(job, queue))


def finalize_failure(worker: Any, job: Any, queue: Any, execution: Any,
                     exc_info: tuple[Any, BaseException, Any]) -> None:
    """What ``perform_job`` does with a job that raised ``exc_info``: the failure
    callback, the exception handlers, then ``handle_job_failure`` (so ``Retry``)."""
    if PASSES_EXECUTION:
        worker._finalize_failure(job, queue, execution, exc_info)
        return
    job._status = JobStatus.FAILED
    worker.handle_execution_ended(job, queue, job.failure_callback_timeout)
    try:
        job.execute_failure_callback(worker.death_penalty_class, *exc_info)
    except BaseException:  # as RQ: a failing callback becomes the recorded failure
        exc_info = sys.exc_info()  # type: ignore[assignment]
    worker.handle_exception(job, *exc_info)
    worker.handle_job_failure(job=job, queue=queue, started_job_registry=queue.started_job_registry,
                              exc_string="".join(traceback.format_exception(*exc_info)))


def stop_without_join(thread: PubSubWorkerThread) -> None:
    """Tell redis-py's pubsub thread to end after its current wait, without waiting."""
    if _STOP_JOINS:
        thread.stop(timeout=0)
    else:
        thread.stop()
