"""The Huey app the benchmarks run: ``huey_consumer benchmarks.peer_apps.huey_app.huey``.

Its tasks wrap :mod:`benchmarks.workload`. ``RedisHuey`` with its defaults
(results stored in a Redis hash, workers dequeue with BRPOP), on a
database of its own (:data:`URL`), set up at import: the consumer and the
benchmark process, the producer, build the same instance.
"""

from __future__ import annotations

from huey import RedisHuey

from .. import workload
from . import redis_db

URL = redis_db.url(13)

huey = RedisHuey("benchmarks", url=URL)

noop = huey.task()(workload.noop)
stamp = huey.task()(workload.stamp)
#: three attempts, as pprunner's announce_and_sleep has (Huey retries a task that raises)
announce_and_sleep = huey.task(retries=2)(workload.announce_and_sleep)


@huey.task()
def parent_of_noops(count: int, wait_s: float) -> int:
    """Call ``count`` no-op children and block on each result, as Huey's docs
    show: ``result.get(blocking=True, timeout=...)``."""
    children = [noop(n) for n in range(count)]
    return sum(child.get(blocking=True, timeout=wait_s) for child in children)
