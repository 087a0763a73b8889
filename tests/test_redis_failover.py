"""Redis deployed for failover: Sentinel (a master, a replica, three sentinels) and
a client the user built; each started by the test from the machine's redis-server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pprunner import App, BackendError, Status, Supervisor, gather
from pprunner.testing.backend_contract import make_invocation
from pprunner_plugins.redis import RedisBackend
from tests import apps
from tests.conftest import wait_until
from tests.redis_server import SentinelGroup, skip_or_fail

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    if not shutil.which("redis-server"):
        skip_or_fail("no redis-server binary to start a Sentinel group with")
    group = SentinelGroup(tmp_path)
    try:
        group.start()
        wait_until(group.ready, timeout=30, what="the replica and the sentinels to be ready")
        yield group
    finally:
        group.stop()


def test_a_master_killed_mid_run_fails_over_and_loses_nothing(
        app: App, sentinels: SentinelGroup) -> None:
    """500 tasks; the master is SIGKILLed while they run and while the producer
    still enqueues. Sentinel promotes the replica; every process finds it through
    the sentinels, and every invocation ends SUCCESS.

    Replication is asynchronous, so a change the master acknowledged may be missing
    on the replica it promotes: a lost claim would run again, a lost enqueue would
    be gone. Each change waits for the replica (WAIT, ``wait_replicas=1``, the
    default for Sentinel) before it counts, so no invocation may run twice here."""
    app.configure(source="the test", backend=f"{sentinels.url}?prefix=failover")
    first = [apps.whoami_slowly.enqueue(0.005) for _ in range(250)]
    old_master = sentinels.master.port
    with Supervisor(app, processes=2):
        wait_until(lambda: app.backend.counts()[Status.SUCCESS] >= 50, what="progress")
        assert redis.Redis(port=old_master).exists("failover:seq")  # the master, found
        sentinels.master.kill()
        rest = [apps.whoami_slowly.enqueue(0.005) for _ in range(250)]
        gather(first + rest, timeout=90)
    assert sentinels.master_port() != old_master
    invocations = [h.invocation() for h in first + rest]
    assert len({i.id for i in invocations}) == 500
    assert {i.status for i in invocations} == {Status.SUCCESS}
    ran_twice = [i for i in invocations if i.attempts > 1]
    assert ran_twice == [], [i.history for i in ran_twice]


def test_a_sentinel_url_without_a_master_name_is_refused() -> None:
    with pytest.raises(BackendError, match="names the master"):
        RedisBackend("redis+sentinel://127.0.0.1:26379")


# -- a client the user built -------------------------------------------------------------

#: what ``redis+client://tests.test_redis_failover:users_client`` imports (set per test)
users_client = None


def test_a_client_the_user_built_is_used(redis_base: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pool = redis.ConnectionPool.from_url(redis_base)
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "users_client", lambda: pool)
    backend = RedisBackend(f"redis+client://{__name__}:users_client?prefix=users-client")
    try:
        assert backend.client.connection_pool is pool
        backend.enqueue(invocation := make_invocation())
        claimed = backend.claim("r", 0)
        assert claimed is not None and claimed.id == invocation.id
    finally:
        redis.Redis.from_url(redis_base).delete(*backend.client.keys("users-client:*"))
        backend.close()


def test_a_client_that_decodes_replies_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "users_client",
                        redis.Redis(decode_responses=True))
    with pytest.raises(BackendError, match="decode_responses=True"):
        RedisBackend(f"redis+client://{__name__}:users_client")
