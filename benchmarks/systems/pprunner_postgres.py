"""pprunner on its PostgreSQL backend: a fresh schema per round.

The server is the local one at ``postgresql://postgres@127.0.0.1:5432/test``
(another with ``BENCHMARKS_POSTGRES_URL``). It is shared: a round keeps its
tables in a schema of its own, ``pprunner_bench_<random>``, and drops exactly
that schema once its pool has ended, never anything else. If no server
answers, the system is "unavailable" instead of failing.

Everything but the store is :class:`~.pprunner_common.PprunnerSystem`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from .pprunner_common import PprunnerSystem

#: the server every round uses; a round's tables are isolated by its schema
POSTGRES_URL = os.environ.get("BENCHMARKS_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


def connect() -> Any:
    """A short-lived connection of its own (not pprunner's), in autocommit mode."""
    import psycopg

    return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=2)


def server_version() -> str:
    """The server's version, or why it is not known."""
    try:
        import psycopg
    except ImportError:
        return "unknown (psycopg is not installed)"
    try:
        with connect() as connection:
            return str(connection.execute("SHOW server_version").fetchone()[0])
    except psycopg.Error as exc:
        return f"not answering at {POSTGRES_URL} ({str(exc).strip()})"


def unavailable() -> str | None:
    """Why no round can run on the server, or None."""
    version = server_version()
    return None if version[:1].isdigit() else f"no PostgreSQL: {version}"


def drop_schema(schema: str) -> None:
    """Drop a round's schema, and only that."""
    with connect() as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def fresh_schema(cleanup: Any, kind: str) -> str:
    """A new schema name for one round of ``kind``, dropped by the round's cleanup."""
    schema = f"{kind}_bench_{uuid.uuid4().hex[:12]}"
    cleanup.callback(drop_schema, schema)
    return schema


class PprunnerPostgres(PprunnerSystem):
    name = "pprunner-postgres"
    requires = ("pprunner", "psycopg")

    @classmethod
    def unavailable(cls) -> str | None:
        return unavailable()

    def fresh_backend(self, workdir: Path) -> str:
        separator = "&" if "?" in POSTGRES_URL else "?"
        return f"{POSTGRES_URL}{separator}schema={fresh_schema(self.cleanup, 'pprunner')}"


class PprunnerPostgresAsyncCommit(PprunnerPostgres):
    """The same with ``synchronous_commit=off`` for every connection, the producer's and
    the workers': a commit returns before its WAL reaches the disk. The default already
    commits a worker's claims and completions so; this adds the producer's enqueues
    (and a worker's failures and retries), what a user trades for it in
    docs/backends/postgres.md."""

    name = "pprunner-postgres-async-commit"

    def fresh_backend(self, workdir: Path) -> str:
        return f"{super().fresh_backend(workdir)}&options=-c%20synchronous_commit%3Doff"


class PprunnerPostgresBatch(PprunnerPostgres):
    """The same with ``batch=10`` in the URL (pgqueuer's default batch): a worker that
    keeps finishing tasks quickly claims up to ten at once and writes their completions
    together, one flushed commit a batch; durable, with the trades the docs page lists."""

    name = "pprunner-postgres-batch"

    def fresh_backend(self, workdir: Path) -> str:
        return f"{super().fresh_backend(workdir)}&batch=10"
