"""What an app does to task arguments and results on their way through the backend.

Producers and workers must agree on every step, so one :class:`Codec` per
app holds them all, applied in this order on the way in and reversed on
the way out:

1. the serializer named by the invocation (the app's, or the task's own),
   which travels with it, so a worker decodes what the producer encoded
   even after the app's default changed;
2. the allow-list: a worker decodes only serializers in
   ``accept_serializers`` (by default the app's serializer and every
   safe one), plus a serializer a task itself was declared with, for that
   task only; anything else fails before a byte is decoded;
3. the signature (``signing_keys``, see :mod:`pprunner.signing`), checked
   before the serializer sees the payload;
4. the size limit (``max_payload_size``), enforced when encoding, so a
   too-large call fails at ``enqueue`` with the task named, not deep in a
   backend; and when decoding, so a worker never unpacks one.

Every failure is a :class:`~pprunner.errors.SerializationError` whose
message says what to change; a worker records it as the invocation's error
and carries on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import Config
from .errors import (
    ConfigError,
    PayloadTooLarge,
    PluginError,
    SerializationError,
    SerializerNotAccepted,
)
from .invocation import Invocation
from .serializer import Serializer
from .signing import MAGIC, Signer, purpose

#: the errors a serializer may raise for a value it cannot encode
ENCODE_ERRORS = (TypeError, ValueError, OverflowError)


class Codec:
    """The serializers, allow-list, signer and size limit of one app.

    :param serializers: the registered serializers, by name.
    :param config: the app's settings.
    :param task_serializers: task name -> the serializer that task was
        declared with; that task alone accepts it.
    """

    def __init__(self, serializers: Mapping[str, Serializer], config: Config,
                 task_serializers: Mapping[str, str]) -> None:
        self._serializers = serializers
        self._usable: dict[str, Serializer] = {}
        self._task_serializers = task_serializers
        self.default = config.serializer
        self._explicitly_accepted = config.accept_serializers or ()
        self.accepted = frozenset(config.accept_serializers or (
            config.serializer, *(n for n, s in serializers.items() if s.safe)))
        self.limit = config.max_payload_size
        self._signer = Signer(config.signing_keys) if config.signing_keys else None
        if config.accept_serializers and config.serializer not in self.accepted:
            raise ConfigError(f"setting 'serializer' is {config.serializer!r}, which is not in "
                              f"accept_serializers ({', '.join(sorted(self.accepted))})")

    def check(self) -> None:
        """Fail now, not in a worker, if a serializer this app names is unknown or unusable."""
        named = {self.default, *self._explicitly_accepted, *self._task_serializers.values()}
        for name in sorted(named):
            self.serializer(name)

    def serializer(self, name: str) -> Serializer:
        """The registered serializer ``name``, usable here; PluginError otherwise.

        Every encode and decode asks, so one found usable is remembered.
        """
        if (usable := self._usable.get(name)) is not None:
            return usable
        try:
            serializer = self._serializers[name]
        except KeyError:
            raise PluginError(f"unknown serializer {name!r}; known serializers: "
                              f"{', '.join(sorted(self._serializers)) or 'none'}") from None
        if (missing := serializer.unavailable()) is not None:
            raise PluginError(f"the {name!r} serializer cannot be used here: {missing}")
        self._usable[name] = serializer
        return serializer

    def check_accepted(self, name: str, task: str) -> None:
        if name in self.accepted or self._task_serializers.get(task) == name:
            return
        raise SerializerNotAccepted(
            f"serializer {name!r} is not accepted by this app (accept_serializers: "
            f"{', '.join(sorted(self.accepted))}); add it there only if whoever can write to "
            f"the queue is trusted")

    # -- calls ---------------------------------------------------------------------

    def encode_call(self, invocation_id: str, task: str, serializer_name: str,
                    args: list[Any], kwargs: dict[str, Any]) -> bytes:
        """The stored payload of a call; SerializationError naming the argument that
        cannot be encoded, or saying by how much the call is too large."""
        self.check_accepted(serializer_name, task)
        serializer = self.serializer(serializer_name)
        try:
            data = serializer.dumps({"args": args, "kwargs": kwargs})
        except ENCODE_ERRORS as exc:
            raise _argument_error(serializer, task, args, kwargs, exc) from exc
        self._check_size(data, f"task {task!r}: the encoded arguments")
        return self._sign(data, "call", serializer_name, task, invocation_id)

    def decode_call(self, invocation: Invocation) -> tuple[list[Any], dict[str, Any]]:
        """``(args, kwargs)`` of a stored call; SerializationError (or PluginError) if
        it is not accepted, not validly signed, too large or not decodable."""
        call = self._decode(invocation, invocation.payload, "call", "the arguments")
        if not (isinstance(call, dict) and isinstance(call.get("args"), list)
                and isinstance(call.get("kwargs"), dict)):
            raise SerializationError("cannot decode the arguments: the payload is not a "
                                     "{'args': [...], 'kwargs': {...}} mapping")
        return call["args"], call["kwargs"]

    # -- results -------------------------------------------------------------------

    def encode_result(self, invocation: Invocation, value: Any) -> bytes:
        serializer = self.serializer(invocation.serializer)
        try:
            data = serializer.dumps(value)
        except ENCODE_ERRORS as exc:
            raise SerializationError(f"the result of type {type(value).__name__} cannot be "
                                     f"encoded by the {serializer.name!r} serializer: "
                                     f"{exc}") from exc
        self._check_size(data, "the encoded result")
        return self._sign(data, "result", invocation.serializer, invocation.task,
                          invocation.id)

    def decode_result(self, invocation: Invocation) -> Any:
        assert invocation.result is not None
        return self._decode(invocation, invocation.result, "result", "the result")

    # -- the steps -----------------------------------------------------------------

    def _sign(self, data: bytes, kind: str, serializer: str, task: str,
              invocation_id: str) -> bytes:
        if self._signer is None:
            return data
        return self._signer.sign(data, purpose(kind, serializer, task, invocation_id))

    def _check_size(self, data: bytes, what: str) -> None:
        if self.limit and len(data) > self.limit:
            raise PayloadTooLarge(f"{what}: {_bytes(len(data))}, over max_payload_size "
                                  f"({_bytes(self.limit)})")

    def _decode(self, invocation: Invocation, data: bytes, kind: str, what: str) -> Any:
        try:
            serializer = self.serializer(invocation.serializer)
        except PluginError as exc:  # the message names it: the message is at fault
            raise SerializationError(f"cannot decode {what}: {exc}") from None
        self.check_accepted(invocation.serializer, invocation.task)
        if self._signer is not None:
            data = self._signer.verify(data, purpose(kind, invocation.serializer,
                                                     invocation.task, invocation.id))
        self._check_size(data, what)
        try:
            return serializer.loads(data)
        except Exception as exc:  # a third-party serializer may raise anything on bad bytes
            hint = (" (the payload is signed, but this app has no signing_keys)"
                    if self._signer is None and data.startswith(MAGIC) else "")
            raise SerializationError(f"cannot decode {what} (serializer "
                                     f"{invocation.serializer!r}): {type(exc).__name__}: "
                                     f"{exc}{hint}") from exc


def _argument_error(serializer: Serializer, task: str, args: list[Any],
                    kwargs: dict[str, Any], exc: Exception) -> SerializationError:
    """The error for a call that cannot be encoded, naming the first argument at fault."""
    labelled = [(f"argument {i}", v) for i, v in enumerate(args)]
    labelled += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in labelled:
        try:
            serializer.dumps(value)
        except ENCODE_ERRORS as own:
            return SerializationError(
                f"task {task!r}: {label} of type {type(value).__name__} cannot be encoded "
                f"by the {serializer.name!r} serializer: {own}")
    return SerializationError(f"task {task!r}: arguments cannot be encoded by the "
                              f"{serializer.name!r} serializer: {exc}")


def _bytes(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
