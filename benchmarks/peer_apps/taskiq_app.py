"""The taskiq app the benchmarks run: ``taskiq worker benchmarks.peer_apps.taskiq_app:broker``.

Its tasks call :mod:`benchmarks.workload`'s functions, as sync taskiq tasks (taskiq's
decorator renames the function it wraps, so each wraps one of its own), on
taskiq-redis's ``ListQueueBroker`` (BRPOP, no acks: taskiq's simplest Redis
broker) with its Redis result backend, on a database of its own (:data:`URL`).
"""

from __future__ import annotations

from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from .. import workload
from . import redis_db

URL = redis_db.url(7)

# BRPOP blocks until a message comes: with redis-py 8's default 5 s socket timeout it fails
# after 5 idle seconds, and takes the taskiq worker process with it (restarted a second later)
broker = ListQueueBroker(URL, queue_name="benchmarks-taskiq", socket_timeout=None
                         ).with_result_backend(RedisAsyncResultBackend(URL))



@broker.task
def noop(x: int) -> int:
    return workload.noop(x)


@broker.task
def stamp() -> float:
    return workload.stamp()


@broker.task
def burn(iterations: int) -> int:
    return workload.burn(iterations)


@broker.task
def announce_and_sleep(marker: str, seconds: float) -> float:
    return workload.announce_and_sleep(marker, seconds)
