"""Fuzzing the decode path: whatever bytes a queue holds, a worker survives and says why.

The codec is fuzzed with hypothesis (random bytes, truncations and bit
flips of real payloads, wrong serializer names, huge declared lengths);
then a batch of such messages goes through a real worker, which must fail
each one with a readable error and still be the same process afterwards.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pprunner import App, Invocation, TaskFailed
from pprunner.config import load
from pprunner.errors import PluginError, SerializationError
from pprunner.payloads import Codec
from pprunner.plugins import get_plugin_manager
from tests import apps

SERIALIZERS = get_plugin_manager().registry.serializers
SAFE = sorted(name for name, s in SERIALIZERS.items() if s.safe)
#: what a payload can be refused with; anything else would be a crash
REFUSALS = (SerializationError, PluginError)
#: prefixes that declare far more data than follows (msgpack array32/map32/str32/bin32,
#: a JSON string that never ends, a pickle frame of 2**63 bytes)
HUGE_DECLARED = [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                 b"\xc6\xff\xff\xff\xff", b'{"args":["' + b"a" * 1000,
                 b"\x80\x05\x95\xff\xff\xff\xff\xff\xff\xff\x7f", b"[" * 100_000]
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def codec(**settings: object) -> Codec:
    return Codec(SERIALIZERS, load(settings, environ={}), {})


def valid_payload(serializer: str) -> bytes:
    return codec(serializer=serializer).encode_call("i", "t", serializer,
                                                    [1, "two", [3.0] * 5], {"k": {"v": None}})


def mutations(payload: bytes) -> st.SearchStrategy[bytes]:
    """Truncations, bit flips and junk appended to a real payload."""
    flips = st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(1, 255)),
                     min_size=1, max_size=4)

    def flipped(changes: list[tuple[int, int]]) -> bytes:
        data = bytearray(payload)
        for position, mask in changes:
            data[position] ^= mask
        return bytes(data)

    return (st.integers(0, len(payload) - 1).map(lambda n: payload[:n])
            | flips.map(flipped) | st.binary(min_size=1).map(lambda junk: payload + junk))


def assert_decodes_or_refuses(codec: Codec, invocation: Invocation) -> None:
    try:
        codec.decode_call(invocation)
    except REFUSALS as exc:
        assert str(exc).strip(), "a refusal must say why"


@pytest.mark.parametrize("name", SAFE)
@FUZZ
@given(data=st.binary(max_size=300) | st.sampled_from(HUGE_DECLARED))
def test_random_bytes_are_refused_readably(name: str, data: bytes) -> None:
    assert_decodes_or_refuses(codec(serializer=name),
                              Invocation(id="i", task="t", payload=data, serializer=name))


@pytest.mark.parametrize("name", SAFE)
@FUZZ
@given(st.data())
def test_damaged_real_payloads_are_refused_readably(name: str, data: st.DataObject) -> None:
    damaged = data.draw(mutations(valid_payload(name)))
    assert_decodes_or_refuses(codec(serializer=name),
                              Invocation(id="i", task="t", payload=damaged, serializer=name))


@FUZZ
@given(name=st.text(max_size=20) | st.sampled_from(sorted(SERIALIZERS)),
       data=st.binary(max_size=100))
def test_any_serializer_name_is_refused_readably_even_unsafe_ones(name: str,
                                                                  data: bytes) -> None:
    """The default allow-list keeps random bytes from pickle; an unknown name is named."""
    try:
        codec().decode_call(Invocation(id="i", task="t", payload=data, serializer=name))
    except REFUSALS as exc:
        assert name in str(exc) or "decode" in str(exc)
    else:
        assert name in SAFE


@pytest.mark.parametrize("name", sorted(SERIALIZERS))
@FUZZ
@given(st.data())
def test_signed_damaged_payloads_never_reach_any_serializer(name: str,
                                                            data: st.DataObject) -> None:
    signed = codec(serializer=name, signing_keys="fuzzing-key-0123456789")
    payload = signed.encode_call("i", "t", name, [1, 2], {})
    damaged = data.draw(mutations(payload).filter(lambda d: d != payload))
    with pytest.raises(SerializationError, match="signature invalid"):
        signed.decode_call(Invocation(id="i", task="t", payload=damaged, serializer=name))


def test_a_worker_survives_a_batch_of_garbage(app: App, supervise) -> None:
    supervise(processes=1)
    pid = apps.whoami.enqueue().result(timeout=30)["pid"]
    rng = random.Random(20261128)
    garbage = []
    for number in range(40):
        name = rng.choice([*SAFE, "pickle", "no-such-serializer"])
        payload = (rng.choice(HUGE_DECLARED) if number % 4 == 0
                   else valid_payload(rng.choice(SAFE))[:rng.randrange(1, 30)] if number % 4 == 1
                   else rng.randbytes(rng.randrange(0, 200)))
        garbage.append(Invocation(id=f"garbage-{number}", task=apps.add.name, payload=payload,
                                  serializer=name))
    for invocation in garbage:
        app.backend.enqueue(invocation)
    for invocation in garbage:
        with pytest.raises(TaskFailed) as failure:
            app.handle(invocation.id).result(timeout=30)
        error = failure.value
        assert error.remote_type in {"SerializationError", "SerializerNotAccepted"}, error
        assert error.remote_message and "Traceback" not in error.remote_message
    assert apps.whoami.enqueue().result(timeout=30)["pid"] == pid
