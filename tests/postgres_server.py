"""A PostgreSQL for the tests: ``$PPRUNNER_POSTGRES_URL``, else the machine's own on
127.0.0.1:5432 (database ``test``). Each test gets a schema of its own, dropped after.
Without a server or psycopg the tests are skipped with the reason, which
``PPRUNNER_REQUIRE_POSTGRES=1`` (set by CI) turns into a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

SERVER = os.environ.get("PPRUNNER_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def skip_or_fail(reason: str) -> None:
    if os.environ.get("PPRUNNER_REQUIRE_POSTGRES", "") not in ("", "0"):
        pytest.fail(f"PPRUNNER_REQUIRE_POSTGRES is set but {reason}")
    pytest.skip(reason)


def admin_connection() -> Any:
    """A psycopg connection to the test server (autocommit), or a skip saying why not."""
    try:
        import psycopg
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install 'pprunner[postgres]')")
    try:
        return psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        skip_or_fail(f"no PostgreSQL at {SERVER}: {str(exc).strip()}")


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A backend URL with a schema of this test's own; the schema is dropped after."""
    schema = f"pprunner_test_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    admin = admin_connection()
    try:
        yield f"{SERVER}?schema={schema}"
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        admin.close()
