"""Awaiting invocations on an asyncio event loop, without a thread per wait.

``await handle`` must not cost what a blocked thread costs: ten thousand
coroutines awaiting results on one loop are one loop. So every coroutine of a
loop that awaits an invocation of one backend shares one
:class:`EndingsWatcher`, made by :meth:`Backend.watch_endings
<pprunner.backend.Backend.watch_endings>`: it follows every invocation awaited
on that loop at once and resolves each awaiting future when its invocation
ends. A backend with an asynchronous route subclasses it (SQLite: its doorbell
socket as a reader of the loop; Redis: one ``redis.asyncio`` connection that
blocks for every waiter of the loop). Any other backend gets
:class:`ThreadedEndingsWatcher`: one helper thread per loop that waits for all
of them, never one thread per wait.

A watcher lives while something is awaited and closes itself (its socket, its
connection, its thread, its registrations) when the last waiter leaves, by
its result, its timeout or its cancellation, so a loop that stops awaiting
holds nothing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .backend import NOTIFIED_RECHECK, POLL_MAX, Backend, final_pauses
from .errors import ResultTimeout
from .invocation import Invocation

if TYPE_CHECKING:
    from .task import App

#: the open watchers, by backend and loop (each removes itself when it closes)
_watchers: dict[tuple[Backend, asyncio.AbstractEventLoop], EndingsWatcher] = {}


class EndingsWatcher:
    """Follows the invocations awaited on one event loop, for one backend.

    Subclasses implement :meth:`watch` (start following an id), :meth:`unwatch`
    (stop: every waiter of it left before it ended) and :meth:`release` (give up
    what the watcher holds); they call :meth:`ended` with invocations that ended.
    All of it runs on the loop's thread.
    """

    def __init__(self, backend: Backend, loop: asyncio.AbstractEventLoop) -> None:
        self.backend = backend
        self.loop = loop
        #: invocation id -> the futures of the coroutines awaiting it
        self._futures: dict[str, set[asyncio.Future[Invocation]]] = {}

    @property
    def awaited(self) -> list[str]:
        """The ids some coroutine of this loop awaits now."""
        return list(self._futures)

    async def wait(self, invocation_id: str, timeout: float | None) -> Invocation:
        """The invocation once it has ended; ResultTimeout after ``timeout`` seconds."""
        future: asyncio.Future[Invocation] = self.loop.create_future()
        followed = invocation_id in self._futures
        self._futures.setdefault(invocation_id, set()).add(future)
        expiry = None if timeout is None else self.loop.call_later(
            max(timeout, 0.0), _expire, future,
            ResultTimeout(f"invocation {invocation_id} has not ended after {timeout} s"))
        try:
            if not followed:
                self.watch(invocation_id)
            return await future
        finally:
            if expiry is not None:
                expiry.cancel()
            self._leave(invocation_id, future)

    def ended(self, invocations: Iterable[Invocation]) -> None:
        """Resolve the waiters of these (ended or unknown) invocations."""
        for invocation in invocations:
            for future in self._futures.pop(invocation.id, ()):
                if not future.done():
                    future.set_result(invocation)

    def failed(self, invocation_id: str, error: BaseException) -> None:
        """Raise ``error`` in the waiters of ``invocation_id`` (it could not be read)."""
        for future in self._futures.pop(invocation_id, ()):
            if not future.done():
                future.set_exception(error)

    def _leave(self, invocation_id: str, future: asyncio.Future[Invocation]) -> None:
        futures = self._futures.get(invocation_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._futures[invocation_id]
                self.unwatch(invocation_id)
        if not self._futures:
            self.close()

    def close(self) -> None:
        """Give up everything held (nothing is awaited any more); the next wait opens anew."""
        if _watchers.get((self.backend, self.loop)) is self:
            del _watchers[(self.backend, self.loop)]
            self.release()

    # -- what a backend's watcher implements -------------------------------------------

    def watch(self, invocation_id: str) -> None:
        raise NotImplementedError

    def unwatch(self, invocation_id: str) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


def _expire(future: asyncio.Future[Invocation], error: ResultTimeout) -> None:
    if not future.done():
        future.set_exception(error)


def watcher_for(backend: Backend) -> EndingsWatcher:
    """The running loop's watcher for ``backend``, opened on first use."""
    loop = asyncio.get_running_loop()
    watcher = _watchers.get((backend, loop))
    if watcher is None:
        watcher = _watchers[(backend, loop)] = backend.watch_endings(loop)
    return watcher


