"""A third-party-style plugin module that provides a backend and a serializer."""

from __future__ import annotations

from typing import Any

import pprunner
from pprunner_plugins.json import JSONSerializer
from pprunner_plugins.memory import MemoryBackend


class SortedJSON(JSONSerializer):
    """JSON with sorted keys: stable bytes for the same value."""

    name = "sorted-json"

    def dumps(self, value: Any) -> bytes:
        import json

        return json.dumps(value, sort_keys=True, allow_nan=False).encode()


@pprunner.hookimpl
def pprunner_register_backends(register: Any) -> None:
    register("scratch", MemoryBackend)


@pprunner.hookimpl
def pprunner_register_serializers(register: Any) -> None:
    register(SortedJSON())
