"""RQ with persistent work horses: ``rq worker -w pprunner_plugins.rq.Worker``.

Install with ``python -m pip install -e '.[rq]'`` in the clone; nothing else in an RQ project
changes. See :class:`~pprunner_plugins.rq.worker.Worker` and
docs/hosts/rq.md for what is the same as RQ's forking worker and what differs.
"""

from __future__ import annotations

from .worker import HorseUnavailable, Worker

__all__ = ["HorseUnavailable", "Worker"]
