"""Serializers per invocation, the allow-list, signed payloads and the size limit.

The codec is tested directly (no processes) and then through real workers,
where a refused or tampered message must end FAILED with a readable error
while the worker carries on.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from pprunner import App, Invocation, Status, TaskFailed
from pprunner.config import Config, load
from pprunner.errors import (
    ConfigError,
    PayloadTooLarge,
    PluginError,
    SerializationError,
    SerializerNotAccepted,
    SignatureInvalid,
)
from pprunner.invocation import new_invocation_id
from pprunner.payloads import Codec
from pprunner.plugins import get_plugin_manager, install_extra
from pprunner_plugins._optional import OptionalLibrary
from pprunner_plugins.msgpack import MsgpackSerializer
from tests import apps
from tests.conftest import cli_env, run_cli, wait_until

KEY = "k" * 16 + "-first-signing-key"
OLD_KEY = "o" * 16 + "-older-signing-key"
SERIALIZERS = get_plugin_manager().registry.serializers


def codec(task_serializers: dict[str, str] | None = None, **settings: Any) -> Codec:
    return Codec(SERIALIZERS, load(settings, environ={}), task_serializers or {})


def stored_call(codec: Codec, task: str = "t", serializer: str = "json",
                args: list[Any] | None = None) -> Invocation:
    invocation_id = new_invocation_id()
    payload = codec.encode_call(invocation_id, task, serializer, args or [1, "two"], {"k": None})
    return Invocation(id=invocation_id, task=task, payload=payload, serializer=serializer)


def exploit(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when loaded: proof that it reached pickle.loads."""
    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.mkdir, (str(marker),))
    return pickle.dumps({"args": [Exploit()], "kwargs": {}})


# -- the allow-list ---------------------------------------------------------------------


def test_by_default_the_app_serializer_and_safe_ones_are_accepted() -> None:
    assert codec().accepted == {"json", "msgpack"}
    assert codec(serializer="pickle").accepted == {"pickle", "json", "msgpack"}
    assert codec(accept_serializers="json").accepted == {"json"}


