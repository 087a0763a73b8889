"""Wakes claimers (and waiters) on this host without polling.

SQLite has no notifications, and a worker that sleeps between polls either
burns CPU or answers late. Instead each blocked claimer binds a UNIX
datagram socket in a folder named after the database file, and blocks in
``select`` on it; whoever adds work sends one byte to every socket there.
A claimer binds before it first looks at the queue, so a ring between its
look and its wait is buffered, never lost. The folders are sub-folders of
the runtime folder (:mod:`pprunner.runtime`), which is this user's alone. A
socket left by a killed process refuses the datagram and is removed by the
next ring (or, with its folder once empty, when a supervisor starts). Callers
waiting for invocations to end use a second folder, rung by name: only the
waiters of the invocation that ended, each told the ids that ended (an event
loop's one socket serves all its waiters).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
from collections.abc import Iterable, Mapping

from pprunner import runtime

WORK = b"w"  #: new work was queued: look again
STOP = b"s"  #: return from the wait now (shutdown)


class Doorbell:
    def __init__(self, key: str) -> None:
        self._name = hashlib.sha256(key.encode()).hexdigest()[:16]
        # checked now, so an unsafe runtime folder stops a command before it changes
        # anything rather than at the ring after its commit
        self.folder = runtime.folder() / self._name
        self._sockets: dict[str, socket.socket] = {}

    def listen(self, name: str) -> socket.socket:
        """Bind ``name``'s socket (once) so rings from now on are kept for it."""
        if name not in self._sockets:
            self._sockets[name] = runtime.bind(self._name, name)
        return self._sockets[name]

    def wait(self, name: str, timeout: float) -> bytes:
        """Block until a ring for ``name`` or ``timeout``; returns what was rung."""
        # poll, not select: select() refuses a descriptor past 1023, which a process
        # with a thousand open sockets (a thousand waiting threads) has
        poller = select.poll()
        poller.register(self._sockets[name], select.POLLIN)
        readable = poller.poll(max(timeout, 0.0) * 1000)
        return b"".join(self.drain(name, 64)) if readable else b""

    def drain(self, name: str, size: int = 65536) -> list[bytes]:
        """Every ring kept for ``name`` so far, one message each (cut at ``size`` bytes),
        without blocking."""
        sock, received = self._sockets[name], []
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(sock.recv(size))
        return received

    def ring(self, message: bytes = WORK, names: Iterable[str] | None = None) -> None:
        """Wake every listener on this database, or only the ``names`` given."""
        if names is None:
            try:
                paths = [entry.path for entry in os.scandir(self.folder)]
            except FileNotFoundError:
                return
        else:
            paths = [str(self.folder / name) for name in names]
        self._send((path, message) for path in paths)

    def ring_each(self, messages: Mapping[str, bytes]) -> None:
        """Ring each named listener with its own message (what ended, for a waiter)."""
        self._send((str(self.folder / name), message) for name, message in messages.items())

    def _send(self, rings: Iterable[tuple[str, bytes]]) -> None:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        try:
            for path, message in rings:
                try:
                    sender.sendto(message, path)
                except FileNotFoundError:
                    pass  # closed already
                except ConnectionRefusedError:
                    with contextlib.suppress(OSError):
                        os.unlink(path)  # its process is gone
                except OSError:
                    pass  # a full buffer means it is already awake
        finally:
            sender.close()

    def release(self, name: str) -> None:
        """Unbind ``name``'s socket: nothing will be rung for it any more."""
        sock = self._sockets.pop(name, None)
        if sock is not None:
            sock.close()
            with contextlib.suppress(OSError):
                (self.folder / name).unlink()

    def forget(self, names: Iterable[str]) -> None:
        """Remove the sockets of runners that are gone (a killed one cannot), and the
        folder once nobody listens."""
        for name in names:
            with contextlib.suppress(OSError):
                (self.folder / name).unlink()
        runtime.remove_dead_sockets(self.folder)
        with contextlib.suppress(OSError):  # not empty: others still listen
            self.folder.rmdir()

    def close(self) -> None:
        """Unbind this process's sockets (and tidy up the folder)."""
        for sock in self._sockets.values():
            sock.close()
        if self._sockets:
            self.forget(list(self._sockets))
        self._sockets.clear()
