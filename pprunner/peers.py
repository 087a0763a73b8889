"""Signs of life among processes that share a store, and one burial for each death.

A host whose workers run on many machines and record their jobs in a shared
store (RQ's registries in Redis) learns of a dead worker only when a record
expires: RQ's abandoned-job cleanup runs minutes after a SIGKILL. A
:class:`PeerWatch` gives every member a sign of life that lapses after
``dead_after`` seconds unless renewed (each third of it, from a thread of its
own); each member checks the others on every renewal, and the first to see a
member without a sign wins its burial (:meth:`PeerStore.claim_burial`, one
winner however many notice) and hands the member's name and what it said of
itself to ``on_dead``, which ends its jobs in the host's terms. The store is a
:class:`PeerStore`: ``pprunner_plugins.redis.peers.RedisPeers`` on Redis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger("pprunner.peers")


class PeerStore(Protocol):
    """Where members' signs of life and what they say of themselves are kept."""

    def beat(self, name: str, about: str, lasts: float) -> list[tuple[str, str]]:
        """Renew ``name``'s sign of life for ``lasts`` seconds and its entry
        (``about``: what the burier needs, a worker's queues); return the other
        members without a sign of life, with what they said of themselves."""

    def renew(self, name: str, lasts: float) -> None:
        """Renew ``name``'s sign of life only."""

    def claim_burial(self, name: str, by: str) -> bool:
        """Whether ``by`` is the one to bury ``name`` (True for one caller only)."""

    def forget(self, name: str) -> None:
        """Remove ``name``'s entry and sign of life."""


class PeerWatch:
    """One member's sign of life and its watch over the others (module docstring)."""

    def __init__(self, store: PeerStore, name: str, about: Callable[[], str],
                 dead_after: float, on_dead: Callable[[str, str], None]) -> None:
        self.store = store
        self.name = name
        self.about = about
        self.dead_after = dead_after
        self.on_dead = on_dead
        self._stopped = threading.Event()
        #: set by :meth:`forget`: a stand-in stops renewing
        self._forgotten = threading.Event()
        self._thread: threading.Thread | None = None

    def join(self) -> None:
        """Give a first sign of life now, then renew it and watch from a thread."""
        self._check(self.store.beat(self.name, self.about(), self.dead_after))
        self._thread = threading.Thread(target=self._watch, daemon=True,
                                        name=f"pprunner-peers {self.name}")
        self._thread.start()

    def leave(self) -> None:
        """Stop renewing and watching; the entry stays until :meth:`forget`."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def forget(self) -> None:
        """Withdraw this member: its entry and sign of life go, a stand-in stops."""
        self._forgotten.set()
        self.store.forget(self.name)

    def stand_in(self) -> None:
        """Renew this member's sign of life from here on without watching the others,
        until the process exits or :meth:`forget` (a process finishing a dead
        member's last job keeps it, so nobody buries the member meanwhile)."""
        threading.Thread(target=self._renew_forever, daemon=True,
                         name=f"pprunner-peers-stand-in {self.name}").start()

    def _watch(self) -> None:
        while not self._stopped.wait(self.dead_after / 3):
            try:
                self._check(self.store.beat(self.name, self.about(), self.dead_after))
            except Exception as exc:  # the store away for a moment: the next beat may do
                logger.warning("%s: could not renew its sign of life or check the others': "
                               "%s", self.name, exc)

    def _check(self, silent: list[tuple[str, str]]) -> None:
        for name, about in silent:
            if not self.store.claim_burial(name, self.name):
                continue  # another member buries it
            logger.warning("%s: %s gave no sign of life for %g s; ending what it held",
                           self.name, name, self.dead_after)
            self.on_dead(name, about)
            self.store.forget(name)

    def _renew_forever(self) -> None:
        while not self._forgotten.is_set():
            try:
                self.store.renew(self.name, self.dead_after)
            except Exception as exc:
                logger.warning("%s: could not renew its sign of life: %s", self.name, exc)
            self._forgotten.wait(self.dead_after / 3)
