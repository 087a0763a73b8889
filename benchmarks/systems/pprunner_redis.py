"""pprunner on its Redis backend: a fresh key prefix per round.

The server is the local one at ``redis://127.0.0.1:6379/0`` (another with
``BENCHMARKS_REDIS_URL``). It is shared: a round uses only keys under its
own prefix, ``pprunner-bench-<random>``, and deletes exactly those (SCAN
MATCH ``<prefix>:*`` + DEL) once its pool has ended, never anything else.
If no server answers, the system is "unavailable" instead of failing.

Everything but the store is :class:`~.pprunner_common.PprunnerSystem`.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

from .pprunner_common import PprunnerSystem

#: the server every round uses; a round's keys are isolated by its prefix
REDIS_URL = os.environ.get("BENCHMARKS_REDIS_URL", "redis://127.0.0.1:6379/0")
#: pprunner's claim needs BLMOVE
MIN_VERSION = (6, 2)
#: seconds to wait for the server when checking it is there and when cleaning up
CONNECT_TIMEOUT = 2.0


def _client() -> Any:
    """A short-lived client of its own (not pprunner's), with short timeouts."""
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=CONNECT_TIMEOUT,
                                socket_timeout=CONNECT_TIMEOUT)


def server_version() -> str:
    """The server's version, or why it is not known (for the report's header too)."""
    try:
        import redis
    except ImportError:
        return "unknown (the redis client is not installed)"
    client = _client()
    try:
        return str(client.info("server")["redis_version"])
    except redis.RedisError as exc:
        return f"not answering at {REDIS_URL} ({exc})"
    finally:
        client.close()


class PprunnerRedis(PprunnerSystem):
    name = "pprunner-redis"
    requires = ("pprunner", "redis")

    @classmethod
    def unavailable(cls) -> str | None:
        version = server_version()
        numbers = re.match(r"(\d+)\.(\d+)", version)
        if numbers is None:
            return f"no Redis: {version}"
        if (int(numbers[1]), int(numbers[2])) < MIN_VERSION:
            return f"Redis {version} at {REDIS_URL}; pprunner needs 6.2 or later (BLMOVE)"
        return None

    def fresh_backend(self, workdir: Path) -> str:
        self.prefix = f"pprunner-bench-{uuid.uuid4().hex[:12]}"
        self.cleanup.callback(delete_keys, self.prefix)
        separator = "&" if "?" in REDIS_URL else "?"
        return f"{REDIS_URL}{separator}prefix={self.prefix}"


class PprunnerRedisBatch(PprunnerRedis):
    """The same with ``batch=16`` in the URL: a worker that keeps finishing tasks quickly
    claims up to 16 at once and writes their completions together, with its next
    claim, in one script (:mod:`pprunner.batching`)."""

    name = "pprunner-redis-batch"

    def fresh_backend(self, workdir: Path) -> str:
        return f"{super().fresh_backend(workdir)}&batch=16"


def delete_keys(prefix: str) -> None:
    """Delete the keys under ``prefix`` (a round's, or a probe's), and only those."""
    client = _client()
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()
