"""The RQ app the benchmarks run: ``rq worker-pool --url <URL>``.

RQ runs any importable function: a job names its function by import path
and the work horse imports it, so the functions of
:mod:`benchmarks.workload` are RQ's tasks as they are. Only the parent of
wait_on_subtask uses RQ itself. The database (:data:`URL`) is this app's
alone; the benchmark passes it to the worker command and connects to it as
the producer.
"""

from __future__ import annotations

import math

from rq import Queue, get_current_job

from .. import workload
from . import redis_db

URL = redis_db.url(12)

noop = workload.noop
stamp = workload.stamp
announce_and_sleep = workload.announce_and_sleep


def parent_of_noops(count: int, wait_s: float) -> int:
    """Enqueue ``count`` no-op children and block on each result, the way RQ's
    docs offer: ``job.latest_result(timeout=...)``, an XREAD BLOCK on the
    job's result stream (the horse's connection has RQ's long socket timeout)."""
    parent = get_current_job()
    assert parent is not None, "runs only as a job"
    queue = Queue(parent.origin, connection=parent.connection)
    children = [queue.enqueue(noop, n) for n in range(count)]
    total = 0
    for child in children:
        result = child.latest_result(timeout=math.ceil(wait_s))
        value = None if result is None else result.return_value
        if not isinstance(value, int):
            raise RuntimeError(f"child {child.id}: {result!r} after waiting {wait_s:g} s")
        total += value
    return total
