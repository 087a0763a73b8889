"""The ``pickle`` serializer: any picklable Python object, at a price.

Unpickling can run arbitrary code, so anyone who can write to the queue can
run code in your workers. It is never a default: an app must name it
(``serializer="pickle"``), and should only do so when the queue is as
trusted as the code itself.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pprunner
from pprunner.serializer import Serializer


class PickleSerializer(Serializer):
    name = "pickle"
    safe = False

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError) as exc:
            raise TypeError(str(exc)) from exc

    def loads(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise ValueError(f"cannot unpickle: {type(exc).__name__}: {exc}") from exc


@pprunner.hookimpl
def pprunner_register_serializers(register: Callable[..., None]) -> None:
    register(PickleSerializer())
