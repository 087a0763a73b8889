"""pprunner as a Celery worker pool, a drop-in for prefork.

Install ``pip install 'pprunner[celery]'`` and start the worker with::

    CELERY_CUSTOM_WORKER_POOL=pprunner_plugins.celery:TaskPool \\
        celery -A proj worker --pool custom -c 4

or set ``worker_pool = "pprunner_plugins.celery:TaskPool"`` in the Celery
config and leave ``--pool`` out. Nothing in the tasks, the broker or the
result backend changes. pprunner's own settings come from ``pprunner_*`` keys
in the Celery config or ``PPRUNNER_*`` environment variables
(:mod:`.settings`); the README's "Celery" section has the table and what
differs from prefork.

Importing this package imports Celery: it is only imported by a Celery
worker (as its pool) and by pprunner's children running its tasks.
"""

from __future__ import annotations

from .pool import TaskPool

__all__ = ["TaskPool"]
