"""A Dramatiq app, unchanged for pprunner: run it with either command.

    dramatiq tasks --processes 2 --threads 1            # Dramatiq's own
    pprunner dramatiq tasks --processes 2 --threads 1   # on pprunner's supervisor

Redis at $DRAMATIQ_APP_REDIS (default redis://127.0.0.1:6379/0), keys under
$DRAMATIQ_APP_NAMESPACE (default "dramatiq"); with $DRAMATIQ_APP_RABBITMQ (an
amqp:// URL) the broker is RabbitMQ and Redis keeps the results. The actors use
the queue $DRAMATIQ_APP_QUEUE (default "default").
"""

import os
import time
from pathlib import Path

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

REDIS = os.environ.get("DRAMATIQ_APP_REDIS", "redis://127.0.0.1:6379/0")
NAMESPACE = os.environ.get("DRAMATIQ_APP_NAMESPACE", "dramatiq")
RABBITMQ = os.environ.get("DRAMATIQ_APP_RABBITMQ")
QUEUE = os.environ.get("DRAMATIQ_APP_QUEUE", "default")

broker = (RabbitmqBroker(url=RABBITMQ) if RABBITMQ
          else RedisBroker(url=REDIS, namespace=NAMESPACE))
results = RedisBackend(url=REDIS, namespace=f"{NAMESPACE}-results")
broker.add_middleware(Results(backend=results))
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def add(a, b):
    return a + b


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def pid(seconds=0.0, started=None):
    """Which worker process ran it, after ``seconds`` of work (first creating the file
    ``started``, if given)."""
    if started:
        Path(started).touch()
    time.sleep(seconds)
    return os.getpid()


@dramatiq.actor(queue_name=QUEUE, store_results=True, max_retries=3, min_backoff=100,
                max_backoff=200)
def crash_once(marker_dir):
    """The attempt that creates ``marker_dir``/first writes its pid there and waits to
    be killed; a retry returns its pid and the attempt number Dramatiq's Retries counted."""
    try:
        marker = os.open(Path(marker_dir, "first"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        message = CurrentMessage.get_current_message()
        return [os.getpid(), message.options.get("retries", 0)]
    os.write(marker, f"{os.getpid()}\n".encode())
    os.close(marker)
    time.sleep(120)


@dramatiq.actor(queue_name=QUEUE, store_results=True, max_retries=1, min_backoff=100,
                max_backoff=200)
def hangs(marker_dir):
    """Each attempt adds a line to ``marker_dir``/runs (its pid and the attempt number
    Dramatiq's Retries counted) and hangs until its worker is killed: after two
    deaths Retries gives up and the message is dead-lettered."""
    message = CurrentMessage.get_current_message()
    with open(Path(marker_dir, "runs"), "a") as runs:
        runs.write(f"{os.getpid()} {message.options.get('retries', 0)}\n")
    time.sleep(120)


@dramatiq.actor(queue_name=QUEUE, store_results=True, time_limit=500, max_retries=0)
def blocks(seconds):
    """A blocking call Dramatiq's TimeLimit cannot interrupt (its exception waits for
    the call to return); pprunner's hard limit kills the worker."""
    time.sleep(seconds)
    return os.getpid()


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def add_and_wait(a, b):
    """Sends ``add(a, b)`` and blocks on its result, as Dramatiq's docs show
    (``get_result(block=True)``): with one worker of one thread, only a lent slot
    (``pprunner dramatiq``, prefetch at ``--threads``) lets the child run; under
    ``dramatiq`` the wait fails."""
    return add.send(a, b).get_result(backend=results, block=True, timeout=20_000)
