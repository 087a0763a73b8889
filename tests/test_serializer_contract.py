"""The built-in serializers against the Serializer contract."""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

import pytest

from pprunner.testing import SerializerContract
from pprunner_plugins.cloudpickle import CloudpickleSerializer
from pprunner_plugins.json import JSONSerializer
from pprunner_plugins.msgpack import MsgpackSerializer
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
        float("nan"), float("inf"),
        {1: "int key"}, [{"nested": {None: "key"}}], {"deep": [[{(1, 2): "tuple key"}]]},
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


class TestMsgpackSerializer(SerializerContract):
    roundtrip_values: ClassVar[list[Any]] = [
        *SerializerContract.roundtrip_values,
        b"\x00\xffbytes",
        {1: "int key", b"k": "bytes key", "s": [b""]},
        2**64 - 1,
        -(2**63),
        float("inf"),
        "ünïcødé ✓ 漢字 🎉",
    ]
    unsupported_values: ClassVar[list[Any]] = [
        2**64, -(2**63) - 1, {1, 2}, object(), datetime.datetime(2024, 1, 2, 3, 4, 5),
    ]

    @pytest.fixture
    def serializer(self) -> MsgpackSerializer:
        return MsgpackSerializer()

    @pytest.mark.parametrize("declared", [
        b"\xdd\xff\xff\xff\xff",          # an array of 4,294,967,295 items
        b"\xdf\xff\xff\xff\xff",          # a map of as many pairs
        b"\xdb\xff\xff\xff\xffabc",       # a str of 4 GiB
        b"\xc6\x7f\xff\xff\xff",          # bin of 2 GiB
        b"\x91" * 100_000,                 # nested deeper than any stack
    ])
    def test_huge_declared_lengths_are_refused_without_allocating(
            self, serializer: MsgpackSerializer, declared: bytes) -> None:
        with pytest.raises(ValueError, match="not a msgpack payload"):
            serializer.loads(declared)


class TestCloudpickleSerializer(TestPickleSerializer):
    roundtrip_values: ClassVar[list[Any]] = TestPickleSerializer.roundtrip_values
    unsupported_values: ClassVar[list[Any]] = [_generator()]

    @pytest.fixture
    def serializer(self) -> CloudpickleSerializer:  # type: ignore[override]
        return CloudpickleSerializer()

    def test_lambdas_and_closures_travel_by_value(
            self, serializer: CloudpickleSerializer) -> None:
        offset = 40
        restored = serializer.loads(serializer.dumps(lambda x: x + offset))
        assert restored(2) == 42
