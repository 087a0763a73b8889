"""``pprunner.Executor`` against the standard library's executor tests.

Modelled on CPython's ``Lib/test/test_concurrent_futures/`` (executor.py,
test_process_pool.py, test_shutdown.py, test_wait.py, test_as_completed.py):
where the two executors overlap, a test runs on both ``pprunner.Executor``
and ``ProcessPoolExecutor`` (ids ``pprunner`` and ``stdlib``), so a
divergence in results, exception types or messages shows as one failing id.
What only pprunner promises (a queued call waits in the parent, errors that
do not pickle) is tested on it alone. Faults with real processes are in
``test_executor_faults.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    ProcessPoolExecutor,
    as_completed,
    wait,
)
from typing import Any

import pytest

import pprunner
from pprunner import Executor
from pprunner.executor import RemoteError
from tests import executor_calls as calls
from tests.conftest import Gates

#: every wait on a future is bounded by this
TIMEOUT = 30
MiB = 2**20
POOLS = [pytest.param(Executor, id="pprunner"), pytest.param(ProcessPoolExecutor, id="stdlib")]
slow = pytest.mark.slow

#: a module-level lambda: pickle cannot find it by name
unpicklable_function = lambda: None  # noqa: E731


def spawn_pool(cls: Any) -> Any:
    return cls(max_workers=2, mp_context=multiprocessing.get_context("spawn"))


@pytest.fixture(scope="module", params=POOLS)
def pool(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One executor of each kind for the whole module: the cases here leave it idle."""
    with spawn_pool(request.param) as executor:
        yield executor


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    """The module's pprunner executor, for what only pprunner promises."""
    with Executor(max_workers=2) as executor:
        yield executor


def is_pprunner(pool: Any) -> bool:
    return isinstance(pool, Executor)


# ---------------------------------------------------------------------------
# construction and misuse: the same exceptions, with the same messages
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", POOLS)
@pytest.mark.parametrize("max_workers", [0, -1])
def test_max_workers_must_be_positive(cls: Any, max_workers: int) -> None:
    with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
        cls(max_workers=max_workers)


@pytest.mark.parametrize("cls", POOLS)
@pytest.mark.parametrize(("value", "error", "message"), [
    ("2", TypeError, "^max_tasks_per_child must be an integer$"),
    (1.5, TypeError, "^max_tasks_per_child must be an integer$"),
    (0, ValueError, "^max_tasks_per_child must be >= 1$"),
    (-3, ValueError, "^max_tasks_per_child must be >= 1$"),
])
def test_max_tasks_per_child_validation(cls: Any, value: Any, error: type[Exception],
                                        message: str) -> None:
    with pytest.raises(error, match=message):
        cls(max_workers=2, max_tasks_per_child=value)


@pytest.mark.parametrize("cls", POOLS)
def test_initializer_must_be_callable(cls: Any) -> None:
    with pytest.raises(TypeError, match=r"^initializer must be a callable$"):
        cls(max_workers=2, initializer=42)


@pytest.mark.parametrize("cls", POOLS)
def test_map_chunksize_must_be_positive(cls: Any, new_executor: Any) -> None:
    pool = new_executor(cls)
    with pytest.raises(ValueError, match=r"^chunksize must be >= 1\.$"):
        pool.map(calls.mul, [1], [2], chunksize=0)


@pytest.mark.parametrize("cls", POOLS)
def test_submit_after_shutdown(cls: Any) -> None:
    pool = cls(max_workers=2)
    pool.shutdown()
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        pool.submit(calls.mul, 2, 3)
    pool.shutdown()  # again: nothing happens


def test_pprunner_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="on_worker_lost must be 'raise' or 'retry'"):
        Executor(on_worker_lost="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pickler must be 'pickle' or 'cloudpickle'"):
        Executor(pickler="dill")  # type: ignore[arg-type]


def test_broken_executor_is_the_standard_one() -> None:
    assert issubclass(pprunner.executor.BrokenExecutor, futures.BrokenExecutor)


# ---------------------------------------------------------------------------
# submit and map (executor.py, test_process_pool.py)
# ---------------------------------------------------------------------------


@slow
def test_submit(pool: Any) -> None:
    future = pool.submit(pow, 2, 8)
    assert future.result(timeout=TIMEOUT) == 256


@slow
def test_submit_keyword(pool: Any) -> None:
    future = pool.submit(calls.echo, 1, 2, key="value", other=None)
    assert future.result(timeout=TIMEOUT) == ((1, 2), {"key": "value", "other": None})


@slow
def test_none_result(pool: Any) -> None:
    future = pool.submit(calls.return_none)
    assert future.result(timeout=TIMEOUT) is None
    assert future.exception(timeout=TIMEOUT) is None


