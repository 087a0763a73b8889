"""The worker's side: Dramatiq's own Worker in a pprunner worker process.

:func:`make_consumer` runs in each worker (a :class:`~pprunner.jobs.Call`) and
boots Dramatiq as ``dramatiq``'s ``worker_process`` does: import the broker,
``process_boot``, import the modules. :class:`DramatiqConsumer` then starts a
:class:`dramatiq.Worker` and stops it gracefully (``worker_shutdown`` and all)
when the supervisor retires the worker. :class:`Reports` is the one
middleware pprunner adds: around each message it tells the supervisor which
one the worker holds, so a death, a hard time limit or recycling is handled
per message; an actor blocking on another message's result lends its slot.
On a broker that delivers a dead worker's messages again by itself
(RabbitMQ), :class:`DroppingSettled` drops such a redelivery when the
supervisor settled the message already (:mod:`.settle`).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from dramatiq import Message, Worker
from dramatiq.cli import import_broker
from dramatiq.middleware import Middleware, TimeLimit

from pprunner.consuming import HostJobs

from .settle import redelivers_itself, settles_in_flight

logger = logging.getLogger("pprunner.dramatiq")

#: seconds past Dramatiq's own time limit before the worker is killed: TimeLimit checks
#: once a second and raises TimeLimitExceeded in the thread, which gets this long to
#: end; what it cannot interrupt (a blocking call, C code) is ended by the kill
HARD_LIMIT_GRACE = 2.0


class Reports(Middleware):
    """Tells the supervisor which message each worker thread runs (first in the
    broker's middleware, so a message another middleware skips was reported)."""

    def __init__(self, jobs: HostJobs, broker_id: str | None) -> None:
        self.jobs = jobs
        self.broker_id = broker_id
        #: ``running``: whether this thread runs a message now
        self._thread = threading.local()

    def before_process_message(self, broker: Any, message: Any) -> None:
        self.jobs.started(message.message_id, message.actor_name,
                          time_limit=hard_limit(broker, message),
                          data={"message": message.encode(), "broker_id": self.broker_id})
        self._thread.running = True

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        self._thread.running = False
        self.jobs.finished(message.message_id)

    def lend_slot_while_waiting(self) -> None:
        """An actor's ``message.get_result(block=True)`` (Dramatiq's documented wait for
        another message's result) lends this worker's slot while it blocks, so a fixed
        pool whose every worker waits cannot deadlock. Dramatiq's ``Message`` class is
        this worker process's own."""
        get_result, thread, jobs = Message.get_result, self._thread, self.jobs

        def get_result_lending(message: Message, *, block: bool = False,
                               **options: Any) -> Any:
            if not (block and getattr(thread, "running", False)):
                return get_result(message, block=block, **options)
            with jobs.lend_slot():
                return get_result(message, block=block, **options)

        Message.get_result = get_result_lending  # type: ignore[method-assign,assignment]

    after_skip_message = after_process_message


def hard_limit(broker: Any, message: Any) -> float | None:
    """Seconds the message may run before its worker is killed: Dramatiq's own time
    limit (message, actor, TimeLimit middleware, in that order) plus the grace; none
    without the TimeLimit middleware, nor on a broker whose dead workers' messages
    pprunner cannot settle (a message killed at its limit would run again and again)."""
    time_limit = next((m for m in broker.middleware if isinstance(m, TimeLimit)), None)
    if time_limit is None or not (settles_in_flight(broker) or redelivers_itself(broker)):
        return None
    actor = broker.get_actor(message.actor_name)
    limit = message.options.get("time_limit") or actor.options.get("time_limit",
                                                                   time_limit.time_limit)
    return limit / 1000 + HARD_LIMIT_GRACE


class DramatiqConsumer:
    """One worker process's Dramatiq :class:`~dramatiq.Worker` (the Consumer seam)."""

    def __init__(self, broker: Any, queues: Sequence[str] | None, threads: int,
                 shutdown_timeout_ms: int) -> None:
        self.broker = broker
        self.queues = queues
        self.threads = threads
        self.shutdown_timeout_ms = shutdown_timeout_ms
        self._stopped = threading.Event()

    def consume(self, jobs: HostJobs) -> None:
        reports = Reports(jobs, self.broker.broker_id if settles_in_flight(self.broker)
                          else None)
        first = self.broker.middleware[0] if self.broker.middleware else None
        self.broker.add_middleware(reports, before=None if first is None else type(first))
        reports.lend_slot_while_waiting()
        if redelivers_itself(self.broker):
            consume = self.broker.consume
            self.broker.consume = lambda *args, **kwargs: DroppingSettled(
                consume(*args, **kwargs), jobs)
        worker = Worker(self.broker, queues=set(self.queues) if self.queues else None,
                        worker_threads=self.threads)
        worker.start()
        self._stopped.wait()
        worker.stop(timeout=self.shutdown_timeout_ms)
        self.broker.close()

    def stop(self) -> None:
        self._stopped.set()


class DroppingSettled:
    """A Dramatiq consumer (one queue's, in one worker) that drops the broker's own
    redelivery of a message the supervisor settled after its worker died: acked
    unrun, before any middleware sees it (``Retries`` counted that death, and sent
    the message on or dead-lettered it, from the supervisor)."""

    def __init__(self, consumer: Any, jobs: HostJobs) -> None:
        self._consumer = consumer
        self._jobs = jobs

    def __iter__(self) -> DroppingSettled:
        return self

    def __next__(self) -> Any:
        message = next(self._consumer)
        if (message is not None and getattr(message, "redelivered", False)
                and self._jobs.redelivery_settled(message.message_id)):
            logger.info("dropped message %s (%s): its dead worker's attempt was settled",
                        message.message_id, message.actor_name)
            self._consumer.ack(message)
            return None
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def load_broker(broker: str, path: Sequence[str]) -> Any:
    """The broker, imported as ``dramatiq`` imports it (``--path`` first; pika's
    logging as quiet as ``dramatiq`` makes it)."""
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    for folder in reversed([os.path.abspath(p) for p in path]):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return import_broker(broker)[1]


def import_modules(modules: Sequence[str]) -> None:
    """The modules named after the broker (their actors)."""
    for module in modules:
        importlib.import_module(module)


def make_consumer(broker: str, modules: Sequence[str], path: Sequence[str],
                  queues: Sequence[str] | None, threads: int,
                  shutdown_timeout_ms: int) -> DramatiqConsumer:
    """In each worker: boot Dramatiq as its own worker process does, SIGINT and SIGTERM
    unblocked first (pprunner blocks them while a worker starts), as Dramatiq's own
    worker process has them for ``process_boot`` and what its middleware starts."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    loaded = load_broker(broker, path)
    loaded.emit_after("process_boot")
    import_modules(modules)
    return DramatiqConsumer(loaded, queues, threads, shutdown_timeout_ms)
