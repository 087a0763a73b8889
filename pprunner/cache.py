"""``runner_cache``: a dict shared by every worker of one pull-mode supervisor.

The supervisor keeps it (:class:`CacheStore`); a worker reaches it through
:class:`RunnerCache`, one request and one answer over the pipe it already
has to its supervisor for each operation. So the cache costs no process of
its own, and each operation is atomic: the supervisor answers one request
at a time.

The supervisor keeps every value as the bytes the worker pickled and hands
them back unread: it never needs to import a value's class, and a value
that unpickles in the workers is all that is asked. Keys are unpickled
(a dict needs their equality), so they must be importable in the
supervisor's process; a key that is not fails that one operation with
:class:`~pprunner.errors.PprunnerError`, not the pool.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from .errors import PprunnerError


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


class CacheStore:
    """The supervisor's side: a dict of key -> pickled value, and the operations a
    worker may ask for by name (nothing else is ever looked up)."""

    def __init__(self) -> None:
        self._values: dict[Any, bytes] = {}
        self._operations: dict[str, Callable[..., Any]] = {
            "getitem": self._getitem, "setitem": self._setitem, "delitem": self._delitem,
            "contains": self._values.__contains__, "len": self._values.__len__,
            "keys": lambda: list(self._values), "items": lambda: list(self._values.items()),
            "setdefault": self._values.setdefault, "popitem": self._popitem,
            "pop": lambda key: self._values.pop(key, None), "clear": self._values.clear,
            "update": self._values.update,
        }

    def answer(self, request: bytes) -> tuple[bool, Any]:
        """(True, result) or (False, the exception to raise in the worker)."""
        try:
            operation, args = pickle.loads(request)
            return True, self._operations[operation](*args)
        except KeyError as exc:
            return False, KeyError(*exc.args)
        except Exception as exc:  # a key whose class this process cannot import, ...
            return False, PprunnerError(f"runner_cache: the supervisor could not carry out "
                                        f"the request: {type(exc).__name__}: {exc}")

    def _getitem(self, key: Any) -> bytes | None:
        """The value, or None when absent (the worker applies its default or raises)."""
        return self._values.get(key)

    def _setitem(self, key: Any, value: bytes) -> None:
        self._values[key] = value

    def _delitem(self, key: Any) -> None:
        del self._values[key]

    def _popitem(self) -> tuple[Any, bytes]:
        if not self._values:
            raise KeyError("popitem(): runner_cache is empty")
        return self._values.popitem()


class RunnerCache(MutableMapping[Any, Any]):
    """A worker's view of its supervisor's cache: a mutable mapping whose every
    operation is one round trip to the supervisor (``ask`` sends a request and
    returns the answer). ``keys()``, ``values()`` and ``items()`` return lists, a
    snapshot, as a manager's dict proxy does."""

    def __init__(self, ask: Callable[[bytes], tuple[bool, Any]]) -> None:
        self._ask = ask

    def _call(self, operation: str, *args: Any) -> Any:
        ok, result = self._ask(_dumps((operation, args)))
        if not ok:
            raise result
        return result

    def __getitem__(self, key: Any) -> Any:
        value = self._call("getitem", key)
        if value is None:
            raise KeyError(key)
        return pickle.loads(value)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._call("setitem", key, _dumps(value))

    def __delitem__(self, key: Any) -> None:
        self._call("delitem", key)

    def __contains__(self, key: object) -> bool:
        return bool(self._call("contains", key))

    def __len__(self) -> int:
        return int(self._call("len"))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def __repr__(self) -> str:
        return f"<RunnerCache {self.copy()!r}>"

    def keys(self) -> list[Any]:  # type: ignore[override]
        return list(self._call("keys"))

    def values(self) -> list[Any]:  # type: ignore[override]
        return [value for _, value in self.items()]

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        return [(key, pickle.loads(value)) for key, value in self._call("items")]

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._call("getitem", key)
        return default if value is None else pickle.loads(value)

    def pop(self, key: Any, *default: Any) -> Any:
        value = self._call("pop", key)
        if value is not None:
            return pickle.loads(value)
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self) -> tuple[Any, Any]:
        key, value = self._call("popitem")
        return key, pickle.loads(value)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return pickle.loads(self._call("setdefault", key, _dumps(default)))

    def update(self, other: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = (),  # type: ignore[override]
               **kwargs: Any) -> None:
        pairs = dict(other, **kwargs)
        self._call("update", {key: _dumps(value) for key, value in pairs.items()})

    def clear(self) -> None:
        self._call("clear")

    def copy(self) -> dict[Any, Any]:
        """A plain dict with what the cache holds now."""
        return dict(self.items())
