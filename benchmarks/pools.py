"""The standard library's process pools behind one small interface.

Used in the benchmark process (latency, crash recovery) and in
:mod:`benchmarks.poolhost` (throughput, idle cost), which must weigh what a
bare pool weighs: standard library only. Both pools use the platform's
default start method.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.pool
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

KINDS = ("pool", "executor")


class Pending(Protocol):
    """A submitted call; :class:`concurrent.futures.Future` fits as it is."""

    def done(self) -> bool: ...
    def result(self, timeout: float | None = None) -> Any: ...
    def exception(self, timeout: float | None = None) -> BaseException | None: ...


class Pool(Protocol):
    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """Every item as its own task (chunksize=1), like a queue's messages."""
    def submit(self, fn: Callable[..., Any], *args: Any) -> Pending: ...


class _AsyncResult:
    """multiprocessing's AsyncResult as a Pending."""

    def __init__(self, result: multiprocessing.pool.AsyncResult[Any]) -> None:
        self._result = result

    def done(self) -> bool:
        return self._result.ready()

    def result(self, timeout: float | None = None) -> Any:
        return self._result.get(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self._result.get(timeout)
        except Exception as exc:
            return exc
        return None


class _MultiprocessingPool:
    def __init__(self, pool: multiprocessing.pool.Pool) -> None:
        self._pool = pool

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return self._pool.map(fn, items, chunksize=1)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Pending:
        return _AsyncResult(self._pool.apply_async(fn, args))


class _Executor:
    def __init__(self, executor: ProcessPoolExecutor) -> None:
        self._executor = executor

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return list(self._executor.map(fn, items, chunksize=1))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Pending:
        return self._executor.submit(fn, *args)


@contextlib.contextmanager
def open_pool(kind: str, workers: int) -> Iterator[Pool]:
    """A ``multiprocessing.Pool`` ("pool") or ``ProcessPoolExecutor`` ("executor")
    of ``workers`` processes, ended on exit whatever it is doing."""
    if kind == "pool":
        pool = multiprocessing.Pool(workers)
        try:
            yield _MultiprocessingPool(pool)
        finally:
            pool.terminate()
            pool.join()
    elif kind == "executor":
        executor = ProcessPoolExecutor(max_workers=workers)
        try:
            yield _Executor(executor)
        finally:  # waits for a running task at most; a killed worker only breaks the pool
            executor.shutdown(wait=True, cancel_futures=True)
    else:
        raise ValueError(f"unknown pool kind {kind!r}; known: {', '.join(KINDS)}")
