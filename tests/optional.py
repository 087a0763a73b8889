"""Test modules of optional integrations: skipped on a laptop without the library,
failed in CI, where the integration's ``PPRUNNER_REQUIRE_<X>`` variable is set."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

import pytest


def require(modules: Sequence[str], variable: str, install: str) -> None:
    """Skip the calling test module unless every one of ``modules`` is installed; with
    ``variable`` set, raise instead. ``install`` says how to install them."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if not missing:
        return
    if os.environ.get(variable, "") not in ("", "0"):
        raise RuntimeError(f"{variable} is set but {', '.join(missing)} is not installed: "
                           "pip install -e '.[test]'")
    pytest.skip(f"{', '.join(missing)} is not installed ({install})", allow_module_level=True)


def require_server(url: str, default_port: int, *variables: str) -> None:
    """Skip the calling test unless the server at ``url`` accepts a connection; with
    one of ``variables`` set, fail instead."""
    where = urlsplit(url)
    try:
        socket.create_connection((where.hostname or "127.0.0.1", where.port or default_port),
                                 timeout=2).close()
    except OSError as exc:
        message = f"no server at {url}: {exc}"
        if any(os.environ.get(name, "") not in ("", "0") for name in variables):
            pytest.fail(message)
        pytest.skip(message)
