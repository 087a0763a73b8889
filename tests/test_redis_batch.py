"""What only the Redis backend's ``batch=N`` does (pprunner_plugins/redis/scripts.py);
what every backend's does is in tests/test_batching.py."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

import pytest

import pprunner.batching
from pprunner import App, ConfigError, Status, gather
from pprunner.invocation import RunnerInfo
from pprunner.testing.backend_contract import make_invocation
from pprunner_plugins.redis import RedisBackend
from tests import apps
from tests.conftest import cli_env, wait_until
from tests.redis_server import PrivateRedis
from tests.test_batching import (  # noqa: F401 - the fixtures
    RESULT,
    Opener,
    batched,
    open_backend,
    queue,
    statuses,
)
from tests.test_redis import (  # noqa: F401 - own_redis: the fixture
    HOST_COMMAND,
    host,
    lose,
    lose_the_first_reply,
    own_redis,
)

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






@pytest.mark.parametrize(("query", "most"), [("", 11.0), ("&batch=16", 7.5)])
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


def frozen_holding_ahead(backend: RedisBackend, pids: list[int],
                         runners: list[RunnerInfo]) -> set[str]:
    """SIGSTOP ``pids`` and look: when one of ``runners`` owns 2 or more invocations
    (work claimed ahead, held still), the ids all of them own; else an empty set, and
    the processes go on (SIGCONT)."""
    stopped = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a worker that exited since
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
    held = [{i.id for i in backend.owned_by([r.id])} for r in runners if r.pid in stopped]
    if max(map(len, held), default=0) >= 2:
        return set().union(*held)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return set()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_then_a_supervisor_killed_holding_work_claimed_ahead_lose_nothing(
        app: App, redis_url: str, cli_process: Any) -> None:
    """``batch=16`` on two hosts. Host a's worker is SIGKILLed while it holds invocations
    claimed ahead: its supervisor reroutes them at once. Then host a's whole process
    group is SIGKILLed while one of its workers holds some: host b recovers them after
    ``dead_after``. Every invocation ends SUCCESS with one outcome, and only what the
    dead held ran again (a ``RunnerLost``, or a ``WorkerDied`` for what the killed
    worker was running, in its history per loss)."""
    url = f"{redis_url}&batch=16"
    app.configure(source="the test", backend=url)
    handles = [apps.whoami_slowly.enqueue(0.002) for _ in range(3000)]
    env = cli_env(url, PPRUNNER_DEAD_AFTER="2", PPRUNNER_HEARTBEAT_INTERVAL="0.2")
    backend = app.backend
    assert isinstance(backend, RedisBackend)

    def workers_of_a() -> list[RunnerInfo]:
        return [r for r in backend.runners() if r.host == "host-a" and r.kind.value == "worker"]

    def one_worker_frozen() -> tuple[RunnerInfo, set[str]] | None:
        for worker in workers_of_a():
            held = frozen_holding_ahead(backend, [worker.pid], [worker])
            if held:
                return worker, held
        return None

    with host("host-a", env) as host_a:
        worker, lost_by_worker = wait_until(
            one_worker_frozen, timeout=60, what="a worker of host a holding work claimed ahead")
        os.kill(worker.pid, signal.SIGKILL)
        cli_process(*HOST_COMMAND[3:], env={**env, "PPRUNNER_HOST": "host-b"})
        lost_by_host = wait_until(lambda: frozen_holding_ahead(
            backend, [host_a.pid, *(r.pid for r in workers_of_a())], workers_of_a()),
            timeout=60, what="host a, frozen, holding work claimed ahead")
        lose(host_a)
        gather(handles, timeout=120)
    invocations = [h.invocation() for h in handles]
    assert {i.status for i in invocations} == {Status.SUCCESS}
    assert backend.counts()[Status.SUCCESS] == len(handles)
    again = {i.id: i for i in invocations if i.attempts > 1}
    assert lost_by_worker | lost_by_host <= set(again)
    # one loss each: the invocation a worker ran when it died is a WorkerDied (its supervisor
    # knew it), what was claimed ahead, or held by the dead host, a RunnerLost
    assert all({e.type for e in i.history} <= {"RunnerLost", "WorkerDied"} and
               len(i.history) == i.attempts - 1 for i in again.values())
    # besides what they held: at most what host a's two workers, frozen, had finished
    # without writing it yet (their batches of at most 16)
    assert len(again) <= len(lost_by_worker | lost_by_host) + 2 * 16
