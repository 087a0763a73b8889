"""HMAC signatures on stored payloads, so a message nobody with the key wrote is never decoded.

Anyone who can write to the queue (a shared Redis, a copied database file)
can otherwise hand a worker any bytes: with pickle that is running code,
with any serializer it is running a registered task with arguments the app
never sent. With ``signing_keys`` set, producers sign every payload and
workers verify it before the serializer sees a byte; results are signed by
the worker and verified by the producer the same way.

A signed payload is ``MAGIC + key id + HMAC-SHA256 + payload``. The MAC
also covers what the payload is for (call or result, serializer, task,
invocation id), so a signed payload copied into another invocation, or
relabelled with another serializer, fails too. The key id (4 bytes of a
hash of the key, never the key) picks the key among those accepted: the
first key signs, all verify, so keys rotate by putting the new key first,
and removing the old one once nothing it signed is left in the queue.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from .errors import SignatureInvalid

#: starts every signed payload; the digit is the format's version
MAGIC = b"PPS1"
KEY_ID_SIZE = 4
MAC_SIZE = hashlib.sha256().digest_size
HEADER_SIZE = len(MAGIC) + KEY_ID_SIZE + MAC_SIZE


def key_id(key: bytes) -> bytes:
    """A short public name for a key: tells which key signed, reveals nothing of it."""
    return hashlib.sha256(b"pprunner signing key id\0" + key).digest()[:KEY_ID_SIZE]


def purpose(kind: str, serializer: str, task: str, invocation_id: str) -> bytes:
    """What a payload is for; part of what the MAC covers."""
    return "\0".join((kind, serializer, task, invocation_id)).encode("utf-8") + b"\0"


class Signer:
    """Signs with the first key, verifies with any of them."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a Signer needs at least one key")
        encoded = [key.encode("utf-8") for key in keys]
        self._signing_key = encoded[0]
        self._signing_id = key_id(encoded[0])
        self._keys = {key_id(key): key for key in reversed(encoded)}  # the first wins a clash

    def __repr__(self) -> str:  # never shows a key
        return f"<Signer {len(self._keys)} key(s)>"

    def sign(self, payload: bytes, context: bytes) -> bytes:
        mac = self._mac(self._signing_key, self._signing_id, context, payload)
        return b"".join((MAGIC, self._signing_id, mac, payload))

    def verify(self, signed: bytes, context: bytes) -> bytes:
        """The payload inside ``signed``; SignatureInvalid unless one of our keys signed it."""
        if not signed.startswith(MAGIC):
            raise SignatureInvalid("signature invalid: the payload is not signed")
        if len(signed) < HEADER_SIZE:
            raise SignatureInvalid("signature invalid: the signature is truncated")
        ident = signed[len(MAGIC):len(MAGIC) + KEY_ID_SIZE]
        mac = signed[len(MAGIC) + KEY_ID_SIZE:HEADER_SIZE]
        payload = signed[HEADER_SIZE:]
        key = self._keys.get(ident)
        if key is None:
            raise SignatureInvalid(f"signature invalid: signed with a key this app does not "
                                   f"accept (key id {ident.hex()}); was it rotated out?")
        if not hmac.compare_digest(mac, self._mac(key, ident, context, payload)):
            raise SignatureInvalid("signature invalid: the payload was altered, or was signed "
                                   "for another invocation")
        return payload

    @staticmethod
    def _mac(key: bytes, ident: bytes, context: bytes, payload: bytes) -> bytes:
        return hmac.new(key, MAGIC + ident + context + payload, hashlib.sha256).digest()
