"""The Redis URL of a database a peer's app owns (Celery: 10 and 11, Celery on
pprunner's pool: 15 and 9, RQ: 12, Huey: 13, Dramatiq: 14, taskiq: 7).

The server is the benchmarks' one: ``BENCHMARKS_REDIS_URL`` if set, else the
local server; only the database number is the app's. A database of its own
lets a round empty it with FLUSHDB without touching anyone else's keys.
Here, not in :mod:`benchmarks.systems`, so a peer's workers, which import
their app, import nothing of the benchmark itself.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

DEFAULT_SERVER = "redis://127.0.0.1:6379"


def url(db: int) -> str:
    """Database ``db`` on the benchmarks' Redis server."""
    server = urlsplit(os.environ.get("BENCHMARKS_REDIS_URL", DEFAULT_SERVER))
    return server._replace(path=f"/{db}").geturl()
