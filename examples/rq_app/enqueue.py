"""Enqueue a few jobs and print what became of them.

    python -m examples.rq_app.enqueue [redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import sys

from redis import Redis
from rq import Queue

from . import tasks


def main(url: str) -> None:
    queue = Queue(connection=Redis.from_url(url))
    jobs = [queue.enqueue(tasks.whereami) for _ in range(3)]
    jobs.append(queue.enqueue(tasks.add, 2, 3))
    jobs.append(queue.enqueue(tasks.slow, 5, job_timeout=1))
    jobs.append(queue.enqueue(tasks.crash))
    for job in jobs:
        result = job.latest_result(timeout=30)
        if result is None:
            print(f"{job.func_name}: no result within 30 s (is a worker running?)")
        elif result.type == result.Type.SUCCESSFUL:
            print(f"{job.func_name}: {result.return_value}")
        else:
            print(f"{job.func_name}: failed: {result.exc_string.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0")