def test_a_serializer_outside_the_allow_list_is_refused_before_decoding(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    invocation = Invocation(id="i", task="t", payload=exploit(marker), serializer="pickle")
    with pytest.raises(SerializerNotAccepted, match="serializer 'pickle' is not accepted"):
        codec().decode_call(invocation)
    assert not marker.exists()


def test_a_task_declared_with_a_serializer_accepts_it_for_itself_only() -> None:
    own = codec({"lambdas": "cloudpickle"})
    call = stored_call(own, task="lambdas", serializer="cloudpickle", args=[lambda x: x * 2])
    (function, *_), _kwargs = own.decode_call(call)
    assert function(21) == 42
    other = Invocation(id=call.id, task="other", payload=call.payload, serializer="cloudpickle")
    with pytest.raises(SerializerNotAccepted):
        own.decode_call(other)
    with pytest.raises(SerializerNotAccepted):  # producers are held to the same list
        own.encode_call("x", "other", "cloudpickle", [], {})


def test_the_app_serializer_must_be_in_an_explicit_allow_list() -> None:
    with pytest.raises(ConfigError, match="'msgpack', which is not in accept_serializers"):
        codec(serializer="msgpack", accept_serializers=["json"])


def test_unknown_names_fail_at_supervisor_start_not_in_a_worker() -> None:
    with pytest.raises(PluginError, match="unknown serializer 'yaml'"):
        codec(accept_serializers="json,yaml").check()
    with pytest.raises(PluginError, match="unknown serializer 'toml'"):
        codec({"t": "toml"}).check()


def test_payloads_are_decoded_by_the_serializer_they_name_whatever_the_default() -> None:
    """The default changed from msgpack to json; queued msgpack calls still decode."""
    queued = stored_call(codec(serializer="msgpack"), serializer="msgpack")
    assert codec(serializer="json").decode_call(queued) == ([1, "two"], {"k": None})


# -- signatures -------------------------------------------------------------------------


def test_signed_calls_and_results_round_trip() -> None:
    signed = codec(signing_keys=KEY)
    call = stored_call(signed)
    assert call.payload.startswith(b"PPS1")
    assert signed.decode_call(call) == ([1, "two"], {"k": None})
    result = signed.encode_result(call, {"answer": 42})
    assert signed.decode_result(attrs.evolve(call, result=result)) == {"answer": 42}


@pytest.mark.parametrize("position", [0, 5, 20, 40, -1])
def test_a_tampered_byte_anywhere_is_refused(position: int) -> None:
    signed = codec(signing_keys=KEY)
    call = stored_call(signed)
    data = bytearray(call.payload)
    data[position] ^= 0x01
    with pytest.raises(SignatureInvalid, match="signature invalid"):
        signed.decode_call(attrs.evolve(call, payload=bytes(data)))


def test_an_unsigned_payload_is_refused_and_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    signed = codec(signing_keys=KEY, accept_serializers="pickle,json")
    forged = Invocation(id="i", task="t", payload=exploit(marker), serializer="pickle")
    with pytest.raises(SignatureInvalid, match="signature invalid: the payload is not signed"):
        signed.decode_call(forged)
    assert not marker.exists()


def test_a_signed_payload_is_bound_to_its_invocation_task_and_serializer() -> None:
    signed = codec(signing_keys=KEY)
    call = stored_call(signed)
    for changed in (attrs.evolve(call, id="another-id"), attrs.evolve(call, task="another.task"),
                    attrs.evolve(call, serializer="msgpack")):
        with pytest.raises(SignatureInvalid, match="altered, or was signed for another"):
            signed.decode_call(changed)
    result = signed.encode_result(call, 1)
    with pytest.raises(SignatureInvalid):  # a result is not a call
        signed.decode_call(attrs.evolve(call, payload=result))


def test_keys_rotate_new_first_old_still_verifies_until_removed() -> None:
    before = codec(signing_keys=OLD_KEY)
    during = codec(signing_keys=[KEY, OLD_KEY])
    after = codec(signing_keys=KEY)
    queued_before = stored_call(before)
    assert during.decode_call(queued_before)[0] == [1, "two"]
    assert after.decode_call(stored_call(during))[0] == [1, "two"]  # signs with the first
    with pytest.raises(SignatureInvalid, match=r"key this app does not accept .*rotated out"):
        after.decode_call(queued_before)


def test_signing_keys_are_never_shown() -> None:
    config = load({"signing_keys": f"{KEY},{OLD_KEY}"}, environ={})
    assert config.signing_keys == (KEY, OLD_KEY)
    assert KEY not in repr(config) and KEY not in repr(codec(signing_keys=KEY).__dict__)
    with pytest.raises(ConfigError) as short:
        load({}, environ={"PPRUNNER_SIGNING_KEYS": "tooshort-secret"})
    assert "key 1 is 15 characters long" in str(short.value)
    assert "tooshort-secret" not in str(short.value)


def test_a_signed_payload_reaching_an_app_without_keys_says_so() -> None:
    call = stored_call(codec(signing_keys=KEY))
    with pytest.raises(SerializationError, match="signed, but this app has no signing_keys"):
        codec().decode_call(call)


# -- size limits ------------------------------------------------------------------------


def test_too_large_arguments_fail_at_enqueue_naming_the_task() -> None:
    small = codec(max_payload_size="1KiB")
    with pytest.raises(PayloadTooLarge, match=r"task 't': the encoded arguments: 1.\d KiB, "
                                              r"over max_payload_size \(1.0 KiB\)"):
        small.encode_call("i", "t", "json", ["x" * 1100], {})
    assert codec(max_payload_size=0).encode_call("i", "t", "json", ["x" * 10**6], {})


@pytest.mark.parametrize(("text", "size"), [(1024, 1024), ("512KiB", 512 * 1024),
                                            ("10 MB", 10**7), ("1.5GiB", 3 * 2**29), ("0", 0)])
def test_sizes_take_units(text: object, size: int) -> None:
    assert load({"max_payload_size": text}, environ={}).max_payload_size == size


@pytest.mark.parametrize("text", ["10 parsecs", "-1", "lots", True])
def test_bad_sizes_are_refused(text: object) -> None:
    with pytest.raises(ConfigError, match="max_payload_size"):
        load({"max_payload_size": text}, environ={})


def test_config_defaults() -> None:
    config = Config()
    assert (config.serializer, config.accept_serializers, config.signing_keys,
            config.max_payload_size) == ("json", None, None, 10 * 2**20)


# -- through real workers ---------------------------------------------------------------


VALUES = {
    "json": [1, "ü", [None, True, 2.5], {"k": [1, 2]}],
    "msgpack": [b"\x00\xff", {1: "int key"}, float("inf"), [1, 2]],
    "pickle": [{1, 2}, (3, 4), b"bytes", 2**100],
    "cloudpickle": [{1, 2}, (3, 4), frozenset({"a"})],
}


@pytest.mark.parametrize("name", list(VALUES))
def test_each_serializer_as_the_app_default_end_to_end(app: App, supervise, name: str) -> None:
    app.configure(source="the test", serializer=name)
    supervise(processes=1)
    handles = [apps.echo.enqueue(value) for value in VALUES[name]]
    assert {app.backend.get(h.id).serializer for h in handles} == {name}
    assert [h.result(timeout=30) for h in handles] == VALUES[name]
    with pytest.raises(TaskFailed, match="ValueError: boom"):
        apps.fail.enqueue("boom").result(timeout=30)


def test_a_task_of_its_own_serializer_takes_a_lambda(app: App, supervise) -> None:
    supervise(processes=1)
    assert apps.call.enqueue(lambda x: x * 3, 14).result(timeout=30) == 42
    assert app.backend.get(apps.call.enqueue(len, "abc").id).serializer == "cloudpickle"


def test_bad_messages_fail_readably_and_the_worker_carries_on(app: App, supervise,
                                                               tmp_path: Path) -> None:
    app.configure(source="the test", serializer="json", signing_keys=KEY,
                  max_payload_size="4KiB")
    supervise(processes=1)
    worker_pid = apps.whoami.enqueue().result(timeout=30)["pid"]
    marker = tmp_path / "pwned"
    good = app.codec.encode_call("x", apps.add.name, "json", [1, 2], {})
    forged = {
        "not-accepted": (exploit(marker), "pickle", "SerializerNotAccepted",
                         "serializer 'pickle' is not accepted"),
        "unsigned": (b'{"args":[1,2],"kwargs":{}}', "json", "SignatureInvalid",
                     "signature invalid: the payload is not signed"),
        "tampered": (good[:-3] + b"9]}", "json", "SignatureInvalid", "signature invalid"),
        "unknown-serializer": (good, "yaml", "SerializationError",
                               "unknown serializer 'yaml'"),
    }
    for invocation_id, (payload, serializer, _, _) in forged.items():
        app.backend.enqueue(Invocation(id=invocation_id, task=apps.add.name, payload=payload,
                                       serializer=serializer))
    for invocation_id, (_, _, kind, text) in forged.items():
        with pytest.raises(TaskFailed) as failure:
            app.handle(invocation_id).result(timeout=30)
        assert (failure.value.remote_type, text in failure.value.remote_message) == (kind, True)
    with pytest.raises(TaskFailed, match=r"PayloadTooLarge: the encoded result: 8\.0 KiB"):
        apps.sized_result.enqueue(8192).result(timeout=30)
    assert apps.add.enqueue(20, 22).result(timeout=30) == 42
    assert not marker.exists()
    assert apps.whoami.enqueue().result(timeout=30)["pid"] == worker_pid


def test_the_signing_key_is_not_in_the_logs(app: App, supervise, caplog: pytest.LogCaptureFixture,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    """Neither the supervisor's records nor anything a worker writes shows the key."""
    caplog.set_level(logging.DEBUG)
    app.configure(source="the test", signing_keys=KEY, log_level="DEBUG")
    supervise(processes=1)
    assert apps.add.enqueue(1, 2).result(timeout=30) == 3
    app.backend.enqueue(Invocation(id="unsigned", task=apps.add.name, serializer="json",
                                   payload=b'{"args":[1,2],"kwargs":{}}'))
    with pytest.raises(TaskFailed, match="signature invalid"):
        app.handle("unsigned").result(timeout=30)
    written = ""

    def worker_logged_the_refusal() -> bool:  # it logs just after storing the failure
        nonlocal written
        output = capfd.readouterr()
        written += output.out + output.err
        return "inv=unsigned" in written and "SignatureInvalid" in written

    wait_until(worker_logged_the_refusal, what="the worker's line about the refused payload")
    assert caplog.records
    assert KEY not in caplog.text + written


def test_enqueue_refuses_an_unencodable_or_too_large_call(app: App) -> None:
    app.configure(source="the test", serializer="json")
    with pytest.raises(SerializationError, match="dict key 1 has type int"):
        apps.echo.enqueue({1: "a"})
    app.configure(source="the test", max_payload_size=100)
    with pytest.raises(PayloadTooLarge, match=f"task '{apps.echo.name}'"):
        apps.echo.enqueue("x" * 200)
    assert app.backend.counts()[Status.PENDING] == 0


def test_plugins_lists_every_serializer_with_its_safety(db_url: str) -> None:
    listing = json.loads(run_cli("plugins", "--json", env=cli_env(db_url)).stdout)
    serializers = listing["serializers"]
    assert {name: (s["safe"], s["unavailable"]) for name, s in serializers.items()} == {
        "json": (True, None), "msgpack": (True, None), "pickle": (False, None),
        "cloudpickle": (False, None)}
    text = run_cli("plugins", env=cli_env(db_url)).stdout
    assert "cloudpickle  cloudpickle  runs code on load: choose it explicitly  yes" in text


def test_a_serializer_whose_library_is_missing_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    absent = OptionalLibrary("pprunner_no_such_library", "msgpack")
    monkeypatch.setattr(MsgpackSerializer, "library", absent)
    with pytest.raises(PluginError, match="pprunner_no_such_library package is not installed: "
                                          + re.escape(install_extra("msgpack"))):
        codec(serializer="msgpack").check()
    with pytest.raises(PluginError, match="cannot be used here"):
        codec().encode_call("i", "t", "msgpack", [], {})
