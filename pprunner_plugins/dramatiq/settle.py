"""The supervisor's side: a dead worker's message, settled by Dramatiq's own rules.

Dramatiq itself leaves the message a killed worker held in that worker's
in-flight set until the Redis broker's heartbeat timeout, or has RabbitMQ
deliver it again as soon as the dead worker's connection drops; either way it
runs again whatever ``max_retries`` says (Dramatiq #213). Here the supervisor
settles it at once, as the worker would have, had the actor raised
:class:`WorkerDied` (or Dramatiq's own ``TimeLimitExceeded`` at a hard time
limit): the broker's middleware sees ``after_process_message`` with that
exception, so ``Retries`` counts the attempt against ``max_retries`` and
enqueues it again (at once after a death, after its backoff after a time
limit), or fails it (``Results`` then stores the error, ``on_failure``
callbacks run). Then the original is acked or nacked as the dead worker's
consumer would have:

- Redis: in the dead consumer's in-flight set (keyed by its ``broker_id``);
- RabbitMQ: no other connection can ack or nack it, and the broker delivers it
  again by itself; a nack's dead-lettering is done here (the message goes to
  the queue's dead-letter queue, where its dead-letter exchange would route
  it), and ``settle`` returns :attr:`~pprunner.consuming.Redelivery.DROP`, so
  the worker given the redelivery drops it unrun (:mod:`.consumer`).

A worker the supervisor stopped (past the shutdown timeout) has its message
requeued without an attempt charged (RabbitMQ: its redelivery runs).
"""

from __future__ import annotations

import copy
import logging
import sys
from typing import Any

from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name, xq_name
from dramatiq.errors import Retry
from dramatiq.middleware.time_limit import TimeLimitExceeded

from pprunner.consuming import HostJob, Redelivery
from pprunner.invocation import ErrorInfo

logger = logging.getLogger("pprunner.dramatiq")


def settles_in_flight(broker: Any) -> bool:
    """Whether a dead worker's messages wait in its consumer's in-flight set, to be
    acked or nacked there by the supervisor (the Redis broker)."""
    return isinstance(broker, RedisBroker)


def redelivers_itself(broker: Any) -> bool:
    """Whether the broker delivers a dead connection's unacked messages again by
    itself, marked ``redelivered`` (RabbitMQ; its module is loaded if it is one)."""
    rabbitmq = sys.modules.get("dramatiq.brokers.rabbitmq")
    return rabbitmq is not None and isinstance(broker, rabbitmq.RabbitmqBroker)


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

    def __call__(self, job: HostJob, error: ErrorInfo | None,
                 retry: bool) -> Redelivery | None:
        message = MessageProxy(Message.decode(job.data["message"]))
        in_flight = self._dead_consumers_broker(job.data["broker_id"])
        redelivered = in_flight is None and redelivers_itself(self.broker)
        if in_flight is None and not redelivered:
            logger.warning("message %s (%s): left to the broker", job.id, job.name)
            return None
        if error is None:  # stopped by the supervisor: back to the queue, uncounted
            if in_flight is not None:
                in_flight.do_requeue(message.queue_name, message.options["redis_message_id"])
            return None
        if redelivered:  # the supervisor's connection idles between deaths: a fresh one
            del self.broker.connection
        self._fail(message, error, retry)
        verdict = "nack" if message.failed else "ack"
        self.broker.emit_before(verdict, message)
        if in_flight is not None:
            getattr(in_flight, f"do_{verdict}")(message.queue_name,
                                                message.options["redis_message_id"])
        elif message.failed:
            self._dead_letter(message)
        self.broker.emit_after(verdict, message)
        return Redelivery.DROP if redelivered else None

    def _fail(self, message: MessageProxy, error: ErrorInfo, retry: bool) -> None:
        """What the worker thread does when an actor raises: the middleware decides."""
        kind = TimeLimitExceeded if not retry else WorkerDied
        try:
            raise kind(error.message)
        except kind as exc:  # raised, so Retries records a real traceback
            message.stuff_exception(exc)
            self.broker.emit_after("process_message", message, exception=exc)

    def _dead_letter(self, message: MessageProxy) -> None:
        """RabbitMQ's nack of the dead worker's delivery, from this connection: the
        message goes where the queue's dead-letter exchange routes a nacked one."""
        import pika  # RabbitMQ's client, there with its broker

        queue = q_name(message.queue_name)
        self.broker.declare_queue(queue, ensure=True)
        self.broker.channel.basic_publish(
            exchange="", routing_key=xq_name(queue), body=message.encode(),
            properties=pika.BasicProperties(delivery_mode=2))

    def _dead_consumers_broker(self, broker_id: str | None) -> Any:
        """The Redis broker as the dead worker's consumer (its in-flight set is keyed by
        its ``broker_id``); None for any other broker."""
        if broker_id is None or not settles_in_flight(self.broker):
            return None
        dead = copy.copy(self.broker)
        dead.broker_id = broker_id
        return dead
