"""Libraries that are optional extras: imported on first use, named when missing."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import ClassVar

from pprunner.errors import PluginError
from pprunner.plugins import install_extra
from pprunner.serializer import Serializer


class OptionalLibrary:
    """``module``, installed by pprunner's ``extra`` (:func:`~pprunner.plugins.install_extra`).

    A plugin registers whether or not its library is installed, so that
    ``pprunner plugins`` can list it and say how to install it, and an app
    that names it gets that command in its error instead of an ImportError.
    """

    def __init__(self, module: str, extra: str) -> None:
        self.name = module
        self.extra = extra
        self._module: ModuleType | None = None

    def missing(self) -> str | None:
        """Why the library cannot be used (with the command that fixes it), or None."""
        if self._module is None and importlib.util.find_spec(self.name) is None:
            return f"the {self.name} package is not installed: {install_extra(self.extra)}"
        return None

    @property
    def module(self) -> ModuleType:
        """The imported library, or a PluginError that says how to install it."""
        if self._module is None:
            if (reason := self.missing()) is not None:
                raise PluginError(reason)
            self._module = importlib.import_module(self.name)
        return self._module


class LibrarySerializer(Serializer):
    """A serializer built on an optional library: unavailable while it is missing."""

    library: ClassVar[OptionalLibrary]

    def unavailable(self) -> str | None:
        return self.library.missing()
