"""The ``json`` serializer, the default: safe, readable, language-neutral.

What round-trips exactly: None, bool, int (any size), finite float, str,
and lists and dicts with str keys of those. Tuples come back as lists (the
one change it makes). Refused at enqueue time, with the argument named:
dicts with keys that are not str (JSON would turn ``{1: "a"}`` into
``{"1": "a"}`` without a word), NaN and infinities (not JSON; no other
language could read them), and every other type (bytes, sets, datetimes,
objects: use msgpack for bytes, or convert).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pprunner
from pprunner.serializer import Serializer

_CONTAINERS = frozenset({dict, list, tuple})


def _check_keys(value: Any) -> None:
    """TypeError for a dict key JSON would silently turn into a string."""
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                raise TypeError(f"dict key {key!r} has type {type(key).__name__}; JSON keys are "
                                "strings (convert the keys, or use the msgpack serializer)")
        children: Any = value.values()
    else:
        children = value
    if not _CONTAINERS.isdisjoint(map(type, children)):  # descend only where containers are
        for child in children:
            if type(child) in _CONTAINERS:
                _check_keys(child)


class JSONSerializer(Serializer):
    name = "json"
    safe = True

    def dumps(self, value: Any) -> bytes:
        if type(value) in _CONTAINERS:
            _check_keys(value)
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        try:
            return json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text: {exc}") from None
        except RecursionError:
            raise ValueError("nested too deeply to decode") from None


@pprunner.hookimpl
def pprunner_register_serializers(register: Callable[..., None]) -> None:
    register(JSONSerializer())
