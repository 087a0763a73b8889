"""``batch=N`` on every backend that offers it (Redis, PostgreSQL): claims ahead and
completions written together, and what a worker gives back (pprunner/batching.py).
What only one backend does is tested beside it (tests/test_redis_batch.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pprunner.batching
from pprunner import App, Status, Supervisor, gather
from pprunner.invocation import ErrorInfo, Invocation
from pprunner.testing.backend_contract import make_invocation
from tests import apps, apps_waiting

RESULT = b"1"

#: the stores with batches, each with the marker that skips it where it is missing
STORES = [pytest.param("redis", marks=pytest.mark.redis),
          pytest.param("postgres", marks=pytest.mark.postgres)]

Opener = Callable[..., Any]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest) -> str:
    """A backend URL of this test's own (a key prefix, a schema) on each store."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def open_backend(store_url: str, app: App) -> Iterator[Opener]:
    """Backends on the test's store (``query`` added to its URL), as separate processes
    would open them; closed after."""
    registry = app.plugins.registry
    with contextlib.ExitStack() as opened:
        yield lambda query="": opened.enter_context(
            contextlib.closing(registry.backend_for(f"{store_url}{query}")))


@pytest.fixture
def batched(open_backend: Opener, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A worker's backend with ``batch=4`` whose batches always count as quick, so they
    grow 1, 2, 4 whatever the machine's load."""
    monkeypatch.setattr(pprunner.batching, "GROW_WITHIN", 3600.0)
    return open_backend("&batch=4")


def queue(backend: Any, count: int, max_attempts: int = 3) -> list[Invocation]:
    invocations = [make_invocation(max_attempts=max_attempts) for _ in range(count)]
    for invocation in invocations:
        backend.enqueue(invocation)
    return invocations


def statuses(backend: Any, invocations: list[Invocation]) -> list[Status]:
    return [backend.get(i.id).status for i in invocations]


def test_a_batch_grows_and_writes_its_completions_with_the_next_claim(
        batched: Any, open_backend: Opener) -> None:
    other = open_backend()
    queued = queue(other, 10)
    first = batched.claim("w", 0)
    assert first is not None and first.id == queued[0].id
    assert statuses(other, queued[1:3]) == [Status.PENDING] * 2  # the first claim takes one
    second = batched.complete_and_claim(queued[0].id, "w", RESULT)  # writes, claims 2
    assert second is not None and second.id == queued[1].id
    assert statuses(other, queued[:4]) == [Status.SUCCESS, Status.RUNNING, Status.RUNNING,
                                           Status.PENDING]
    third = batched.complete_and_claim(queued[1].id, "w", RESULT)  # from the batch: no write
    assert third is not None and third.id == queued[2].id
    assert other.get(queued[1].id).status is Status.RUNNING
    fourth = batched.complete_and_claim(queued[2].id, "w", RESULT)  # writes 2, claims 4
    assert fourth is not None and fourth.id == queued[3].id
    assert statuses(other, queued[1:3]) == [Status.SUCCESS] * 2
    assert other.get(queued[1].id).result == RESULT
    assert {other.get(i.id).owner for i in queued[3:7]} == {"w"}
    assert other.owned_by(["w"]) == [other.get(i.id) for i in queued[3:7]]
    assert other.counts()[Status.RUNNING] == 4 and other.counts()[Status.SUCCESS] == 3
    taken = other.claim("another", 0)
    assert taken is not None and taken.id == queued[7].id, "a claim skips another's batch"


def test_a_hand_back_writes_what_is_finished_and_returns_what_is_ahead_unattempted(
        batched: Any) -> None:
    queued = queue(batched, 4)
    batched.claim("w", 0)
    batched.complete_and_claim(queued[0].id, "w", RESULT)  # claims 1 and 2
    batched.complete_and_claim(queued[1].id, "w", RESULT)  # 1 finished, unwritten
    batched.reroute("w", None)  # the worker stops: it hands back
    assert statuses(batched, queued) == [Status.SUCCESS, Status.SUCCESS, Status.PENDING,
                                         Status.PENDING]
    handed_back = batched.get(queued[2].id)
    assert (handed_back.owner, handed_back.attempts, handed_back.started_at) == (None, 0, None)
    assert batched.owned_by(["w"]) == []
    assert [batched.claim("next", 0).id for _ in range(2)] == [
        queued[2].id, queued[3].id], "handed back to the head of the queue, in order"


def test_a_task_that_waits_gives_back_what_its_worker_claimed_ahead(batched: Any) -> None:
    """Else it could wait for an invocation its own worker holds and will never start."""
    queued = queue(batched, 3)
    batched.claim("w", 0)
    batched.complete_and_claim(queued[0].id, "w", RESULT)  # claims 1 and 2
    batched.pause(queued[1].id, "w", [queued[2].id])
    assert statuses(batched, queued) == [Status.SUCCESS, Status.PAUSED, Status.PENDING]
    assert batched.get(queued[2].id).attempts == 0
    claimed = batched.claim_one_of("w", [queued[2].id])
    assert claimed is not None and claimed.id == queued[2].id


def test_only_tasks_never_attempted_and_allowed_another_attempt_are_claimed_ahead(
        batched: Any) -> None:
    rerouted, = queue(batched, 1)
    batched.claim("earlier", 0)
    batched.reroute("earlier", ErrorInfo("RunnerLost", "died"))  # attempts 1, PENDING
    fresh = queue(batched, 2)
    once, = queue(batched, 1, max_attempts=1)
    queue(batched, 1)
    batched._batch("w").size = 4
    assert batched.claim("w", 0).id == rerouted.id
    assert statuses(batched, fresh) == [Status.PENDING] * 2, "taken ahead of a rerouted one"
    assert batched.complete_and_claim(rerouted.id, "w", RESULT).id == fresh[0].id
    assert statuses(batched, [*fresh, once]) == [Status.RUNNING, Status.RUNNING,
                                                Status.PENDING]
    assert batched.claim("another", 0).id == once.id


def test_a_dead_workers_batch_is_rerouted_with_an_attempt_counted(
        batched: Any, open_backend: Opener) -> None:
    """The documented trade: the supervisor cannot tell what the dead worker had started."""
    queued = queue(batched, 3)
    batched.claim("w", 0)
    batched.complete_and_claim(queued[0].id, "w", RESULT)  # claims 1 and 2; 1 runs
    rerouted = open_backend().reroute("w", ErrorInfo("RunnerLost", "SIGKILL"))
    assert [i.id for i in rerouted] == [queued[1].id, queued[2].id]
    assert {(i.status, i.attempts) for i in rerouted} == {(Status.PENDING, 1)}


def test_a_batch_of_slow_tasks_gives_back_what_is_ahead_and_starts_over(
        batched: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    queued = queue(batched, 4)
    batched._batch("w").size = 4
    assert batched.claim("w", 0).id == queued[0].id
    monkeypatch.setattr(pprunner.batching, "GROW_WITHIN", 0.0)  # now: slow
    claimed = batched.complete_and_claim(queued[0].id, "w", RESULT)
    assert claimed is not None and claimed.id == queued[1].id  # given back, claimed alone
    assert statuses(batched, queued) == [Status.SUCCESS, Status.RUNNING, Status.PENDING,
                                         Status.PENDING]
    assert {batched.get(i.id).attempts for i in queued[2:]} == {0}
    assert batched.claim("idle", 0) is not None and batched.claim("idle", 0) is not None
    batched._batch("idle").size = 4
    assert batched.claim("idle", 0) is None
    assert batched._batch("idle").size == 1, "an idle worker's batches start over"


def test_a_parent_that_ran_its_child_keeps_its_own_start(batched: Any) -> None:
    parent, = queue(batched, 1)
    claimed = batched.claim("w", 0)
    assert claimed is not None and claimed.started_at is not None
    child, = queue(batched, 1)
    batched.pause(parent.id, "w", [child.id])
    assert batched.claim_one_of("w", [child.id]) is not None  # run nested, by the parent
    batched.complete(child.id, "w", RESULT)
    batched.resume(parent.id, "w")
    batched.complete_and_claim(parent.id, "w", RESULT)
    assert batched.get(parent.id).started_at == claimed.started_at


@pytest.mark.slow
def test_a_pool_drains_in_batches_each_task_once(app: App, store_url: str) -> None:
    app.configure(source="the test", backend=f"{store_url}&batch=16")
    handles = [apps.add.enqueue(n, 1) for n in range(300)]
    with Supervisor(app, processes=2):
        assert gather(handles, timeout=120) == [n + 1 for n in range(300)]
    invocations = [h.invocation() for h in handles]
    assert {(i.status, i.attempts) for i in invocations} == {(Status.SUCCESS, 1)}
    assert all(i.started_at is not None and i.finished_at is not None
               and i.started_at <= i.finished_at for i in invocations)
    assert app.backend.counts()[Status.SUCCESS] == 300


@pytest.mark.slow
def test_tasks_that_wait_for_tasks_do_not_deadlock_in_batches(
        app: App, store_url: str, supervise: Callable[..., Supervisor]) -> None:
    """Children enqueued together are claimed in batches; a parent that waits gives
    back what its worker holds ahead, so no child waits behind its own parent."""
    app.configure(source="the test", backend=f"{store_url}&batch=16")
    supervise(processes=2)
    assert apps_waiting.fan_out.enqueue(4, "nested").result(timeout=60) == 31
