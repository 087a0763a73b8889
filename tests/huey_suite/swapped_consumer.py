"""Copied next to Huey's tests by ``python -m tests.huey_suite``.

Huey's tests are its package's ``huey.tests``: this registers the unpacked copy
under that name. Huey's ``Consumer`` is ``pprunner_plugins.huey.supervised.Consumer``
for every test module (unless ``PPRUNNER_HUEY_SUITE_CONSUMER=huey``: Huey's own, to
compare): by name in ``huey.consumer`` (a test's own subclass of it included),
in ``Huey.create_consumer`` and in the tests' ``BaseTestCase``. Only the tests
that build a consumer run: the others do not touch what is swapped.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import types
from pathlib import Path
from typing import Any

import huey
import huey.api
import huey.consumer
import pytest

#: a test (or its class's ``setUp``) that builds a consumer says one of these
BUILDS_A_CONSUMER = re.compile(r"consumer", re.IGNORECASE)


def _register_the_tests() -> None:
    package = types.ModuleType("huey.tests")
    package.__path__ = [str(Path(__file__).resolve().parent / "huey_tests")]
    sys.modules["huey.tests"] = package
    huey.tests = package  # type: ignore[attr-defined]


def _swap_in_ours() -> None:
    from pprunner_plugins.huey.supervised import Consumer

    huey.consumer.Consumer = Consumer  # type: ignore[misc]
    huey.api.Consumer = Consumer  # type: ignore[attr-defined]  # Huey.create_consumer's
    importlib.import_module("huey.tests.base").BaseTestCase.consumer_class = Consumer


_register_the_tests()
if os.environ.get("PPRUNNER_HUEY_SUITE_CONSUMER", "pprunner") == "pprunner":
    _swap_in_ours()


def _source(function: Any) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def _builds_a_consumer(item: pytest.Item) -> bool:
    cls = getattr(item, "cls", None)
    set_up = getattr(cls, "setUp", None)
    return bool(BUILDS_A_CONSUMER.search(_source(getattr(item, "obj", None)) + _source(set_up)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [item for item in items if _builds_a_consumer(item)]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
