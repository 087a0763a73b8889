"""Copied next to RQ's tests by ``python -m tests.rq_suite``.

RQ's ``Worker`` and ``SimpleWorker`` are ``pprunner_plugins.rq.Worker`` for every
test module (unless ``PPRUNNER_RQ_SUITE_WORKER=rq``: RQ's own, to compare), and
only the tests that build a worker (or a pool, or run the ``rq worker`` command)
run: the others do not touch what is swapped.
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any

import pytest
import rq
import rq.worker
import rq.worker_pool
from redis import Redis

from pprunner_plugins.rq import Worker

#: a test (or its class's ``setUp``) that builds a worker says one of these
BUILDS_A_WORKER = re.compile(
    r"\b(Simple)?Worker\(|WorkerPool\(|start_work|run_worker|rqworker|\['worker'|worker_class")


def _swap_in_ours() -> None:
    """RQ's workers by name, and as the default of ``WorkerPool`` and ``run_worker``."""
    theirs = (rq.worker.Worker, rq.worker.SimpleWorker)
    for module in (rq, rq.worker, rq.worker_pool):
        for name in ("Worker", "SimpleWorker"):
            if hasattr(module, name):
                setattr(module, name, Worker)
    for function in (rq.worker_pool.WorkerPool.__init__, rq.worker_pool.run_worker):
        function.__defaults__ = tuple(Worker if value in theirs else value
                                      for value in function.__defaults__ or ())


def _databases_from(first: int) -> None:
    """RQ's tests take the first empty Redis database from 4 on; from ``first`` on
    instead (``PPRUNNER_RQ_SUITE_FIRST_DB``), so that two runs on one Redis (ours
    and RQ's own worker, to compare) do not take each other's."""
    import tests  # RQ's, next to this file

    def find_empty_redis_database(ssl: bool = False) -> Any:
        for number in range(first, 16):
            connection = Redis(db=number)
            if connection.dbsize() == 0:
                return connection
            connection.close()
        raise AssertionError(f"no empty Redis database from {first} to 15")

    tests.find_empty_redis_database = find_empty_redis_database


if os.environ.get("PPRUNNER_RQ_SUITE_WORKER", "pprunner") == "pprunner":
    _swap_in_ours()
if os.environ.get("PPRUNNER_RQ_SUITE_FIRST_DB"):
    _databases_from(int(os.environ["PPRUNNER_RQ_SUITE_FIRST_DB"]))


def _source(function: Any) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def _builds_a_worker(item: pytest.Item) -> bool:
    cls = getattr(item, "cls", None)
    set_up = getattr(cls, "setUp", None)
    return bool(BUILDS_A_WORKER.search(_source(getattr(item, "obj", None)) + _source(set_up)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [item for item in items if _builds_a_worker(item)]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
