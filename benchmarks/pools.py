"""The process pools without a queue behind one small interface: the standard
library's two, and for ``python -m benchmarks executors`` loky's and
:class:`pprunner.Executor`.

Used in the benchmark process (latency, crash recovery, the executor
scenarios) and in :mod:`benchmarks.poolhost` (throughput, idle cost), which
must weigh what a bare pool weighs: standard library only, plus loky or
pprunner when that is the pool (imported only then). Each pool uses its own
default start method: ``fork`` for the standard library's on Linux before
Python 3.14, loky's ``loky`` (fork + exec), pprunner's ``spawn``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.pool
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any, Protocol

KINDS = ("pool", "executor", "loky", "pprunner", "pprunner-metrics")


def free_port() -> int:
    """A loopback port nobody listens on now (for a metrics endpoint)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Pending(Protocol):
    """A submitted call; :class:`concurrent.futures.Future` fits as it is."""

    def done(self) -> bool: ...
    def result(self, timeout: float | None = None) -> Any: ...
    def exception(self, timeout: float | None = None) -> BaseException | None: ...


class Pool(Protocol):
    def map(self, fn: Callable[[Any], Any], items: Iterable[Any],
            chunksize: int = 1) -> list[Any]:
        """``chunksize`` items per task; 1 (every item its own task) is what a queue does."""
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

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any],
            chunksize: int = 1) -> list[Any]:
        return self._pool.map(fn, items, chunksize=chunksize)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Pending:
        return _AsyncResult(self._pool.apply_async(fn, args))


class _Executor:
    """Any ``concurrent.futures.Executor``: their futures are Pending as they are."""

    def __init__(self, executor: futures.Executor) -> None:
        self._executor = executor

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any],
            chunksize: int = 1) -> list[Any]:
        return list(self._executor.map(fn, items, chunksize=chunksize))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Pending:
        return self._executor.submit(fn, *args)


@contextlib.contextmanager
def open_pool(kind: str, workers: int) -> Iterator[Pool]:
    """A pool of ``workers`` processes, each with its defaults otherwise, ended on
    exit whatever it is doing: ``multiprocessing.Pool`` ("pool"),
    ``ProcessPoolExecutor`` ("executor"), ``loky.ProcessPoolExecutor`` ("loky"),
    ``pprunner.Executor`` ("pprunner"), or that with its metrics endpoint on a free
    loopback port ("pprunner-metrics")."""
    if kind == "pool":
        pool = multiprocessing.Pool(workers)
        try:
            yield _MultiprocessingPool(pool)
        finally:
            pool.terminate()
            pool.join()
        return
    executor: futures.Executor
    if kind == "executor":
        executor = futures.ProcessPoolExecutor(max_workers=workers)
    elif kind == "loky":
        import loky

        executor = loky.ProcessPoolExecutor(max_workers=workers)
    elif kind in ("pprunner", "pprunner-metrics"):
        import pprunner

        metrics = {"metrics_port": f"127.0.0.1:{free_port()}"} if kind != "pprunner" else {}
        executor = pprunner.Executor(max_workers=workers, **metrics)
    else:
        raise ValueError(f"unknown pool kind {kind!r}; known: {', '.join(KINDS)}")
    try:
        yield _Executor(executor)
    finally:  # waits for a running task at most; a killed worker only breaks some pools
        if kind == "loky":  # no cancel_futures; kill_workers ends a running task at once
            executor.shutdown(wait=True, kill_workers=True)  # type: ignore[call-arg]
        else:
            executor.shutdown(wait=True, cancel_futures=True)
