"""Fetch RQ's tests for the installed RQ and run its worker tests against our worker.

Usage: ``python -m tests.rq_suite [--rq-worker] [pytest arguments]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from rq.version import VERSION

#: RQ's tests not run, each with why: they test forking itself (or RQ's own worker
#: class by name), which a persistent horse replaces by design
EXCLUDED: dict[str, str] = {}

HERE = Path(__file__).resolve().parent


def cache_folder() -> Path:
    """Where RQ's tests of this version are unpacked (``$PPRUNNER_RQ_SUITE_CACHE``,
    else the user's cache folder)."""
    base = os.environ.get("PPRUNNER_RQ_SUITE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "pprunner", "rq-tests")
    return Path(base) / f"rq-{VERSION}"


def fetch_tests(folder: Path) -> None:
    """Unpack ``tests/`` of RQ's source distribution into ``folder`` (once): only the
    tests, so that ``import rq`` stays the installed RQ."""
    if (folder / "tests" / "__init__.py").exists():
        return
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary",
                        ":all:", "--no-deps", "--dest", scratch, f"rq=={VERSION}"], check=True)
        (archive,) = Path(scratch).glob("rq-*.tar.gz")
        unpacked = Path(scratch) / "unpacked"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[1:2] == ["tests"]]
            tar.extractall(unpacked, members=members, filter="data")
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        shutil.move(str(unpacked / f"rq-{VERSION}" / "tests"), partial / "tests")
        partial.replace(folder)


def main(argv: list[str]) -> int:
    ours = "--rq-worker" not in argv
    arguments = [a for a in argv if a != "--rq-worker"]
    folder = cache_folder()
    fetch_tests(folder)
    shutil.copy(HERE / "conftest.py", folder / "conftest.py")
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow\n    ssl_test\n")
    # RQ's slow tests too: one of them is a horse's death under a job
    environment = dict(os.environ, PPRUNNER_RQ_SUITE_WORKER="pprunner" if ours else "rq",
                       RUN_SLOW_TESTS_TOO="1")
    environment.pop("PYTHONPATH", None)  # RQ's `tests` package, not ours
    deselected = [f"--deselect={test}" for test in EXCLUDED] if ours else []
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *deselected, "tests",
               *arguments]
    return subprocess.run(command, cwd=folder, env=environment).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
