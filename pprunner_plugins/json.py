"""The ``json`` serializer, the default: safe, readable, language-neutral.

What round-trips: None, bool, int, finite float, str, and lists and dicts
(with str keys) of those. Tuples come back as lists and non-str dict keys
as strings; NaN and infinities are refused (strict JSON, readable by any
language), as are other types (bytes, sets, datetimes, objects) — at
enqueue time, with the argument named.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pprunner
from pprunner.serializer import Serializer


class JSONSerializer(Serializer):
    name = "json"
    safe = True

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        try:
            return json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text: {exc}") from None


@pprunner.hookimpl
def pprunner_register_serializers(register: Callable[..., None]) -> None:
    register(JSONSerializer())
