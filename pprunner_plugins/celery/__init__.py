"""pprunner as a Celery worker pool, a drop-in for prefork.

Install ``python -m pip install -e '.[celery]'`` in the clone and start the worker with::

    CELERY_CUSTOM_WORKER_POOL=pprunner_plugins.celery:TaskPool \\
        celery -A proj worker --pool custom -c 4

or set ``worker_pool = "pprunner_plugins.celery:TaskPool"`` in the Celery
config and leave ``--pool`` out. Nothing in the tasks, the broker or the
result backend changes. pprunner's own settings come from ``pprunner_*`` keys
in the Celery config or ``PPRUNNER_*`` environment variables
(:mod:`.settings`); docs/hosts/celery.md has the table and what differs
from prefork.

With the package installed, ``--pool pprunner`` names the pool too, from
Celery's command line (:mod:`.command`).

``TaskPool`` is imported on first use: Celery's command line imports
:mod:`.command` for every ``celery`` command, which should not cost the
pool's imports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TaskPool"]


def __getattr__(name: str) -> Any:
    if name == "TaskPool":
        from .pool import TaskPool

        return TaskPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
