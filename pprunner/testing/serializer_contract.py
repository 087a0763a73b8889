"""The promises of :class:`pprunner.serializer.Serializer`, as tests any serializer can run.

Subclass :class:`SerializerContract` under a name pytest collects, provide a
``serializer`` fixture returning an instance, and list what the serializer
must round-trip (``roundtrip_values``) and must refuse (``unsupported_values``).
Each value becomes its own test case, so a failure names the value.

A refusal must be TypeError or ValueError, and a bad payload must raise
ValueError: those are the errors the worker turns into a readable FAILED
invocation, where anything else would look like a crash of pprunner itself.
A safe serializer must survive any bytes at all (a property-based test
feeds it random ones). Wrapped by an app's signing keys, a tampered payload
must be refused before the serializer's ``loads`` sees it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from pprunner.config import Config
from pprunner.errors import SignatureInvalid
from pprunner.invocation import Invocation
from pprunner.payloads import Codec
from pprunner.serializer import Serializer

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # optional: only the property-based round-trip test needs it
    HAVE_HYPOTHESIS = False
else:
    HAVE_HYPOTHESIS = True
    # JSON-like values, as task arguments are: ints within a double's exact
    # range, and text without lone surrogates, which no UTF-8 encoding carries.
    _TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
    JSON_VALUES = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
        lambda children: st.lists(children, max_size=5)
        | st.dictionaries(_TEXT, children, max_size=5),
        max_leaves=20,
    )


#: The shape every payload has; its truncations must be refused by ``loads``.
SAMPLE_PAYLOAD = {"args": [1, "two", [3.5, None]], "kwargs": {"flag": True, "name": "ü"}}


def _ids(values: list[Any]) -> list[str]:
    return [f"{n}-{type(value).__name__}" for n, value in enumerate(values)]


def _assert_raises_only(expected: tuple[type[Exception], ...], call: Callable[[], Any],
                        what: str, *, allow_success: bool = False) -> None:
    """``call()`` raises one of ``expected``: not another exception, and not nothing
    (unless ``allow_success``)."""
    names = " or ".join(e.__name__ for e in expected)
    try:
        call()
    except expected:
        return
    except Exception as exc:
        pytest.fail(f"{what} raised {type(exc).__name__}: {exc}; the contract asks for {names}")
    if not allow_success:
        pytest.fail(f"{what} raised nothing; the contract asks for {names}")


def _signing_codec(serializer: Serializer) -> Codec:
    """An app's codec that uses ``serializer`` with a signing key."""
    config = Config(serializer=serializer.name, signing_keys=("contract-test-key-" * 2,))
    return Codec({serializer.name: serializer}, config, {})


