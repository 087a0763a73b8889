"""Fetch Huey's tests for the installed Huey and run its consumer tests against ours.

Usage: ``python -m tests.huey_suite [--huey-consumer] [pytest arguments]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from tests import sdist_tests

_MEMORY = ("its MemoryHuey keeps the queue in the test process's memory: a task "
           "enqueued there never reaches a worker process (ours, or Huey's own "
           "-k process workers), only a thread")

#: Huey's tests not run with ours, each with why
EXCLUDED: dict[str, str] = {
    "huey_tests/test_consumer.py::TestConsumerIntegration::test_consumer_minimal": _MEMORY,
    "huey_tests/test_storage.py::TestMemoryStorage::test_consumer_integration": _MEMORY,
}

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    ours = "--huey-consumer" not in argv
    arguments = [a for a in argv if a != "--huey-consumer"]
    release = version("huey")
    folder = sdist_tests.cache_folder("huey", release, "PPRUNNER_HUEY_SUITE_CACHE")
    # Huey's tests are its package's ``huey.tests``: unpacked under another name, and
    # registered as ``huey.tests`` by the conftest, so that the installed package is
    # the one tested
    sdist_tests.fetch("huey", release, "huey/tests", folder, "huey_tests")
    (folder / "huey_tests" / "__init__.py").unlink(missing_ok=True)  # it imports every module
    shutil.copy(HERE / "swapped_consumer.py", folder / "conftest.py")
    (folder / "pytest.ini").write_text("[pytest]\ntimeout = 120\n")
    # Huey's slow tests too: its process-worker integration test is one of them. HUEY_CI,
    # as Huey's own CI runs them: it skips the one test Huey's authors mark flaky there
    # (FileStorage's consumer test: two worker processes race to create its counters
    # folder, os.makedirs raising FileExistsError in one, with Huey's consumer as with ours)
    environment = dict(os.environ, PPRUNNER_HUEY_SUITE_CONSUMER="pprunner" if ours else "huey",
                       HUEY_SLOW_TESTS="1", HUEY_CI="1")
    environment.pop("PYTHONPATH", None)
    deselected = [f"--deselect={test}" for test in EXCLUDED] if ours else []
    command = [sys.executable, "-m", "pytest", "-o", f"cache_dir={folder / '.cache'}",
               *deselected, "huey_tests", *arguments]
    return subprocess.run(command, cwd=folder, env=environment).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
