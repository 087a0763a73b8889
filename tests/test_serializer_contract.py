"""The built-in serializers against the Serializer contract."""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

import pytest

from pprunner.testing import SerializerContract
from pprunner_plugins.json import JSONSerializer
from pprunner_plugins.pickle import PickleSerializer


class TestJSONSerializer(SerializerContract):
    roundtrip_values: ClassVar[list[Any]] = [
        *SerializerContract.roundtrip_values,
        {"outer": [{"inner": [1, [2, [3]]]}, {"empty": {}}]},
        "ünïcødé ✓ 漢字 🎉",
        2**100,
        -(2**70),
        0.1,
        -1e300,
    ]
    unsupported_values: ClassVar[list[Any]] = [
        b"bytes", {1, 2}, object(), datetime.datetime(2024, 1, 2, 3, 4, 5),
    ]

    @pytest.fixture
    def serializer(self) -> JSONSerializer:
        return JSONSerializer()


def _generator() -> Any:
    yield 1


class TestPickleSerializer(SerializerContract):
    roundtrip_values: ClassVar[list[Any]] = [
        *SerializerContract.roundtrip_values,
        (1, "two", (3.0,)),
        b"\x00\xffbytes",
        {1, 2, 3},
        frozenset({"a"}),
        {(1, 2): {"nested": (None,)}},
        datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        2**100,
    ]
    unsupported_values: ClassVar[list[Any]] = [lambda: None, _generator()]

    @pytest.fixture
    def serializer(self) -> PickleSerializer:
        return PickleSerializer()