@slow
def test_large_arguments_and_results(pool: Any) -> None:
    blob = bytes(range(256)) * (4 * MiB // 256)
    assert pool.submit(calls.length, blob).result(timeout=TIMEOUT) == len(blob)
    result = pool.submit(calls.make_bytes, 4 * MiB).result(timeout=TIMEOUT)
    assert len(result) == 4 * MiB


@slow
def test_map_keeps_the_order(pool: Any) -> None:
    assert list(pool.map(calls.mul, range(20), range(20), timeout=TIMEOUT)) == \
        [x * x for x in range(20)]


@slow
def test_map_stops_at_the_shortest_iterable(pool: Any) -> None:
    assert list(pool.map(calls.mul, range(10), [2, 3, 4], timeout=TIMEOUT)) == [0, 3, 8]


@slow
@pytest.mark.parametrize("chunksize", [2, 3, 7, 50])
def test_map_chunksize(pool: Any, chunksize: int) -> None:
    """10 items in chunks of 3 or 7 end with a partial chunk; 50 is one short chunk."""
    assert list(pool.map(calls.mul, range(10), range(10), chunksize=chunksize,
                         timeout=TIMEOUT)) == [x * x for x in range(10)]


@slow
def test_map_of_nothing(pool: Any) -> None:
    assert list(pool.map(calls.mul, [], [], chunksize=4)) == []


@slow
@pytest.mark.parametrize(("chunksize", "before"), [(1, [0, 10, 20]), (2, [0, 10])])
def test_map_exception_is_raised_when_its_item_is_reached(pool: Any, chunksize: int,
                                                          before: list[int]) -> None:
    """The results before the failing item (its chunk) come out first."""
    results = pool.map(calls.fail_on_three, range(6), chunksize=chunksize, timeout=TIMEOUT)
    got = [next(results) for _ in before]
    assert got == before
    with pytest.raises(ValueError, match=r"^cannot take 3$"):
        next(results)


@slow
def test_map_timeout(pool: Any, gates: Gates) -> None:
    """The iterator raises TimeoutError when an item is not there in time."""
    gates.names.add("map-held")
    results = pool.map(calls.hold, [str(gates.directory)], ["map-held"], timeout=0.2)
    with pytest.raises(TimeoutError):
        list(results)
    gates.release()
    assert pool.submit(calls.mul, 2, 3).result(timeout=TIMEOUT) == 6


@slow
def test_exception_keeps_its_type_with_the_worker_traceback(pool: Any) -> None:
    """test_process_pool.test_traceback: the worker's traceback is the cause."""
    future = pool.submit(calls.raise_runtime_error)
    with pytest.raises(RuntimeError) as raised:
        future.result(timeout=TIMEOUT)
    assert type(raised.value) is RuntimeError
    assert raised.value.args == (123,)
    cause = raised.value.__cause__
    assert cause is not None
    assert "raise RuntimeError(123)  # the line the worker traceback must show" in str(cause)
    assert "executor_calls.py" in str(cause)


@slow
@pytest.mark.parametrize("function", [unpicklable_function, calls.echo])
def test_a_call_that_does_not_pickle_fails_alone(pool: Any, function: Any) -> None:
    """The function or an argument cannot be pickled: that future fails with the
    pickling error, and the executor goes on serving."""
    future = pool.submit(function, threading.Lock())
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        future.result(timeout=TIMEOUT)
    assert pool.submit(calls.mul, 6, 7).result(timeout=TIMEOUT) == 42


# ---------------------------------------------------------------------------
# what does not pickle on the way back (pprunner: a clear error; the standard
# pool breaks on an exception it cannot rebuild)
# ---------------------------------------------------------------------------


@slow
def test_exception_that_cannot_be_rebuilt(executor: Executor) -> None:
    future = executor.submit(calls.raise_unpicklable)
    with pytest.raises(RemoteError, match="UnpicklableError: carries a code") as raised:
        future.result(timeout=TIMEOUT)
    assert 'raise UnpicklableError("carries a code", 7)' in str(raised.value.__cause__)
    assert executor.submit(calls.mul, 2, 5).result(timeout=TIMEOUT) == 10


@slow
def test_result_that_cannot_be_pickled(executor: Executor) -> None:
    future = executor.submit(calls.return_lock)
    with pytest.raises(RemoteError, match=r"TypeError: the result of .*return_lock.* cannot "
                                          r"be sent back: cannot pickle '_thread.lock'"):
        future.result(timeout=TIMEOUT)
    assert executor.submit(calls.mul, 2, 5).result(timeout=TIMEOUT) == 10


@slow
def test_result_that_cannot_be_unpickled(executor: Executor) -> None:
    """It pickles in the worker but fails to load in the parent: that call fails,
    not the supervisor."""
    future = executor.submit(calls.return_loads_badly)
    with pytest.raises(RemoteError, match=r"ValueError: the result of return_loads_badly "
                                          r"cannot be unpickled"):
        future.result(timeout=TIMEOUT)
    assert executor.submit(calls.mul, 2, 5).result(timeout=TIMEOUT) == 10


# ---------------------------------------------------------------------------
# cancel (test_future.py, executor.py)
# ---------------------------------------------------------------------------


@slow
def test_cancel_a_queued_future(pool: Any, gates: Gates) -> None:
    """Both workers busy: a queued future cancels, runs its callbacks and counts as
    done for wait() and as_completed(); a running one does not cancel.

    ProcessPoolExecutor moves up to max_workers + 1 calls into its call queue,
    where they count as running: the last of five queued ones is cancellable on
    both. It also tells wait() and as_completed() of a cancel only when it
    dequeues the call; pprunner at once."""
    running = [gates.hold(pool, f"busy-{i}", value=i) for i in range(2)]
    gates.wait_started("busy-0", "busy-1")
    queued = [pool.submit(calls.mul, i, 2) for i in range(5)]
    last = queued[-1]
    called: list[futures.Future[Any]] = []
    last.add_done_callback(called.append)

    assert last.cancel()
    assert last.cancelled() and last.done() and not last.running()
    assert called == [last]
    assert last.cancel()  # again: still cancelled
    with pytest.raises(futures.CancelledError):
        last.result(timeout=0)
    if is_pprunner(pool):  # the standard pool tells wait() only once it dequeues the call
        done, not_done = wait([last, running[0]], timeout=0)
        assert done == {last} and not_done == {running[0]}
        assert list(as_completed([last], timeout=0)) == [last]

    assert running[0].running()
    assert not running[0].cancel()
    assert not running[0].cancelled()

    gates.release()
    assert [f.result(timeout=TIMEOUT) for f in running] == [0, 1]
    assert [f.result(timeout=TIMEOUT) for f in queued[:-1]] == [0, 2, 4, 6]
    assert wait([last], timeout=TIMEOUT).done == {last}
    assert list(as_completed([last], timeout=TIMEOUT)) == [last]


@slow
def test_every_queued_call_waits_in_the_parent(executor: Executor, gates: Gates) -> None:
    """pprunner: no call is handed to a worker before it is idle, so the first
    queued one cancels too (and is not 'running')."""
    running = [gates.hold(executor, f"busy-{i}") for i in range(2)]
    gates.wait_started("busy-0", "busy-1")
    first = executor.submit(calls.mul, 3, 3)
    assert not first.running()
    assert first.cancel()
    gates.release()
    for future in running:
        future.result(timeout=TIMEOUT)


@slow
def test_done_callback_sees_the_result(pool: Any) -> None:
    seen = threading.Event()
    results: list[Any] = []

    def callback(future: futures.Future[Any]) -> None:
        results.append(future.result())
        seen.set()

    pool.submit(calls.mul, 3, 4).add_done_callback(callback)
    assert seen.wait(TIMEOUT)
    assert results == [12]


# ---------------------------------------------------------------------------
# wait and as_completed (test_wait.py, test_as_completed.py)
# ---------------------------------------------------------------------------


@slow
def test_wait_first_completed(pool: Any, gates: Gates) -> None:
    held = gates.hold(pool, "first-completed")
    quick = pool.submit(calls.mul, 2, 2)
    done, not_done = wait([held, quick], timeout=TIMEOUT, return_when=FIRST_COMPLETED)
    assert done == {quick} and not_done == {held}
    gates.release()
    held.result(timeout=TIMEOUT)


@slow
def test_wait_first_exception(pool: Any, gates: Gates) -> None:
    held = gates.hold(pool, "first-exception")
    gates.wait_started("first-exception")
    quick = pool.submit(calls.mul, 2, 2)
    failing = pool.submit(calls.fail_on_three, 3)
    done, not_done = wait([held, quick, failing], timeout=TIMEOUT,
                          return_when=FIRST_EXCEPTION)
    assert failing in done and held in not_done
    assert isinstance(failing.exception(timeout=0), ValueError)
    gates.release()
    held.result(timeout=TIMEOUT)


@slow
def test_wait_all_completed(pool: Any) -> None:
    fs = [pool.submit(calls.mul, i, i) for i in range(6)] + \
        [pool.submit(calls.fail_on_three, 3)]
    done, not_done = wait(fs, timeout=TIMEOUT, return_when=ALL_COMPLETED)
    assert done == set(fs) and not_done == set()


@slow
def test_wait_timeout(pool: Any, gates: Gates) -> None:
    held = gates.hold(pool, "wait-timeout")
    quick = pool.submit(calls.mul, 1, 1)
    quick.result(timeout=TIMEOUT)
    done, not_done = wait([held, quick], timeout=0.1, return_when=ALL_COMPLETED)
    assert done == {quick} and not_done == {held}
    gates.release()
    held.result(timeout=TIMEOUT)


@slow
def test_as_completed(pool: Any) -> None:
    fs = {pool.submit(calls.mul, i, 10): i for i in range(8)}
    assert sorted(f.result() for f in as_completed(fs, timeout=TIMEOUT)) == \
        [i * 10 for i in range(8)]


@slow
def test_as_completed_timeout(pool: Any, gates: Gates) -> None:
    held = gates.hold(pool, "as-completed")
    quick = pool.submit(calls.mul, 1, 1)
    yielded = []
    with pytest.raises(TimeoutError, match=r"^1 \(of 2\) futures unfinished$"):
        for future in as_completed([held, quick], timeout=0.3):
            yielded.append(future)
    assert yielded == [quick]
    gates.release()
    held.result(timeout=TIMEOUT)


# ---------------------------------------------------------------------------
# shutdown (test_shutdown.py)
# ---------------------------------------------------------------------------


@slow
@pytest.mark.parametrize("cls", POOLS)
def test_context_manager_waits(cls: Any) -> None:
    with spawn_pool(cls) as pool:
        fs = [pool.submit(calls.mul, i, 2) for i in range(4)]
    assert all(f.done() for f in fs)
    assert [f.result(timeout=0) for f in fs] == [0, 2, 4, 6]
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        pool.submit(calls.mul, 1, 1)


@slow
@pytest.mark.parametrize("cls", POOLS)
def test_shutdown_cancel_futures(cls: Any, new_executor: Any, gates: Gates) -> None:
    """Queued calls are cancelled, running ones finish. The standard pool cannot
    cancel the calls already in its call queue (they run): only pprunner
    cancels every queued one."""
    pool = new_executor(cls, mp_context=multiprocessing.get_context("spawn"))
    running = [gates.hold(pool, f"busy-{i}", value=i) for i in range(2)]
    gates.wait_started("busy-0", "busy-1")
    queued = [pool.submit(calls.mul, i, 2) for i in range(8)]
    pool.shutdown(wait=False, cancel_futures=True)
    if is_pprunner(pool):  # at once; the standard pool cancels in its manager thread
        assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        pool.submit(calls.mul, 1, 1)
    gates.release()
    assert [f.result(timeout=TIMEOUT) for f in running] == [0, 1]
    pool.shutdown(wait=True)
    assert queued[-1].cancelled()
    # the standard pool may leave one it had already queued "running" for good (seen on
    # a loaded machine); pprunner ends every one
    for future in queued if is_pprunner(pool) else ():
        assert future.done()
        assert future.cancelled() or future.exception(timeout=0) is None


@slow
@pytest.mark.parametrize("cls", POOLS)
def test_shutdown_without_wait(cls: Any, new_executor: Any, gates: Gates) -> None:
    """shutdown(wait=False) returns while a call still runs, and the work completes."""
    pool = new_executor(cls, mp_context=multiprocessing.get_context("spawn"))
    held = gates.hold(pool, "no-wait", value="done")
    gates.wait_started("no-wait")
    queued = [pool.submit(calls.mul, i, 3) for i in range(4)]
    pool.shutdown(wait=False)
    assert not held.done()  # it returned without waiting for it
    gates.release()
    assert held.result(timeout=TIMEOUT) == "done"
    assert [f.result(timeout=TIMEOUT) for f in queued] == [0, 3, 6, 9]
    pool.shutdown(wait=True)  # waits for the first shutdown to finish


@slow
def test_shutdown_again_leaves_other_descriptors_alone(new_executor: Any) -> None:
    """A second shutdown (a ``with`` block after an explicit one) neither closes nor
    writes to the descriptor numbers the first one freed, which the process
    may have reused by then."""
    executor = new_executor()
    assert executor.submit(calls.mul, 1, 1).result(timeout=TIMEOUT) == 1
    executor.shutdown()
    pipes = [os.pipe() for _ in range(16)]  # likely to take the numbers it freed
    try:
        for read, _ in pipes:
            os.set_blocking(read, False)
        executor.shutdown()
        for read, write in pipes:
            os.fstat(write)  # still open
            with pytest.raises(BlockingIOError):  # and nothing was written to it
                os.read(read, 1)
    finally:
        for ends in pipes:
            for fd in ends:
                os.close(fd)
