"""Huey's own worker loop in each pprunner worker, and its tasks settled in Huey's terms.

Each worker process is forked from the process that built Huey's consumer
(``pprunner huey``'s supervisor builds it as ``huey_consumer`` does,
``huey.create_consumer(...)``), so a project's own ``create_consumer`` or
``Consumer.worker_class`` is honoured, and runs one worker from it: Huey's
own :class:`huey.consumer.Worker` dequeues, runs pre- and post-execute hooks,
signals, result storage, retries and Huey's ``timeout`` (SIGALRM, as with
``-k process``). Around each task pprunner is told which
one runs (its serialized message is what :func:`settle` needs), so a task
whose worker died is back in Huey's queue at once.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from huey import Huey
from huey.consumer import Consumer, ProcessEnvironment
from huey.consumer_options import ConsumerConfig
from huey.exceptions import TaskTimeout
from huey.signals import SIGNAL_INTERRUPTED, SIGNAL_TIMEOUT
from huey.utils import Error, load_class

import pprunner
from pprunner.consuming import HostJob, HostJobs
from pprunner.errors import ResultTimeout
from pprunner.invocation import ErrorInfo

logger = logging.getLogger("pprunner.huey")

#: seconds past a task's own ``timeout`` (Huey's SIGALRM) before pprunner kills its worker:
#: the alarm ends Python code; the kill ends what the alarm cannot (native code, masked
#: signals)
HARD_LIMIT_GRACE = 1.0


def load_huey(path: str) -> Huey:
    """The Huey instance at ``path`` (``module.attribute``), importable from the current
    folder as ``huey_consumer`` makes it."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    huey = load_class(path)
    if not isinstance(huey, Huey):
        raise TypeError(f"{path} is a {type(huey).__name__}, not a Huey instance")
    return huey


def process_timeouts(huey: Huey) -> None:
    """Huey's ``timeout`` by SIGALRM, as Huey's Consumer sets it up for process workers
    (whatever ``-k`` the consumer this worker was forked from has): Huey 3.0's
    environments set the handler themselves, later ones hand it over."""
    environment = ProcessEnvironment()
    if hasattr(environment, "set_timeout_handler"):
        environment.set_timeout_handler(huey)
    else:
        huey._timeout_handler = environment.timeout


def hard_limit(task: Any, default: float | None) -> float | None:
    """When pprunner kills a task's worker: a little after the task's own ``timeout``,
    else after the ``time_limit`` setting (None: never)."""
    return task.timeout + HARD_LIMIT_GRACE if task.timeout else default


