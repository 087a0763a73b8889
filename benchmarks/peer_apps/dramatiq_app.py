"""The Dramatiq app the benchmarks run: ``dramatiq benchmarks.peer_apps.dramatiq_app``.

Its actors wrap :mod:`benchmarks.workload`. The broker is a ``RedisBroker``
on the database this system owns (:data:`DATABASE` of
``BENCHMARKS_REDIS_URL``, else of the local server), with the ``Results``
middleware storing results in the same database; both are set up at import,
so the worker command and the benchmark process (the producer) use the
same broker and actors.
"""

from __future__ import annotations

import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from .. import workload
from . import redis_db

#: the Redis database this system owns, and flushes before and after every round
DATABASE = 14
URL = redis_db.url(DATABASE)
#: milliseconds a parent waits for each child: longer than the benchmark's
#: bound, so a parent that never gets its children is still waiting when it gives up
CHILD_WAIT_MS = 30_000
#: redis-py's default socket timeout (5 s) would cut any longer blocking read
#: (BRPOPLPUSH, how a result is waited for); every block here is shorter than this
SOCKET_TIMEOUT_S = 60.0

client = redis.Redis.from_url(URL, socket_timeout=SOCKET_TIMEOUT_S)
broker = RedisBroker(client=client)
broker.add_middleware(Results(backend=RedisBackend(client=client)))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def noop(x: int) -> list[float]:
    """``workload.noop`` between its start and finish times, taken in the
    worker: the throughput's drain rate, read from the results."""
    started = time.time()
    value = workload.noop(x)
    return [started, value, time.time()]


stamp = dramatiq.actor(store_results=True)(workload.stamp)
announce_and_sleep = dramatiq.actor(workload.announce_and_sleep)


@dramatiq.actor(store_results=True)
def parent_of_noops(count: int) -> int:
    """Send ``count`` no-op children and block on each result, as the
    ``Results`` middleware offers (``get_result(block=True)``)."""
    children = [noop.send(n) for n in range(count)]
    return sum(int(child.get_result(block=True, timeout=CHILD_WAIT_MS)[1])
               for child in children)
