"""Redis deployed for failover: Sentinel (a master, a replica, three sentinels), a
Redis Cluster (three masters, three replicas), each started by the tests from the
machine's redis-server; and a client the user built."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pprunner import App, BackendError, Status, Supervisor, gather
from pprunner.backend import Backend
from pprunner.testing import BackendContract
from pprunner.testing.backend_contract import make_invocation
from pprunner_plugins.redis import RedisBackend
from tests import apps
from tests.conftest import wait_until
from tests.redis_server import ClusterGroup, SentinelGroup, skip_or_fail

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def started(group: SentinelGroup | ClusterGroup) -> Iterator[SentinelGroup | ClusterGroup]:
    """``group`` started and ready for a failover; every process of it reaped after."""
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        skip_or_fail(f"no redis-server or redis-cli binary to start a {type(group).__name__}")
    try:
        group.start()
        wait_until(group.ready, timeout=30, what="the replicas to be ready for a failover")
        yield group
    finally:
        group.stop()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    yield from started(SentinelGroup(tmp_path))  # type: ignore[misc]


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ClusterGroup]:
    """A cluster this test may break."""
    yield from started(ClusterGroup(tmp_path))  # type: ignore[misc]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterGroup]:
    """A cluster the module's tests share, each with namespaces of its own."""
    yield from started(ClusterGroup(tmp_path_factory.mktemp("cluster")))  # type: ignore[misc]


#: a namespace of its own for each test that uses the shared cluster
namespaces = itertools.count()


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
        assert redis.Redis(port=old_master).exists("failover:ended")  # the master, found
        sentinels.master.kill()
        rest = [apps.whoami_slowly.enqueue(0.005) for _ in range(250)]
        gather(first + rest, timeout=90)
    assert sentinels.master_port() != old_master
    invocations = [h.invocation() for h in first + rest]
    assert len({i.id for i in invocations}) == 500
    assert {i.status for i in invocations} == {Status.SUCCESS}
    ran_twice = [i for i in invocations if i.attempts > 1]
    assert ran_twice == [], [i.history for i in ran_twice]


def test_a_cluster_master_killed_mid_run_fails_over_and_loses_nothing(
        app: App, own_cluster: ClusterGroup) -> None:
    """As under Sentinel, on a cluster: the master that serves the namespace's slot
    is SIGKILLed mid-run, the cluster promotes its replica, and the backend finds
    the slot's new master; every invocation ends SUCCESS, none runs twice."""
    app.configure(source="the test", backend=f"{own_cluster.url}?prefix=failover")
    first = [apps.whoami_slowly.enqueue(0.005) for _ in range(250)]
    doomed = own_cluster.master_of("{failover}")
    with Supervisor(app, processes=2):
        wait_until(lambda: app.backend.counts()[Status.SUCCESS] >= 50, what="progress")
        assert redis.Redis(port=doomed.port).exists("{failover}:ended")
        doomed.kill()
        rest = [apps.whoami_slowly.enqueue(0.005) for _ in range(250)]
        gather(first + rest, timeout=90)
    assert own_cluster.master_of("{failover}") is not doomed
    invocations = [h.invocation() for h in first + rest]
    assert {i.status for i in invocations} == {Status.SUCCESS}
    ran_twice = [i for i in invocations if i.attempts > 1]
    assert ran_twice == [], [i.history for i in ran_twice]


def test_each_namespace_lives_in_one_slot_and_namespaces_spread(cluster: ClusterGroup) -> None:
    """Every key of a namespace carries its hash tag, so its scripts run on one node;
    different namespaces land on different masters."""
    prefixes = [f"spread-{next(namespaces)}" for _ in range(6)]
    for prefix in prefixes:
        backend = RedisBackend(f"{cluster.url}?prefix={prefix}")
        try:
            backend.enqueue(invocation := make_invocation())
            assert backend.claim("r", 0) is not None
            backend.complete(invocation.id, "r", b"1")
            master = cluster.master_of(f"{{{prefix}}}")
            on_master = redis.Redis(port=master.port, decode_responses=True)
            keys = set(on_master.keys(f"{{{prefix}}}:*"))
            tag = f"{{{prefix}}}"
            assert keys == {f"{tag}:inv:{invocation.id}", f"{tag}:ended",
                            f"{tag}:claimers"}  # all of them, on the slot's master
        finally:
            backend.close()
    assert len({cluster.master_of(f"{{{p}}}").port for p in prefixes}) >= 2


@pytest.mark.redis
class TestRedisClusterBackend(BackendContract):
    """The whole backend contract, on a namespace of a three-master cluster."""

    @pytest.fixture
    def backend(self, cluster: ClusterGroup) -> Iterator[Backend]:
        backend = RedisBackend(f"{cluster.url}?prefix=contract-{next(namespaces)}")
        yield backend
        backend.close()


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


def test_a_sentinel_url_takes_the_rediss_options_and_the_sentinels_own_password() -> None:
    from redis.sentinel import SentinelManagedSSLConnection

    from pprunner_plugins.redis.connect import connect

    connection = connect("rediss+sentinel://:master-pw@s1:26380,[::1]:26381/svc/3"
                         "?sentinel_password=sentinel-pw&ssl_cert_reqs=none&prefix=app",
                         redis, socket_timeout=7.0)
    pool = connection.client.connection_pool
    master = pool.connection_kwargs
    assert (master["password"], master["db"], master["ssl_cert_reqs"], master["socket_timeout"]) \
        == ("master-pw", 3, "none", 7.0)
    assert pool.connection_class is SentinelManagedSSLConnection
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"], s["password"], s["ssl_cert_reqs"]) for s in sentinels] == \
        [("s1", 26380, "sentinel-pw", "none"), ("::1", 26381, "sentinel-pw", "none")]
    assert (connection.prefix, connection.wait_replicas) == ("app", 1)
