"""Copied next to Dramatiq's tests as ``conftest.py`` by ``python -m tests.dramatiq_suite``.

``start_cli`` (the fixture Dramatiq's command-line tests start workers with) runs
``pprunner dramatiq`` from this environment, or Dramatiq's own ``python -m dramatiq``
when ``PPRUNNER_DRAMATIQ_SUITE_COMMAND=dramatiq``, with the test's arguments; the
command is stopped with SIGTERM after the test, as Dramatiq's own fixture does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

OURS = os.environ.get("PPRUNNER_DRAMATIQ_SUITE_COMMAND", "pprunner") == "pprunner"
COMMAND = ([str(Path(sys.executable).with_name("pprunner")), "dramatiq"] if OURS
           else [sys.executable, "-m", "dramatiq"])


@pytest.fixture
def start_cli() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(broker: str, *, extra_args: list[str] | None = None,
              **options: Any) -> subprocess.Popen[bytes]:
        options.setdefault("bufsize", 0)
        process = subprocess.Popen([*COMMAND, broker, *(extra_args or [])], **options)
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