class HueyConsumer:
    """Huey's worker loop, as ``huey_consumer -k process`` runs it in one worker process.

    :param consumer: Huey's ``Consumer`` (a project's own ``create_consumer`` or
        ``worker_class`` included) whose ``_create_worker`` makes this process's worker.
    """

    def __init__(self, consumer: Consumer, time_limit: float | None) -> None:
        self.huey = consumer.huey
        self.time_limit = time_limit
        # this worker's own stop flag: a forked worker inherits one every worker shares
        self._stop_flag = consumer.stop_flag = threading.Event()
        self.worker = consumer._create_worker()
        process_timeouts(self.huey)
        #: the task that runs now (Huey's worker runs one at a time), as pprunner names it
        self._task: HostJob | None = None
        #: the message of the task dequeued last, as the storage gave it
        self._message: bytes | None = None

    def consume(self, jobs: HostJobs) -> None:
        self._keep_messages()
        self.huey.execute = self._reporting(jobs, self.huey.execute)
        self._wait_the_pprunner_way()
        self.worker.initialize()
        try:
            while not self._stop_flag.is_set():
                self.worker.loop()
        finally:
            self.worker.shutdown()

    def stop(self) -> None:
        self._stop_flag.set()

    def _reporting(self, jobs: HostJobs, execute: Any) -> Any:
        """Huey's ``execute``, told to pprunner (the one call Huey's Worker makes per task)."""
        huey, default = self.huey, self.time_limit

        def execute_reported(task: Any, timestamp: Any = None) -> Any:
            message, self._message = self._message, None
            with jobs.running(task.id, task.name, time_limit=hard_limit(task, default),
                              data=message or huey.serialize_task(task)):
                self._task = HostJob(task.id, task.name)
                try:
                    return execute(task, timestamp)
                finally:
                    self._task = None

        return execute_reported

    def _keep_messages(self) -> None:
        """Keep each dequeued task's message, which :func:`settle` puts back if the worker
        dies under the task: Huey's worker dequeues and then executes in this thread, so
        the message is there when ``execute`` runs, and serializing the task again for
        every task (a tenth of a no-op task's cost) is saved."""
        storage = self.huey.storage
        dequeue = storage.dequeue

        def dequeue_kept() -> bytes | None:
            self._message = dequeue()
            return self._message

        storage.dequeue = dequeue_kept

    def _wait_the_pprunner_way(self) -> None:
        """A task's ``result.get(blocking=True)`` (Huey's documented wait for another
        task) waits the core's way (:meth:`pprunner.WorkerContext.wait_for_host`, the
        ``pprunner_pause_on_wait`` hook): the worker's slot is lent while it waits, so a
        pool whose every worker waits cannot deadlock, and the result is seen a
        millisecond or two after it is stored (Huey's own wait first sleeps 50 ms, then
        longer). Huey's storage object is this worker process's own."""
        storage = self.huey.storage
        wait = storage.wait_result

        def wait_result_lending(key: str, timeout: float | None = None,
                                *args: Any, **kwargs: Any) -> bool:
            context = pprunner.current_context()
            if self._task is None or context is None:
                return wait(key, timeout, *args, **kwargs)
            try:
                context.wait_for_host(
                    self._task, [key],
                    lambda: [] if storage.has_data_for_key(key) else [key], timeout)
            except ResultTimeout:
                return False
            return True

        storage.wait_result = wait_result_lending


def adopt(consumer: Consumer, time_limit: float | None) -> HueyConsumer:
    """In a worker forked from the process that built ``consumer``: its Huey instance and
    tasks are the parent's, its storage a fresh one (the parent's connection, and a lock
    another thread may have held at the fork, are not this process's to use).
    ``time_limit``: the setting's default hard limit."""
    consumer.huey.storage = consumer.huey.create_storage()
    return HueyConsumer(consumer, time_limit)


def huey_logging(logging_options: dict[str, Any]) -> None:
    """Huey's -v/-q levels; its lines go where pprunner's go, or to -l's file only."""
    options = ConsumerConfig(**logging_options)
    huey_logger = logging.getLogger("huey")
    huey_logger.setLevel(options.loglevel)
    if options.logfile:
        options.setup_logger(huey_logger)
        huey_logger.propagate = False


def settle(huey: Huey, job: HostJob, error: ErrorInfo | None, retry: bool, *,
           at_most_once: bool = False) -> None:
    """In the supervisor: a task whose worker was stopped or died under it goes back to
    Huey's queue (at-least-once), or with ``at_most_once`` ends as Huey's own consumer
    ends an interrupted task (``SIGNAL_INTERRUPTED``, not run again); one killed at its
    hard limit ends as Huey ends a task that raised ``TaskTimeout``."""
    task = huey.deserialize_task(job.data)
    why = "its worker was stopped" if error is None else error.message
    if not (error is None or retry):
        timed_out(huey, task, error)
    elif at_most_once:
        logger.warning("task %s (%s) did not finish (at most once): %s", job.id, job.name, why)
        huey._emit(SIGNAL_INTERRUPTED, task)
    else:
        logger.warning("task %s (%s) re-enqueued: %s", job.id, job.name, why)
        huey.storage.enqueue(job.data, task.priority)


def timed_out(huey: Huey, task: Any, error: ErrorInfo) -> None:
    """Huey's own ending of a timed-out task: a retry while it has retries left, else
    the ``TaskTimeout`` error as its result; ``SIGNAL_TIMEOUT`` either way."""
    exception = TaskTimeout(error.message)
    huey._emit(SIGNAL_TIMEOUT, task)
    if task.retries:
        huey._requeue_task(task, huey._get_timestamp())
        return
    if huey.results:
        huey.put_result(task.id, Error(huey.build_error_result(task, exception)))
