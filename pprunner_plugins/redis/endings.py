"""``await handle`` on Redis: one ``redis.asyncio`` connection per loop blocks for all
its waiters.

The synchronous wait registers a token of its own with the invocations it
waits for and blocks on that token's list (see ``scripts.WATCH_ENDING``). A
loop's waiters share one token instead: every id awaited on the loop is
registered under it (ids awaited during one turn of the loop in one
pipeline), and the script that ends one pushes its id to the token's list,
on which one connection blocks (``BLPOP``) for the whole loop. What it pops
(with whatever else is queued there) is read in one pipeline and handed to
the waiters. Ten thousand waiters are two connections: this one and the one
that registers them.

Registrations last ``WAITER_TTL``; the loop renews those still awaited every
``RENEW`` seconds, which also finds any ending whose announcement was lost.
Registrations of ids nobody awaits any more are removed as they go; those
of a loop that stops mid-way expire, and so does the token's list.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pprunner.awaiting import EndingsWatcher
from pprunner.backend import missing

from . import BLOCK_MAX, WAITER_TTL
from .records import invocation_from

if TYPE_CHECKING:
    from . import RedisBackend

#: seconds between renewals of a loop's registrations (well under WAITER_TTL)
RENEW = 10.0
#: the most ids one read takes from the token's list after the BLPOP that woke it
DRAIN = 1000


class RedisEndingsWatcher(EndingsWatcher):
    """Two ``redis.asyncio`` connections, used as the backend's own are (commands
    packed together, replies read in order): one blocks on the loop's token's list,
    the other sends registrations and reads."""

    backend: RedisBackend

    def __init__(self, backend: RedisBackend, loop: asyncio.AbstractEventLoop,
                 listener: Any, commands: Any) -> None:
        super().__init__(backend, loop)
        self.token = f"loop-{os.urandom(8).hex()}"
        self._wake = backend._key("wake", self.token)
        self._listener = listener
        self._commands = commands
        #: one batch of commands on ``_commands`` at a time (replies come back in order)
        self._commands_lock = asyncio.Lock()
        self._script_sha, self._script = backend._scripts["WATCH_ENDING"]
        self._to_watch: list[str] = []
        self._to_unwatch: list[str] = []
        self._flushing: asyncio.Task[None] | None = None
        self._serving = loop.create_task(self._serve())

    def watch(self, invocation_id: str) -> None:
        self._to_watch.append(invocation_id)
        self._flush_soon()

    def unwatch(self, invocation_id: str) -> None:
        if invocation_id in self._to_watch:
            self._to_watch.remove(invocation_id)
        else:
            self._to_unwatch.append(invocation_id)
            self._flush_soon()

    def release(self) -> None:
        self._serving.cancel()

    def _flush_soon(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = self.loop.create_task(self._flush())

    async def _send(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Commands sent together on the commands connection (one batch at a time)."""
        async with self._commands_lock:
            return await _exchange(self._commands, commands, self.backend._redis.ResponseError)

    async def _flush(self) -> None:
        """Send the registrations (and removals) asked for since the last flush."""
        while self._to_watch or self._to_unwatch:
            watch, self._to_watch = self._to_watch, []
            unwatch, self._to_unwatch = self._to_unwatch, []
            prefix = self.backend.prefix
            commands: list[tuple[Any, ...]] = [("SCRIPT", "LOAD", self._script)] if watch else []
            commands += [("EVALSHA", self._script_sha, 1, prefix, prefix, self.token,
                          WAITER_TTL, invocation_id) for invocation_id in watch]
            commands += [("SREM", self.backend._key("waiters", invocation_id), self.token)
                         for invocation_id in unwatch]
            try:
                replies = await self._send(*commands)
            except Exception as exc:  # Redis failed: the waiters hear it, as sync ones do
                for invocation_id in watch:
                    self.failed(invocation_id, exc)
                continue
            await self._deliver([i for i, ended in zip(watch, replies[1:], strict=False)
                                 if ended == 1])

    async def _deliver(self, invocation_ids: list[str]) -> None:
        """Read the awaited ones of these (ended or unknown) and resolve their waiters."""
        awaited = self._awaited_among(invocation_ids)
        if awaited:
            self._resolve(awaited, await self._send(*map(self._read, awaited)))

    def _awaited_among(self, invocation_ids: list[str]) -> list[str]:
        return [i for i in dict.fromkeys(invocation_ids) if i in self._futures]

    def _read(self, invocation_id: str) -> tuple[Any, ...]:
        return ("HGETALL", self.backend._key("inv", invocation_id))

    def _resolve(self, invocation_ids: list[str], records: list[Any]) -> None:
        for invocation_id, raw in zip(invocation_ids, records, strict=True):
            if raw:
                self.ended([invocation_from(_as_dict(raw))])
            else:
                self.failed(invocation_id, missing(invocation_id))

    async def _serve(self) -> None:
        """Block on the token's list for the loop's life; renew its registrations.

        What ended is read on this connection too, free once woken, so a renewal
        under way on the other never holds a result up: the first id's record
        comes in the round trip that takes whatever else is queued.
        """
        renew_at = time.monotonic() + RENEW
        listener, refused = self._listener, self.backend._redis.ResponseError
        try:
            while True:
                (popped,) = await _exchange(listener, [("BLPOP", self._wake, BLOCK_MAX)],
                                            refused)
                if popped is not None:
                    first = popped[1].decode()
                    more, record = await _exchange(
                        listener, [("LPOP", self._wake, DRAIN), self._read(first)], refused)
                    if first in self._futures:
                        self._resolve([first], [record])
                    rest = self._awaited_among([raw.decode() for raw in more or ()])
                    if rest:
                        self._resolve(rest, await _exchange(
                            listener, list(map(self._read, rest)), refused))
                if time.monotonic() >= renew_at:
                    renew_at = time.monotonic() + RENEW
                    self._to_watch.extend(self.awaited)
                    self._flush_soon()
        finally:
            await self._last_flush()
            # these do not wait for the server: a second cancellation (asyncio.run
            # cancels what is left) cannot leave a connection half closed
            await listener.disconnect(nowait=True)
            await self._commands.disconnect(nowait=True)

    async def _last_flush(self) -> None:
        """Let the removals under way reach the server; if the loop is shutting down
        (cancelled again), leave them to expire."""
        if self._flushing is None or self._flushing.done():
            return
        try:
            await self._flushing
        except BaseException:
            self._flushing.cancel()


async def _exchange(connection: Any, commands: Sequence[tuple[Any, ...]],
                    refused: type[Exception]) -> list[Any]:
    """Commands sent together on ``connection``, as the backend sends its own (packed
    in one write); their replies in order, an error reply returned, not raised."""
    await connection.send_packed_command(connection.pack_commands(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await connection.read_response())
        except refused as exc:
            replies.append(exc)
    return replies


def _as_dict(raw: Any) -> dict[bytes, bytes]:
    """HGETALL's reply as a dict (RESP2 gives a flat list)."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))
