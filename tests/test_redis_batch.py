"""What only the Redis backend's ``batch=N`` does (pprunner_plugins/redis/scripts.py);
what every backend's does is in tests/test_batching.py."""

from __future__ import annotations

from typing import Any

import pytest

import pprunner.batching
from pprunner import ConfigError, Status
from pprunner.testing.backend_contract import make_invocation
from pprunner_plugins.redis import RedisBackend
from tests.redis_server import PrivateRedis
from tests.test_batching import (  # noqa: F401 - the fixtures
    RESULT,
    Opener,
    batched,
    open_backend,
    queue,
    statuses,
)
from tests.test_redis import lose_the_first_reply, own_redis  # noqa: F401 - the fixture

pytestmark = [pytest.mark.redis]


@pytest.fixture
def store_url(redis_url: str) -> str:
    """test_batching's fixtures, on Redis only."""
    return redis_url


@pytest.mark.parametrize("batch", ["0", "1001", "many"])
def test_a_bad_batch_is_refused_with_the_range(redis_url: str, batch: str) -> None:
    with pytest.raises(ConfigError, match="a whole number from 1 to 1000"):
        RedisBackend(f"{redis_url}&batch={batch}")












def test_a_batched_claim_sent_again_after_a_lost_reply_is_the_same_claim(
        batched: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The lost send claimed several: the resend hands back all of them, none stranded."""
    queued = queue(batched, 3)
    batched._batch("w").size = 3
    lose_the_first_reply(batched, monkeypatch, "CLAIM")
    assert batched.claim("w", 0).id == queued[0].id  # type: ignore[union-attr]
    assert [batched.claim("w", 0).id for _ in range(2)] == [  # type: ignore[union-attr]
        queued[1].id, queued[2].id]
    assert {(i.status, i.attempts) for i in map(batched.get, (i.id for i in queued))} == {
        (Status.RUNNING, 1)}


def test_a_refused_completion_in_a_batch_is_logged_and_the_rest_are_written(
        batched: Any, open_backend: Opener,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    queued = queue(batched, 4)
    batched.claim("w", 0)
    batched.complete_and_claim(queued[0].id, "w", RESULT)  # claims 1 and 2
    batched.complete_and_claim(queued[1].id, "w", RESULT)  # 1 finished, unwritten
    other = open_backend()
    other.client.hset(f"{other.prefix}:inv:{queued[1].id}", "owner", "thief")
    assert batched.complete_and_claim(queued[2].id, "w", RESULT).id == queued[3].id  # type: ignore[union-attr]
    assert statuses(other, queued[1:3]) == [Status.RUNNING, Status.SUCCESS]
    assert "outcome refused" in caplog.text and queued[1].id in caplog.text






@pytest.mark.parametrize(("query", "most"), [("", 15.0), ("&batch=16", 8.0)])
def test_what_a_task_costs_redis_in_commands(own_redis: PrivateRedis,  # noqa: F811
                                             monkeypatch: pytest.MonkeyPatch, query: str,
                                             most: float) -> None:
    """Issue 28's budget, as ``python -m benchmarks redis_cost`` counts it (every command
    the server runs, the scripts' own included), for 1,000 tasks enqueued, then drained
    by one runner: a guard against a change that adds a command to every task."""
    monkeypatch.setattr(pprunner.batching, "GROW_WITHIN", 3600.0)  # batches always grow
    tasks = 1_000
    backend = RedisBackend(f"{own_redis.url}?prefix=cost{query}")
    client = own_redis.client()
    try:
        backend.enqueue(first := make_invocation())  # the server checked, scripts loaded
        backend.claim("w", 0)
        assert backend.complete_and_claim(first.id, "w", RESULT) is None
        client.config_resetstat()
        for _ in range(tasks):
            backend.enqueue(make_invocation())
        claimed = backend.claim("w", 0)
        while claimed is not None:
            claimed = backend.complete_and_claim(claimed.id, "w", RESULT)
        commands = sum(stats["calls"] for stats in client.info("commandstats").values())
        assert backend.counts()[Status.SUCCESS] == tasks + 1
    finally:
        backend.close()
        client.close()
    assert round(commands / tasks, 1) <= most  # to a tenth, as the benchmark prints it



