"""The ``msgpack`` serializer: compact binary, quick, and as safe as JSON.

Needs the ``msgpack`` package (``pip install -e '.[msgpack]'`` in the clone).

What round-trips: None, bool, int from -2**63 to 2**64-1, float (NaN and
infinities included), str, bytes, and lists and dicts of those; dict keys
may be any of those scalars (str, int, bytes...). Tuples come back as
lists. Anything else (sets, datetimes, objects, bigger ints) is refused at
enqueue time, with the argument named. Loading runs no code: it only builds
those types, and a declared length longer than the payload is refused before
anything is allocated for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pprunner

from ._optional import LibrarySerializer, OptionalLibrary


class MsgpackSerializer(LibrarySerializer):
    name = "msgpack"
    safe = True

    library = OptionalLibrary("msgpack", "msgpack")

    def dumps(self, value: Any) -> bytes:
        try:
            data: bytes = self.library.module.packb(value, use_bin_type=True)
        except OverflowError as exc:  # an int beyond 64 bits
            raise ValueError(f"integer out of msgpack's 64-bit range: {exc}") from None
        return data

    def loads(self, data: bytes) -> Any:
        try:
            # strict_map_key=False: int and bytes keys round-trip, as dumps allows them
            return self.library.module.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # ExtraData, FormatError, OutOfData, unhashable keys...
            raise ValueError(f"not a msgpack payload: {type(exc).__name__}: {exc}") from None


@pprunner.hookimpl
def pprunner_register_serializers(register: Callable[..., None]) -> None:
    register(MsgpackSerializer())
