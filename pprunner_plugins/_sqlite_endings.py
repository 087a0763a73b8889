"""``await handle`` on SQLite: the event loop reads one doorbell socket for all its waiters.

Each loop that awaits invocations of a SQLite store binds one socket on the
store's endings doorbell (:mod:`pprunner_plugins._doorbell`) and gives it to
the loop as a reader (``loop.add_reader``): no thread, one file descriptor
however many coroutines await. Ids awaited during one turn of the loop are
registered together, in one transaction that also reads them (those that
ended already resolve at once). The transaction that ends an invocation
rings the socket with the ids that ended for it, and the loop reads just
those.

A ring can be dropped: a UNIX datagram socket keeps only a few messages
(``net.unix.max_dgram_qlen``, 10 by default on Linux) and the sender does not
wait. Since only the loop reads its socket, the queue only grows between two
reads, so a drop is possible only when a read finds it full: then the loop
reads which invocations ended since its previous read (less ``RING_MARGIN``:
an ending is stamped just before its transaction commits), a range of the
store's index of endings, as long as what ended meanwhile, not as long as what
it awaits. Once a second (``NOTIFIED_RECHECK``) every awaited id is looked at
anyway, as a synchronous waiter looks again.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pprunner.awaiting import EndingsWatcher
from pprunner.backend import NOTIFIED_RECHECK
from pprunner.errors import UnknownInvocation

if TYPE_CHECKING:
    from .sqlite import SQLiteBackend

#: seconds before its previous look from which a loop whose socket overflowed reads the
#: endings again: longer than a commit takes after the ending's ``finished_at`` stamp
RING_MARGIN = 1.0
#: how many messages a UNIX datagram socket queues before rings are dropped
QUEUE_LIMIT_FILE = Path("/proc/sys/net/unix/max_dgram_qlen")


def queue_limit() -> int:
    """The queue length at which rings may have been dropped (1 where unknown:
    then every read looks at everything)."""
    try:
        return max(int(QUEUE_LIMIT_FILE.read_text()), 1)
    except (OSError, ValueError):
        return 1


class SQLiteEndingsWatcher(EndingsWatcher):
    backend: SQLiteBackend

    def __init__(self, backend: SQLiteBackend, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(backend, loop)
        self.name = f"loop-{os.getpid()}-{os.urandom(6).hex()}"
        self._queue_limit = queue_limit()
        socket = backend.endings.listen(self.name)  # before any registration: no ring lost
        self._fd = socket.fileno()
        loop.add_reader(self._fd, self._rung)
        #: ids awaited since the loop's last turn, registered together on the next
        self._to_register: list[str] = []
        self._recheck = loop.call_later(NOTIFIED_RECHECK, self._look_again)
        #: when the loop last read what ended (wall time: endings are stamped in it)
        self._looked_at = time.time()

    def watch(self, invocation_id: str) -> None:
        if not self._to_register:
            self.loop.call_soon(self._register)
        self._to_register.append(invocation_id)

    def unwatch(self, invocation_id: str) -> None:
        if invocation_id in self._to_register:
            self._to_register.remove(invocation_id)
        else:
            self.backend.forget_waiter(self.name, [invocation_id])

    def release(self) -> None:
        self.loop.remove_reader(self._fd)
        self._recheck.cancel()
        self.backend.endings.release(self.name)
        self.backend.forget_waiter(self.name)

    def _register(self) -> None:
        ids, self._to_register = self._to_register, []
        if not ids:  # every one of them was left before its turn came
            return
        try:
            self.ended(self.backend.record_waiter(self.name, ids))
        except UnknownInvocation:  # some id is not stored: tell each waiter what it awaits
            for invocation_id in ids:
                self._register_one(invocation_id)
        except Exception as exc:  # the store failed: its waiters hear it, as sync ones do
            for invocation_id in ids:
                self.failed(invocation_id, exc)

    def _register_one(self, invocation_id: str) -> None:
        try:
            self.ended(self.backend.record_waiter(self.name, [invocation_id]))
        except Exception as exc:
            self.failed(invocation_id, exc)

    def _rung(self) -> None:
        looked_at, self._looked_at = self._looked_at, time.time()
        rings = self.backend.endings.drain(self.name)
        if len(rings) >= self._queue_limit:  # full: rings of endings since may be lost
            self._look_at(self.backend.ids_ended_since(looked_at - RING_MARGIN))
        else:
            self._look_at([i.decode() for ring in rings for i in ring.split()])

    def _look_again(self) -> None:
        self._looked_at = time.time()
        self._look_at(self.awaited)
        self._recheck = self.loop.call_later(NOTIFIED_RECHECK, self._look_again)

    def _look_at(self, invocation_ids: list[str]) -> None:
        awaited = [i for i in invocation_ids if i in self._futures]
        if awaited:
            self.ended(self.backend.ended_among(awaited))
