"""Signs of life among members sharing a store (``pprunner.peers``), on Redis: a
member that stops renewing is buried once, by one survivor, with what it said of
itself; one that leaves and forgets itself is never buried."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from pprunner.peers import PeerWatch
from pprunner_plugins.redis.peers import RedisPeers
from tests.conftest import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

DEAD_AFTER = 0.3


class Burials:
    """What each survivor's ``on_dead`` was handed."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def by(self, survivor: str):  # type: ignore[no-untyped-def]
        def on_dead(name: str, about: str) -> None:
            with self.lock:
                self.seen.append((survivor, name, about))
        return on_dead


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisPeers]:
    base, prefix = redis_url.split("?prefix=")
    client = redis.Redis.from_url(base)
    yield RedisPeers(client, f"{prefix}:peers:")
    client.close()


def test_a_silent_member_is_buried_once_with_what_it_said(store: RedisPeers) -> None:
    burials = Burials()
    watches = [PeerWatch(store, name, lambda name=name: f"queues of {name}", DEAD_AFTER,
                         burials.by(name)) for name in ("a", "b", "c")]
    for watch in watches:
        watch.join()
    try:
        watches[2].leave()  # "c" stops renewing without forgetting itself: a death
        wait_until(lambda: burials.seen, timeout=10, what="c's burial")
        wait_until(lambda: not store.connection.hexists(store.members, "c"), timeout=10,
                   what="c's entry removed")
        (survivor, name, about), *more = burials.seen
        assert name == "c" and about == "queues of c" and survivor in {"a", "b"}
        assert more == []  # one burial, however many survivors noticed
        assert store.connection.hexists(store.members, "a")  # the living stay
    finally:
        for watch in watches[:2]:
            watch.leave()
            watch.forget()


def watched_beats(store: RedisPeers, count: int) -> list[list[tuple[str, str]]]:
    """Wait for ``count`` more beats of the store's members; what each found silent."""
    seen: list[list[tuple[str, str]]] = []
    enough = threading.Event()
    original = store.beat

    def counting(name: str, about: str, lasts: float) -> list[tuple[str, str]]:
        silent = original(name, about, lasts)
        seen.append(silent)
        if len(seen) >= count:
            enough.set()
        return silent

    store.beat = counting  # type: ignore[method-assign]
    try:
        assert enough.wait(10), f"only {len(seen)} beats"
    finally:
        store.beat = original  # type: ignore[method-assign]
    return seen


def test_a_member_that_leaves_and_forgets_itself_is_not_buried(store: RedisPeers) -> None:
    burials = Burials()
    survivor = PeerWatch(store, "a", lambda: "", DEAD_AFTER, burials.by("a"))
    leaving = PeerWatch(store, "b", lambda: "", DEAD_AFTER, burials.by("b"))
    survivor.join()
    leaving.join()
    leaving.leave()
    leaving.forget()
    try:
        # six beats of the survivor's: two lapses of "b"'s sign of life
        assert all(silent == [] for silent in watched_beats(store, 6))
        assert burials.seen == []
    finally:
        survivor.leave()
        survivor.forget()


def test_a_stand_in_keeps_a_members_sign_of_life(store: RedisPeers) -> None:
    burials = Burials()
    watcher = PeerWatch(store, "a", lambda: "", DEAD_AFTER, burials.by("a"))
    member = PeerWatch(store, "b", lambda: "", DEAD_AFTER, burials.by("b"))
    member.join()
    member.leave()  # its worker is gone ...
    member.stand_in()  # ... and a process finishing its job renews its sign of life
    watcher.join()
    try:
        assert all(silent == [] for silent in watched_beats(store, 6))
        assert burials.seen == []
    finally:
        watcher.leave()
        watcher.forget()
        member.forget()  # the stand-in stops: its sign of life lapses for good
    wait_until(lambda: not store.connection.exists(store.alive_key("b")), timeout=10,
               what="b's sign of life to lapse")
