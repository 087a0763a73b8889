"""Systems with a Redis database to themselves: Celery, Dramatiq, RQ and Huey.

The server is shared (``BENCHMARKS_REDIS_URL``, else the local one), so
each of these systems keeps to one database of its own, named by its app
(see :mod:`benchmarks.peer_apps.redis_db`), and touches no other. A round
empties that database (FLUSHDB) before it starts, so no task or result
of an earlier round is in the way, and again once its pool has ended, so
it leaves nothing behind. If no server answers a PING, the system is
"unavailable", not an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..system import System

#: seconds to wait for the server when checking that it is there and when flushing
CONNECT_TIMEOUT_S = 2.0


def _client(url: str) -> Any:
    """A short-lived client of its own (not the peer's), with short timeouts."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                socket_timeout=CONNECT_TIMEOUT_S)


class OwnRedisDatabase(System):
    """A system on a Redis database of its own; subclasses name it in :meth:`url`."""

    @classmethod
    def url(cls) -> str:
        """The system's own database."""
        raise NotImplementedError

    @classmethod
    def unavailable(cls) -> str | None:
        import redis

        client = _client(cls.url())
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"no Redis at {cls.url()} ({exc})"
        finally:
            client.close()
        return None

    def setup(self, workdir: Path) -> None:
        super().setup(workdir)
        self._flush()
        # on the stack before any pool: runs once the round's pool has ended
        self.cleanup.callback(self._flush)

    def _flush(self) -> None:
        """Empty the system's own database, and nothing else."""
        client = _client(self.url())
        try:
            client.flushdb()
        finally:
            client.close()
