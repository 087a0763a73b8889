"""``pprunner.Executor``: a ``concurrent.futures`` process pool that does not break.

A drop-in for :class:`concurrent.futures.ProcessPoolExecutor` where the two
overlap, run by pprunner's supervisor in push mode. What changes is what
happens when things go wrong: a worker that dies fails only the future it
held (:class:`~pprunner.errors.WorkerLost`, naming the signal or exit code),
or runs it again with ``on_worker_lost="retry"``, and the pool keeps serving;
a call past its hard ``time_limit`` fails with
:class:`~pprunner.errors.TimeLimitExceeded` and its worker is replaced. The
standard library's pool instead fails every pending future with
``BrokenProcessPool`` and is unusable afterwards.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from functools import partial
from typing import Any, Literal

from . import config as config_module
from .dispatch import Dispatcher
from .errors import RemoteTraceback, TimeLimitExceeded, WorkerLost
from .exitcodes import ExitCode
from .jobs import Call, Cancelled, Event, Failed, Finished, Lost, Started, TimedOut
from .supervisor import Supervisor

#: the start methods an ``mp_context`` may name
_START_METHODS = config_module.START_METHODS

#: executors whose workers are running (until their shutdown is done)
_running: weakref.WeakSet[Executor] = weakref.WeakSet()
#: set when the interpreter begins to exit: no submit is accepted after it
_interpreter_exiting = False


def _shut_down_at_exit() -> None:
    """Shut down every running executor, waiting for its calls, as the interpreter exits.

    A script may submit and never call ``shutdown()``: ``ProcessPoolExecutor``
    then runs the pending calls and lets the interpreter exit. Without this its
    idle workers would wait for calls forever while multiprocessing's own exit
    handler waits for them. Registered with threading's exit hooks (as the
    standard library's pools are), which run before ``atexit``'s.
    """
    global _interpreter_exiting
    _interpreter_exiting = True
    for executor in list(_running):
        executor.shutdown(wait=True)


def _forget_running_executors() -> None:
    """In a forked child (a worker started with fork): the parent's executors are
    not this process's to shut down, and their futures never end here."""
    _running.clear()


threading._register_atexit(_shut_down_at_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_forget_running_executors)


class BrokenExecutor(futures.BrokenExecutor):
    """No worker could be started (the initializer raised, or every worker died
    while booting for ``crash_loop_period``): the executor cannot run anything."""


class RemoteError(Exception):
    """Stands for a worker's exception that could not be pickled back; its
    message names the original type."""


class _Future(futures.Future[Any]):
    """A future whose ``cancel()`` withdraws the call from the supervisor's queue,
    and so succeeds only while no worker has started it."""

    def __init__(self, executor: Executor, call_id: str) -> None:
        super().__init__()
        self._executor = executor
        self._call_id = call_id
        self._withdrawn = threading.Lock()

    def cancel(self) -> bool:
        if self.done():
            return self.cancelled()
        if not self._executor._dispatcher.cancel(self._call_id):
            return False
        self._executor._futures.pop(self._call_id, None)
        self._withdraw()
        return True

    def _withdraw(self, error: BaseException | None = None) -> None:
        """End it unstarted: cancelled, or failed with ``error`` (a broken pool)."""
        with self._withdrawn:
            if self.done():
                return
            if error is not None:
                self.set_exception(error)
            elif super().cancel():
                self.set_running_or_notify_cancel()  # tells wait() and as_completed()


