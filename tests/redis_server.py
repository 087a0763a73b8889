"""A Redis for the tests: a private ``redis-server`` when the binary exists,
else ``$PPRUNNER_REDIS_URL``, else a skip with the reason — which
``PPRUNNER_REQUIRE_REDIS=1`` (set by CI) turns into a failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import redis

from pprunner.testing.redis_servers import (  # noqa: F401 - the tests import them from here
    ClusterGroup,
    PrivateRedis,
    SentinelGroup,
    free_port,
)


def skip_or_fail(reason: str) -> None:
    if os.environ.get("PPRUNNER_REQUIRE_REDIS", "") not in ("", "0"):
        pytest.fail(f"PPRUNNER_REQUIRE_REDIS is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Redis the whole session shares (each test has its own prefix)."""
    if shutil.which("redis-server"):
        server = PrivateRedis(tmp_path_factory.mktemp("redis"))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
    elif os.environ.get("PPRUNNER_REDIS_URL"):
        yield os.environ["PPRUNNER_REDIS_URL"]
    else:
        skip_or_fail("no redis-server binary on PATH and PPRUNNER_REDIS_URL is not set")


@pytest.fixture
def redis_url(redis_base: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A backend URL with a key prefix of this test's own; its keys are deleted after."""
    prefix = f"pprunner-test-{os.getpid()}-{abs(hash(request.node.nodeid)) % 10**8}"
    yield f"{redis_base}?prefix={prefix}"
    client = redis.Redis.from_url(redis_base)
    for key in client.scan_iter(f"{prefix}:*", count=500):
        client.delete(key)
    client.close()


def database_url(base: str, number: int) -> str:
    """Database ``number`` of the server at ``base`` (a URL of :func:`redis_base`)."""
    return base.split("?")[0].rsplit("/", 1)[0] + f"/{number}"
