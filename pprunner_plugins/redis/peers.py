"""The Redis store of :class:`pprunner.peers.PeerWatch`: a hash of members and what
they said of themselves, a key per member that lapses with its sign of life, and
a set-if-absent key per burial."""

from __future__ import annotations

from typing import Any


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisPeers:
    """Members under ``prefix`` (``<prefix>members``, ``<prefix><name>:alive``,
    ``<prefix>burying:<name>``) on ``connection``, a redis-py client."""

    def __init__(self, connection: Any, prefix: str) -> None:
        self.connection = connection
        self.prefix = prefix
        self.members = f"{prefix}members"

    def alive_key(self, name: str) -> str:
        return f"{self.prefix}{name}:alive"

    def beat(self, name: str, about: str, lasts: float) -> list[tuple[str, str]]:
        with self.connection.pipeline() as pipeline:
            pipeline.set(self.alive_key(name), 1, px=int(lasts * 1000))
            pipeline.hset(self.members, name, about)
            pipeline.hgetall(self.members)
            members = pipeline.execute()[-1]
        others = [(_text(member), _text(said)) for member, said in members.items()
                  if _text(member) != name]
        if not others:
            return []
        with self.connection.pipeline() as pipeline:
            for member, _ in others:
                pipeline.exists(self.alive_key(member))
            alive = pipeline.execute()
        return [other for other, up in zip(others, alive, strict=True) if not up]

    def renew(self, name: str, lasts: float) -> None:
        self.connection.set(self.alive_key(name), 1, px=int(lasts * 1000))

    def claim_burial(self, name: str, by: str) -> bool:
        return bool(self.connection.set(f"{self.prefix}burying:{name}", by, nx=True, ex=60))

    def forget(self, name: str) -> None:
        with self.connection.pipeline() as pipeline:
            pipeline.hdel(self.members, name)
            pipeline.delete(self.alive_key(name))
            pipeline.execute()