class ThreadedEndingsWatcher(EndingsWatcher):
    """For a backend without an asynchronous route: one helper thread per loop.

    The thread waits for every awaited id at once with the backend's own
    blocking :meth:`~pprunner.backend.Backend.wait_any`, in pauses of at most
    :data:`~pprunner.backend.POLL_MAX` so an id awaited meanwhile is looked at
    soon, and hands what ended to the loop.
    """

    def __init__(self, backend: Backend, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(backend, loop)
        self._lock = threading.Lock()
        #: the ids the thread follows (the loop's ``awaited``, kept for the thread)
        self._ids: set[str] = set()
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="pprunner-endings",
                                        daemon=True)
        self._thread.start()

    def watch(self, invocation_id: str) -> None:
        with self._lock:
            self._ids.add(invocation_id)
        self._changed.set()

    def unwatch(self, invocation_id: str) -> None:
        with self._lock:
            self._ids.discard(invocation_id)

    def release(self) -> None:
        self._stop.set()
        self._changed.set()

    def _follow(self) -> None:
        pauses = final_pauses(self.backend)
        while not self._stop.is_set():
            self._changed.clear()
            with self._lock:
                ids = list(self._ids)
            current = []
            for invocation_id in ids:
                try:
                    current.append(self.backend.get(invocation_id))
                except Exception as exc:  # an unknown id: its waiters hear it, as sync ones do
                    self._hand_over([invocation_id], self.failed, invocation_id, exc)
            ended = [invocation for invocation in current if invocation.status.is_final]
            if ended:
                self._hand_over([invocation.id for invocation in ended], self.ended, ended)
                pauses = final_pauses(self.backend)
            pending = [invocation.id for invocation in current
                       if not invocation.status.is_final]
            if pending:
                self.backend.wait_any(pending, min(next(pauses), POLL_MAX))
            else:
                self._changed.wait(NOTIFIED_RECHECK)

    def _hand_over(self, ids: list[str], deliver: Callable[..., None], *args: Any) -> None:
        """Stop following ``ids`` and have the loop ``deliver(*args)`` to their waiters."""
        with self._lock:
            self._ids.difference_update(ids)
        try:
            self.loop.call_soon_threadsafe(deliver, *args)
        except RuntimeError:  # the loop closed: nobody is left to tell
            self._stop.set()


async def wait_async(app: App, invocation_ids: Sequence[str], timeout: float | None = None,
                     strategy: str | None = None) -> list[Invocation]:
    """Await until every one of ``invocation_ids`` has ended; return them, in order.

    Inside a running task this goes through the pause-on-wait hook (see
    :func:`pprunner.worker_loop.wait_in_task`); outside, it awaits the loop's
    watcher. Raises ResultTimeout when ``timeout`` runs out first.
    """
    from .worker import current_context  # a worker-only concern, imported late

    context = current_context()
    if context is not None and context.invocation is not None:
        from .worker_loop import wait_in_task

        return await wait_in_task(context, invocation_ids, timeout, strategy)
    return await awaited(app.backend, invocation_ids, timeout)


async def awaited(backend: Backend, invocation_ids: Sequence[str],
                  timeout: float | None) -> list[Invocation]:
    """Every invocation once ended, through the running loop's watcher."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    done = []
    for invocation_id in invocation_ids:  # a watcher closes when idle: ask each time
        left = None if deadline is None else deadline - loop.time()
        done.append(await watcher_for(backend).wait(invocation_id, left))
    return done
