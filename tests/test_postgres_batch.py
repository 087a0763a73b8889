"""What only the PostgreSQL backend's ``batch=N`` does; what every backend's does is in
tests/test_batching.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import pprunner.batching
from pprunner import Status
from pprunner.invocation import ErrorInfo
from pprunner_plugins.postgres import PostgresBackend
from tests.test_batching import RESULT, queue, statuses
from tests.test_postgres import open_backend  # noqa: F401 - the fixture

pytestmark = [pytest.mark.postgres]


def test_a_batch_passes_over_one_it_may_not_take_ahead_to_those_after_it(
        open_backend: Callable[..., PostgresBackend],  # noqa: F811
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim picks its batch among the oldest due rows, leaving those that may not
    be claimed ahead for another claim (Redis's stops at the first of them)."""
    monkeypatch.setattr(pprunner.batching, "GROW_WITHIN", 3600.0)
    batched = open_backend(f"{postgres_url}&batch=4")
    rerouted, = queue(batched, 1)
    batched.claim("earlier", 0)
    batched.reroute("earlier", ErrorInfo("RunnerLost", "died"))
    fresh = queue(batched, 2)
    once, = queue(batched, 1, max_attempts=1)
    later = queue(batched, 1)
    batched._batch("w").size = 4
    assert batched.claim("w", 0).id == rerouted.id  # type: ignore[union-attr]
    assert batched.complete_and_claim(rerouted.id, "w", RESULT).id == fresh[0].id  # type: ignore[union-attr]
    assert statuses(batched, [*fresh, once, *later]) == [
        Status.RUNNING, Status.RUNNING, Status.PENDING, Status.RUNNING]
