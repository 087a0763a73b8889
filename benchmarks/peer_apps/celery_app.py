"""The Celery app the benchmarks run: ``celery -A benchmarks.peer_apps.celery_app worker``.

Its tasks wrap :mod:`benchmarks.workload`. Both Celery systems start the
same worker command, so the worker reads its configuration from its
environment, set by the benchmark:

- ``BENCHMARKS_CELERY_URL``: the Redis database that is both broker and
  result backend;
- ``BENCHMARKS_CELERY_ACKS_LATE=1``: the settings Celery recommends for
  tasks that must survive a worker crash (see :func:`make_app`);
- ``BENCHMARKS_CELERY_READY_LOG``: a file every pool child appends
  ``"<pid> <time>"`` to once it is ready for work.

The benchmark process, the producer, builds its own app with
:func:`make_app` for the round's database: same tasks, same settings.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from .. import workload

URL_ENV = "BENCHMARKS_CELERY_URL"
ACKS_LATE_ENV = "BENCHMARKS_CELERY_ACKS_LATE"
READY_LOG_ENV = "BENCHMARKS_CELERY_READY_LOG"


def make_app(url: str | None, *, acks_late: bool) -> Celery:
    """An app on ``url`` (broker and result backend) with Celery's defaults, or,
    with ``acks_late``, acknowledging a message only once its task is done,
    requeueing it when the child running it dies, and reserving one message
    per child, so that no other message waits behind a long task."""
    app = Celery("benchmarks", broker=url, backend=url)
    if acks_late:
        app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True,
                        worker_prefetch_multiplier=1)
    # shared=False: a shared task would be added to every app this process builds
    task = app.task

    @task(name="noop", shared=False)
    def noop(x: int) -> tuple[float, int, float]:
        """``workload.noop`` between its start and finish times, taken in the
        child: the throughput's drain rate, without Celery-specific bookkeeping."""
        started = time.time()
        value = workload.noop(x)
        return started, value, time.time()

    task(name="stamp", shared=False)(workload.stamp)
    task(name="announce_and_sleep", shared=False)(workload.announce_and_sleep)

    @task(name="parent_of_noops", shared=False)
    def parent_of_noops(count: int) -> int:
        """Wait for ``count`` no-op children the way Celery's docs allow, though
        they warn that it can deadlock: ``disable_sync_subtasks=False``."""
        children = [noop.delay(n) for n in range(count)]
        return sum(child.get(disable_sync_subtasks=False)[1] for child in children)

    return app


#: the worker's app; unset (in the producer, which builds its own) it is never used
app = make_app(os.environ.get(URL_ENV), acks_late=os.environ.get(ACKS_LATE_ENV) == "1")


@worker_process_init.connect
def announce_ready(**_: Any) -> None:
    """Sent at the end of Celery's pool-child initializer; the child then tells
    the main process it is up and waits for jobs, so this is when it is ready."""
    if path := os.environ.get(READY_LOG_ENV):
        with open(path, "a") as stream:  # one short O_APPEND write: never interleaved
            stream.write(f"{os.getpid()} {time.time()!r}\n")
