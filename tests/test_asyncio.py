"""pprunner's asyncio face: await handles with no thread per wait (SQLite, Redis, the
helper-thread fallback), async def tasks on one loop per worker, awaits inside them,
timeouts, cancellation, and pprunner.Executor under loop.run_in_executor."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pprunner
from pprunner import App, ResultTimeout, Status, TaskFailed, UnknownInvocation
from pprunner.awaiting import ThreadedEndingsWatcher, _watchers
from tests import apps_async
from tests.conftest import on_fresh_store, wait_until

BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, db_url: str) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return db_url


@pytest.fixture
def app(backend_url: str) -> Iterator[App]:
    """The coroutine tasks' app (the ``supervise`` fixture runs it) on its own store."""
    with on_fresh_store(apps_async.app, backend_url):
        yield apps_async.app


def complete(app: App, value: Any) -> None:
    """Play a worker: claim the next invocation and store ``value`` as its result."""
    backend = app.backend
    invocation = wait_until(lambda: backend.claim("test-runner", 0.1), what="a claim")
    backend.complete(invocation.id, "test-runner", app.codec.encode_result(invocation, value))


def endings_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pprunner-endings"]


@pytest.mark.slow
def test_async_tasks_run_by_a_supervisor_and_awaited_with_no_thread(app: App,
                                                                    supervise) -> None:
    supervise(processes=2)

    async def main() -> tuple[list[int], int, int]:
        handles = [await apps_async.double.enqueue_async(i) for i in range(50)]
        threads_before = threading.active_count()  # (an enqueue may use the executor)
        results = asyncio.gather(*handles)
        await asyncio.sleep(0)  # every await has begun
        return await results, threads_before, threading.active_count()

    results, threads_before, threads_while_awaiting = asyncio.run(main())
    assert results == [2 * i for i in range(50)]
    assert threads_while_awaiting == threads_before
    assert not _watchers


@pytest.mark.slow
def test_one_event_loop_per_worker_serves_every_async_task(app: App, supervise) -> None:
    supervise(processes=1)
    places = {tuple(apps_async.where_am_i.enqueue().result(timeout=30)) for _ in range(5)}
    assert len(places) == 1


@pytest.mark.slow
@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "gather"])
def test_an_async_task_awaiting_others_on_one_worker_does_not_deadlock(
        app: App, supervise, together: bool) -> None:
    """Three parents on one worker: the nested strategy runs the awaited coroutine
    children inside the waiting one, so no parent holds the only slot forever."""
    supervise(processes=1)
    parents = [apps_async.sum_of_doubles.enqueue(6, together) for _ in range(3)]
    assert pprunner.gather(parents, timeout=60) == [30, 30, 30]
    assert app.backend.counts()[Status.PAUSED] == 0


@pytest.mark.slow
def test_an_await_inside_a_task_times_out_with_result_timeout(app: App, supervise,
                                                              tmp_path: Path) -> None:
    supervise(processes=1)
    release = tmp_path / "release"
    try:
        outcome = apps_async.impatient.enqueue(str(release)).result(timeout=60)
    finally:
        release.touch()
    assert outcome == "ResultTimeout is TimeoutError: True"


@pytest.mark.slow
def test_an_async_task_s_error_fails_it(app: App, supervise) -> None:
    supervise(processes=1)

    async def main() -> None:
        await apps_async.fails.enqueue()

    with pytest.raises(TaskFailed, match="the coroutine broke"):
        asyncio.run(main())


def test_await_times_out_and_then_gets_the_result(app: App) -> None:
    async def main() -> tuple[bool, int]:
        handle = await apps_async.double.enqueue_async(1)
        with pytest.raises(ResultTimeout) as timeout:
            await handle.result_async(timeout=0.05)
        late = asyncio.get_running_loop().run_in_executor(None, complete, app, 42)
        result = await handle
        await late
        return isinstance(timeout.value, TimeoutError), result  # asyncio's, on 3.11+

    assert asyncio.run(main()) == (True, 42)
    assert not _watchers


def test_an_unknown_id_raises_as_the_sync_api_does(app: App) -> None:
    with pytest.raises(UnknownInvocation):
        asyncio.run(app.handle("nothing-like-it").result_async(timeout=5))


def test_cancelling_an_awaiting_coroutine_leaves_nothing_behind(app: App,
                                                                backend_url: str) -> None:
    on_sqlite = backend_url.startswith("sqlite")
    registrations = sqlite_registrations if on_sqlite else redis_registrations

    async def main() -> None:
        handle = await apps_async.double.enqueue_async(1)
        waiting = asyncio.ensure_future(handle.result_async())
        await wait_until_async(lambda: registrations(app) == 1)
        assert len(_watchers) == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not _watchers
        await wait_until_async(lambda: registrations(app) == 0)

    asyncio.run(main())
    if on_sqlite:
        backend: Any = app.backend
        assert list(backend.endings.folder.glob("loop-*")) == []
    else:
        assert_no_redis_connection_left(app)