class SerializerContract:
    """Contract tests for a :class:`~pprunner.serializer.Serializer` implementation.

    Subclasses provide the ``serializer`` fixture and may override the two
    value lists; the default ``roundtrip_values`` are JSON-like values every
    serializer must carry, since task arguments travel as
    ``{"args": [...], "kwargs": {...}}``.
    """

    #: values that must come back equal, and of the same type, from ``loads(dumps(v))``
    roundtrip_values: ClassVar[list[Any]] = [
        None, True, False, 0, -7, 1.5, "", "text", [], {}, [1, "two", None],
        SAMPLE_PAYLOAD,
    ]
    #: values ``dumps`` must refuse with TypeError or ValueError
    unsupported_values: ClassVar[list[Any]] = []

    @pytest.fixture
    def serializer(self) -> Serializer:
        pytest.fail(f"{type(self).__name__} must override the `serializer` fixture with one "
                    "that returns the serializer instance under test")

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """One test case per declared value, so a failure names the value."""
        cls = metafunc.cls
        assert cls is not None
        for argument, values in (("roundtrip_value", cls.roundtrip_values),
                                 ("unsupported_value", cls.unsupported_values)):
            if argument in metafunc.fixturenames:
                metafunc.parametrize(argument, values, ids=_ids(values))

    def test_name_is_a_non_empty_str(self, serializer: Serializer) -> None:
        assert isinstance(serializer.name, str)
        assert serializer.name.strip(), "the name selects the serializer; it cannot be blank"

    def test_safe_is_a_bool(self, serializer: Serializer) -> None:
        assert isinstance(serializer.safe, bool)

    def test_dumps_returns_bytes(self, serializer: Serializer) -> None:
        assert type(serializer.dumps(SAMPLE_PAYLOAD)) is bytes

    def test_roundtrip(self, serializer: Serializer, roundtrip_value: Any) -> None:
        data = serializer.dumps(roundtrip_value)
        assert type(data) is bytes
        back = serializer.loads(data)
        assert back == roundtrip_value
        assert type(back) is type(roundtrip_value)

    def test_unsupported_value_is_refused(self, serializer: Serializer,
                                          unsupported_value: Any) -> None:
        _assert_raises_only((TypeError, ValueError), lambda: serializer.dumps(unsupported_value),
                            f"dumps({unsupported_value!r})")

    def test_loads_of_garbage_raises_value_error(self, serializer: Serializer) -> None:
        garbage = b"\xff\x00garbage"
        _assert_raises_only((ValueError,), lambda: serializer.loads(garbage),
                            f"loads({garbage!r})")

    def test_loads_of_truncated_output_raises_value_error(self, serializer: Serializer) -> None:
        data = serializer.dumps(SAMPLE_PAYLOAD)
        for length in sorted({0, len(data) // 2, len(data) - 1}):
            _assert_raises_only((ValueError,), functools.partial(serializer.loads, data[:length]),
                                f"loads() of the first {length} of {len(data)} bytes")

    def test_a_tampered_signed_payload_never_reaches_loads(
            self, serializer: Serializer, monkeypatch: pytest.MonkeyPatch) -> None:
        codec = _signing_codec(serializer)
        payload = codec.encode_call("id-1", "task", serializer.name, [1, "two"], {})
        call = Invocation(id="id-1", task="task", payload=payload, serializer=serializer.name)
        assert codec.decode_call(call) == ([1, "two"], {})
        loaded: list[bytes] = []
        monkeypatch.setattr(serializer, "loads", loaded.append)
        for position in (0, len(payload) // 2, len(payload) - 1):
            tampered = bytearray(payload)
            tampered[position] ^= 0x20
            with pytest.raises(SignatureInvalid):
                codec.decode_call(Invocation(id="id-1", task="task", payload=bytes(tampered),
                                             serializer=serializer.name))
        assert loaded == [], "a tampered payload reached loads()"

    if HAVE_HYPOTHESIS:
        # The fixture is a stateless serializer, so sharing it between examples is
        # safe. Each subclass runs these methods (a "differing executor"), which
        # only matters when replaying saved examples, and database=None saves none.
        _shared_fixture = settings(database=None, deadline=None,
                                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.differing_executors])

        @_shared_fixture
        @given(value=JSON_VALUES)
        def test_json_like_values_roundtrip(self, serializer: Serializer, value: Any) -> None:
            assert serializer.loads(serializer.dumps(value)) == value

        @_shared_fixture
        @given(data=st.binary(max_size=200))
        def test_any_bytes_are_decoded_or_refused(self, serializer: Serializer,
                                                  data: bytes) -> None:
            """A safe serializer takes any bytes (ValueError at worst). Random bytes may
            run code in an unsafe one, so for it the promise is the signature's: they
            are refused before ``loads``."""
            if serializer.safe:
                _assert_raises_only((ValueError,), functools.partial(serializer.loads, data),
                                    f"loads({data!r})", allow_success=True)
                return
            codec = _signing_codec(serializer)
            with pytest.raises(SignatureInvalid):
                codec.decode_call(Invocation(id="i", task="t", payload=data,
                                             serializer=serializer.name))
    else:
        def test_json_like_values_roundtrip(self, serializer: Serializer) -> None:
            pytest.skip("hypothesis is not installed; install it for the property-based "
                        "round-trip test (the value-by-value round-trip tests still ran)")

