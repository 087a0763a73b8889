"""The Serializer contract: how task arguments and results become bytes.

A serializer plugin subclasses :class:`Serializer` and registers it by name
through the ``pprunner_register_serializers`` hook.
``pprunner.testing.SerializerContract`` checks an implementation.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar


class Serializer(abc.ABC):
    #: the name users select it by and that travels with each invocation
    name: ClassVar[str]
    #: False when loading a payload can run arbitrary code (pickle): such a
    #: serializer is never a default and must be chosen by name.
    safe: ClassVar[bool] = True

    def unavailable(self) -> str | None:
        """Why this serializer cannot be used here (its library is not installed,
        say, with the command that installs it), or None when it can."""
        return None

    @abc.abstractmethod
    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raise TypeError or ValueError when it cannot be encoded."""

    @abc.abstractmethod
    def loads(self, data: bytes) -> Any:
        """Decode ``data``; raise ValueError (or a subclass) when it is not valid."""