async def wait_until_async(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """A bounded poll on the loop (the store is another process's to change)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def sqlite_registrations(app: App) -> int:
    backend: Any = app.backend
    with sqlite3.connect(backend.path) as db:
        return int(db.execute("SELECT COUNT(*) FROM waiters").fetchone()[0])


def redis_registrations(app: App) -> int:
    backend: Any = app.backend
    return sum(backend.client.scard(key)
               for key in backend.client.scan_iter(f"{backend.prefix}:waiters:*"))


def assert_no_redis_connection_left(app: App) -> None:
    backend: Any = app.backend
    client = backend.client
    wait_until(lambda: not [c for c in client.client_list() if c.get("cmd") == "blpop"],
               what="the loop's connection to close")
    assert list(client.scan_iter(f"{backend.prefix}:wake:*")) == []


def test_backends_without_an_async_route_share_one_helper_thread_per_loop() -> None:
    memory = App("memory://", name="memory-async")
    task = memory.task(apps_async.double.function, name="double")

    async def main() -> tuple[list[int], int, bool]:
        handles = [task.enqueue() for _ in range(20)]
        awaiting = asyncio.gather(*handles)
        await asyncio.sleep(0.05)
        helpers = len(endings_threads())
        threaded = isinstance(next(iter(_watchers.values())), ThreadedEndingsWatcher)
        for value in range(20):
            await asyncio.get_running_loop().run_in_executor(None, complete, memory, value)
        return sorted(await awaiting), helpers, threaded

    try:
        results, helpers, threaded = asyncio.run(main())
    finally:
        memory.close()
    assert (results, helpers, threaded) == (list(range(20)), 1, True)
    wait_until(lambda: not endings_threads(), what="the helper thread to end")


def test_the_executor_under_run_in_executor(new_executor: Callable[..., Any]) -> None:
    from tests.executor_calls import mul, pid

    executor = new_executor(max_workers=2)

    async def main() -> tuple[list[float], int]:
        loop = asyncio.get_running_loop()
        products = await asyncio.gather(
            *(loop.run_in_executor(executor, mul, i, i) for i in range(10)))
        return list(products), await loop.run_in_executor(executor, pid)

    products, worker_pid = asyncio.run(main())
    assert products == [i * i for i in range(10)]
    assert worker_pid != os.getpid()


def test_the_public_names() -> None:
    assert callable(pprunner.Handle.result_async)
    assert callable(pprunner.Task.enqueue_async)


@pytest.fixture
def sqlite_app(db_url: str) -> Iterator[App]:
    with on_fresh_store(apps_async.app, db_url):
        yield apps_async.app


def test_a_loop_whose_socket_overflowed_still_hears_every_ending(
        sqlite_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """More endings than a datagram socket queues, while the loop is busy: the rings
    past the queue's length are dropped, and the loop reads what ended instead."""
    from pprunner_plugins import _sqlite_endings

    app = sqlite_app

    monkeypatch.setattr(_sqlite_endings, "NOTIFIED_RECHECK", 3600.0)  # no periodic look
    backend: Any = app.backend
    reads_of_endings = []
    monkeypatch.setattr(backend, "ids_ended_since",
                        lambda since: reads_of_endings.append(since)
                        or type(backend).ids_ended_since(backend, since))
    many = 4 * max(_sqlite_endings.queue_limit(), 10)

    async def main() -> list[int]:
        handles = [await apps_async.double.enqueue_async(i) for i in range(many)]
        results = asyncio.gather(*handles)
        await wait_until_async(lambda: sqlite_registrations(app) == many)
        for value in range(many):  # the loop reads nothing meanwhile: its socket fills
            complete(app, value)
        return list(await results)

    assert sorted(asyncio.run(main())) == list(range(many))
    assert reads_of_endings


@pytest.mark.slow
def test_a_soft_time_limit_ends_an_awaiting_coroutine_task(app: App, supervise) -> None:
    supervise(processes=1)
    with pytest.raises(TaskFailed) as failure:
        apps_async.oversleeps.enqueue().result(timeout=30)
    assert failure.value.remote_type.endswith("SoftTimeLimitExceeded")
    # the worker's loop is reused afterwards: nothing of the cancelled task is left on it
    assert apps_async.double.enqueue(4).result(timeout=30) == 8


@pytest.mark.slow
def test_what_a_coroutine_task_leaves_running_is_cancelled_before_its_end_is_told(
        app: App, supervise, tmp_path: Path) -> None:
    supervise(processes=1)
    marker = tmp_path / "lingering"
    assert apps_async.leaves_a_task_behind.enqueue(str(marker)).result(timeout=30) == "returned"
    assert marker.read_text() == "cancelled"
