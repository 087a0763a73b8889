"""The supervisor's side: a dead worker's message, settled by Dramatiq's own rules.

Dramatiq itself leaves the message a killed worker held in that worker's
in-flight set until the Redis broker's heartbeat timeout (and then runs it
again whatever ``max_retries`` says). Here the supervisor settles it at once, as the worker would
have, had the actor raised :class:`WorkerDied` (or Dramatiq's own
``TimeLimitExceeded`` at a hard time limit): the broker's middleware sees
``after_process_message`` with that exception, so ``Retries`` counts the
attempt against ``max_retries`` and enqueues it again (at once after a death,
after its backoff after a time limit), or fails it (``Results`` then stores
the error, ``on_failure`` callbacks run); then the original is acked or
nacked in the dead worker's in-flight set (Redis; RabbitMQ redelivers it by
itself, uncounted). A worker the supervisor stopped (past the shutdown
timeout) has its message requeued without an attempt charged.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import Retry
from dramatiq.middleware.time_limit import TimeLimitExceeded

from pprunner.consuming import HostJob
from pprunner.invocation import ErrorInfo

logger = logging.getLogger("pprunner.dramatiq")


def settles_in_flight(broker: Any) -> bool:
    """Whether pprunner settles a dead worker's messages on this broker: the Redis
    broker keeps them in the dead consumer's in-flight set; RabbitMQ requeues a dead
    connection's unacked messages itself, and another connection cannot ack them."""
    return isinstance(broker, RedisBroker)


class WorkerDied(Retry):
    """The worker process running the message died (SIGKILL, out of memory, a crash).

    A :class:`dramatiq.Retry` with no delay: ``Retries`` counts the attempt against
    ``max_retries`` (or ``retry_when``) as for any error, but the message runs again
    at once rather than after ``min_backoff`` (15 s by default), as a redelivery
    would, and no traceback is logged for it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=0)


class Settler:
    """``settle`` for :class:`~pprunner.hostfeed.HostFeed`, on the command's broker."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def __call__(self, job: HostJob, error: ErrorInfo | None, retry: bool) -> None:
        message = MessageProxy(Message.decode(job.data["message"]))
        in_flight = self._dead_consumers_broker(job.data["broker_id"])
        if in_flight is None:
            logger.warning("message %s (%s): the broker redelivers it itself", job.id, job.name)
            return
        if error is None:
            in_flight.do_requeue(message.queue_name, message.options["redis_message_id"])
            return
        self._fail(message, error, retry)
        verdict = "nack" if message.failed else "ack"
        self.broker.emit_before(verdict, message)
        getattr(in_flight, f"do_{verdict}")(message.queue_name,
                                            message.options["redis_message_id"])
        self.broker.emit_after(verdict, message)

    def _fail(self, message: MessageProxy, error: ErrorInfo, retry: bool) -> None:
        """What the worker thread does when an actor raises: the middleware decides."""
        kind = TimeLimitExceeded if not retry else WorkerDied
        try:
            raise kind(error.message)
        except kind as exc:  # raised, so Retries records a real traceback
            message.stuff_exception(exc)
            self.broker.emit_after("process_message", message, exception=exc)

    def _dead_consumers_broker(self, broker_id: str | None) -> Any:
        """The Redis broker as the dead worker's consumer (its in-flight set is keyed by
        its ``broker_id``); None for a broker that redelivers by itself (RabbitMQ)."""
        if broker_id is None or not settles_in_flight(self.broker):
            return None
        dead = copy.copy(self.broker)
        dead.broker_id = broker_id
        return dead