def _run_chunk(function: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [function(*args) for args in chunk]


def _run_cloudpickled(blob: bytes) -> Any:
    import cloudpickle

    function, args, kwargs = cloudpickle.loads(blob)
    return function(*args, **kwargs)


class Executor(futures.Executor):
    """Runs calls in ``max_workers`` persistent, supervised worker processes.

    The arguments ``ProcessPoolExecutor`` has mean the same here
    (``mp_context`` is another way to give the start method). pprunner's own:

    :param time_limit: seconds after which a call's worker is killed and its
        future fails with :class:`~pprunner.errors.TimeLimitExceeded`.
    :param soft_time_limit: seconds after which
        :class:`~pprunner.errors.SoftTimeLimitExceeded` is raised in the call.
    :param on_worker_lost: ``"raise"``: a call whose worker died fails with
        :class:`~pprunner.errors.WorkerLost`; ``"retry"``: it runs again, up
        to ``max_attempts`` starts in all.
    :param max_memory_per_child: recycle a worker whose resident memory after
        a call exceeds this many MiB.
    :param pickler: ``"pickle"`` (functions travel by reference, as with the
        standard library) or ``"cloudpickle"`` (lambdas and closures too).
    :param settings: any other pprunner setting (``boot_timeout``,
        ``crash_loop_period``, ``shutdown_timeout``, ``log_level``, ...).

    Workers start with the first ``submit``. Nothing is written to stderr
    unless something goes wrong (``log_level`` defaults to WARNING here).
    """

    def __init__(self, max_workers: int | None = None, mp_context: Any = None,
                 initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = (),
                 *, max_tasks_per_child: int | None = None, time_limit: float | None = None,
                 soft_time_limit: float | None = None,
                 on_worker_lost: Literal["raise", "retry"] = "raise",
                 max_attempts: int = 3, max_memory_per_child: int | None = None,
                 start_method: str | None = None,
                 pickler: Literal["pickle", "cloudpickle"] = "pickle",
                 **settings: Any) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        if on_worker_lost not in ("raise", "retry"):
            raise ValueError(f"on_worker_lost must be 'raise' or 'retry', not {on_worker_lost!r}")
        if pickler not in ("pickle", "cloudpickle"):
            raise ValueError(f"pickler must be 'pickle' or 'cloudpickle', not {pickler!r}")
        if pickler == "cloudpickle":
            import cloudpickle  # noqa: F401 - fail here, not in the first submit
        if mp_context is not None:
            start_method = mp_context.get_start_method()
        values = {"processes": max_workers, "start_method": start_method or "spawn",
                  "max_tasks_per_child": max_tasks_per_child or 0,
                  "max_memory_per_child": max_memory_per_child or 0,
                  "log_level": "WARNING", **settings}
        self._config = config_module.resolve([("Executor(...) arguments", values)])
        self._time_limit = time_limit
        self._soft_time_limit = soft_time_limit
        self._max_attempts = max_attempts if on_worker_lost == "retry" else 1
        self._cloudpickle = pickler == "cloudpickle"
        self._initializer = (None if initializer is None
                             else Call(initializer, tuple(initargs), name=_name(initializer)))
        # a future's state is set right where the supervisor hears the ending, as the
        # standard library's management thread does: a thread hand-off per call cost
        # about a third of the throughput
        self._dispatcher = Dispatcher(deliver="supervisor")
        self._supervisor: Supervisor | None = None
        self._futures: dict[str, _Future] = {}
        self._lock = threading.Lock()
        self._shutdown = False
        self._broken: str | None = None
        #: held while closing; ``_closed`` says it is done (a shutdown closes only once)
        self._closing = threading.Lock()
        self._closed = False

    # -- concurrent.futures.Executor ----------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        return self.submit_limited(fn, args, kwargs)

    def submit_limited(self, fn: Callable[..., Any], args: tuple[Any, ...] = (),
                       kwargs: dict[str, Any] | None = None, *, time_limit: float | None = None,
                       soft_time_limit: float | None = None) -> futures.Future[Any]:
        """``submit(fn, *args, **kwargs)`` with this call's own time limits (None: the
        executor's), for a host whose every task carries its own timeout (taskiq's
        ``timeout`` label)."""
        with self._lock:
            if self._broken:
                raise BrokenExecutor(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _interpreter_exiting:  # a new executor's workers would keep it from exiting
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            if self._supervisor is None:
                self._supervisor = Supervisor(dispatcher=self._dispatcher, config=self._config,
                                              initializer=self._initializer).start()
                _running.add(self)
            call = self._call(fn, args, kwargs or {}, time_limit or self._time_limit,
                              soft_time_limit or self._soft_time_limit)
            future = self._futures[call.id] = _Future(self, call.id)
        self._dispatcher.submit(call, self._notify)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        """Like the built-in ``map``, in the workers; ``chunksize`` items per call."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        arguments = zip(*iterables, strict=False)
        chunks = iter(lambda: list(itertools.islice(arguments, chunksize)), [])
        results = super().map(partial(_run_chunk, fn), chunks, timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = list(self._futures.values())
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            self._close()
        else:
            threading.Thread(target=self._close, name="pprunner-executor-shutdown").start()

    # -- internals ------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              time_limit: float | None, soft_time_limit: float | None) -> Call:
        name = _name(fn)
        if self._cloudpickle:
            import cloudpickle

            fn, args, kwargs = _run_cloudpickled, (cloudpickle.dumps((fn, args, kwargs)),), {}
        return Call(fn, args, kwargs, time_limit=time_limit,
                    soft_time_limit=soft_time_limit, max_attempts=self._max_attempts,
                    name=name)

    def _close(self) -> None:
        """Wait for every future, then stop the supervisor and the dispatcher thread.

        Once: ``shutdown`` may be called again (a ``with`` block after an explicit
        call, ``shutdown(wait=True)`` after ``wait=False``), and the later calls
        wait here for the first to finish, as with the standard library's pool.
        Closing twice would close descriptor numbers that may belong to someone
        else by then.
        """
        with self._closing:
            if self._closed:
                return
            futures.wait(list(self._futures.values()))
            if self._supervisor is not None:
                self._supervisor.stop()
            self._dispatcher.shutdown()
            self._closed = True
            _running.discard(self)

    def _notify(self, event: Event) -> None:
        """Turns the supervisor's events into future states (on the dispatcher thread)."""
        if isinstance(event, Started):
            future = self._futures[event.call.id]
            if not future.running():  # not so for a call run again after its worker died
                future.set_running_or_notify_cancel()
            return
        with self._lock:
            future = self._futures.pop(event.call.id)
        if isinstance(event, Finished):
            future.set_result(event.value)
        elif isinstance(event, Failed):
            error = event.error.exception or RemoteError(f"{event.error.type}: "
                                                          f"{event.error.message}")
            if event.error.traceback:
                error.__cause__ = RemoteTraceback(event.error.traceback)
            future.set_exception(error)
        elif isinstance(event, Lost):
            future.set_exception(WorkerLost(
                f"the worker (pid {event.pid}) running {event.call.name} {event.description}",
                pid=event.pid, exitcode=event.exitcode, signal=event.signal))
        elif isinstance(event, TimedOut):
            future.set_exception(TimeLimitExceeded(
                f"{event.call.name} exceeded its hard time limit of {event.limit:g} s; its "
                f"worker (pid {event.pid}) was killed and replaced"))
        elif isinstance(event, Cancelled):
            future._withdraw(self._broken_error(event))

    def _broken_error(self, event: Cancelled) -> BaseException | None:
        """Why a call the supervisor dropped failed, or None: it was cancelled."""
        supervisor = self._supervisor
        if supervisor is None or supervisor.exit_code in (ExitCode.OK, ExitCode.INTERRUPTED):
            return None
        self._broken = (f"the executor's workers cannot start: {supervisor.failure}"
                        if supervisor.failure else f"the executor stopped: {event.reason}")
        return BrokenExecutor(self._broken)

    def __repr__(self) -> str:
        return (f"<pprunner.Executor max_workers={self._config.processes} "
                f"outstanding={self._dispatcher.outstanding}>")


def _name(function: Callable[..., Any]) -> str:
    if isinstance(function, partial):
        return _name(function.func)
    return getattr(function, "__qualname__", type(function).__name__)
