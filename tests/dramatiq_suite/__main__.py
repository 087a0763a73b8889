"""Fetch Dramatiq's command-line tests for the installed Dramatiq, run them with its own
command and with ``pprunner dramatiq``, and compare.

Usage: ``python -m tests.dramatiq_suite [pytest arguments]``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
from importlib.metadata import version
from pathlib import Path

VERSION = version("dramatiq")

#: Dramatiq's test modules that start its command (and so its worker processes). The
#: others test Dramatiq's classes inside the test's own process (``test_worker.py``
#: runs a ``dramatiq.Worker`` in threads, the same code each of our workers runs),
#: where nothing is swapped.
MODULES = ("test_cli.py", "test_pidfile.py", "test_watch.py")

#: tests not run with ``pprunner dramatiq``, each with why
EXCLUDED: dict[str, str] = {
    "tests/test_cli.py::test_cli_can_be_reloaded_on_sighup":
        "asserts the workers after SIGHUP loaded the module at least a second after the "
        "first ones, which Dramatiq's reload (its whole command starts again) takes and "
        "pprunner's (one worker replaced, here in about 0.6 s) does not; that SIGHUP "
        "replaces every worker is tests/test_dramatiq.py::"
        "test_sighup_replaces_every_worker_and_keeps_consuming",
    **{f"tests/test_watch.py::test_cli_can_watch_for_source_code_changes[{case}]":
       "--watch (reloading on source changes) is refused by pprunner dramatiq, as "
       "documented: SIGHUP or pprunner's reload replace the workers"
       for case in ("extra_args0", "extra_args1")},
}

#: seconds a test may take (Dramatiq's wait for a queue to drain has no end of its own)
TEST_TIMEOUT = 30

HERE = Path(__file__).resolve().parent


def cache_folder() -> Path:
    """Where Dramatiq's tests of this version are unpacked
    (``$PPRUNNER_DRAMATIQ_SUITE_CACHE``, else the user's cache folder)."""
    base = os.environ.get("PPRUNNER_DRAMATIQ_SUITE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "pprunner",
        "dramatiq-tests")
    return Path(base) / f"dramatiq-{VERSION}"


def fetch_tests(folder: Path) -> None:
    """Unpack :data:`MODULES` of Dramatiq's source distribution into ``folder/tests``
    (once), with our ``conftest.py`` and ``tests/common.py`` beside them."""
    if not (folder / "tests" / MODULES[0]).exists():
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary",
                            ":all:", "--no-deps", "--dest", scratch, f"dramatiq=={VERSION}"],
                           check=True)
            (archive,) = Path(scratch).glob("dramatiq-*.tar.gz")
            wanted = {f"tests/{name}" for name in MODULES}
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers()
                           if "/".join(m.name.split("/")[1:]) in wanted]
                tar.extractall(scratch, members=members, filter="data")
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            shutil.move(str(Path(scratch) / f"dramatiq-{VERSION}" / "tests"), partial / "tests")
            partial.replace(folder)
    (folder / "tests" / "__init__.py").touch()
    shutil.copy(HERE / "common.py", folder / "tests" / "common.py")
    shutil.copy(HERE / "swapped_cli.py", folder / "conftest.py")
    (folder / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")


def run(folder: Path, command: str, arguments: list[str]) -> set[str]:
    """Run the tests with ``command`` ("dramatiq" or "pprunner"); the ids that passed."""
    report = folder / f"report-{command}.xml"
    deselected = [f"--deselect={test}" for test in EXCLUDED] if command == "pprunner" else []
    # as in an activated environment: Dramatiq's command starts itself again on SIGHUP
    # as the `python` found on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    environment = dict(os.environ, PPRUNNER_DRAMATIQ_SUITE_COMMAND=command, PATH=path)
    environment.pop("PYTHONPATH", None)  # Dramatiq's `tests` package, not ours
    print(f"dramatiq_suite: Dramatiq {VERSION}'s tests with `{command}`", flush=True)
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                    f"--timeout={TEST_TIMEOUT}", f"--junitxml={report}", *deselected,
                    *arguments],
                   cwd=folder, env=environment)
    return passed(report)


def passed(report: Path) -> set[str]:
    if not report.exists():
        return set()
    passing = set()
    for case in ElementTree.parse(report).iter("testcase"):
        if not any(child.tag in ("failure", "error", "skipped") for child in case):
            passing.add(f"{case.get('classname')}::{case.get('name')}")
    return passing


def broker_missing() -> str | None:
    """Why Dramatiq's tests cannot run here: their brokers are ``RedisBroker()``, the
    Redis at 127.0.0.1:6379."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError as exc:
        return f"no Redis at 127.0.0.1:6379, which Dramatiq's tests use: {exc}"
    return None


def main(argv: list[str]) -> int:
    missing_broker = broker_missing()
    if missing_broker is not None:
        required = os.environ.get("PPRUNNER_REQUIRE_DRAMATIQ", "") not in ("", "0")
        print(f"dramatiq_suite: {'failed' if required else 'skipped'}: {missing_broker}")
        return 1 if required else 0
    folder = cache_folder()
    fetch_tests(folder)
    theirs = run(folder, "dramatiq", argv)
    ours = run(folder, "pprunner", argv)
    excluded = {test.replace("/", ".").replace(".py::", "::") for test in EXCLUDED}
    missing = sorted(theirs - ours - excluded)
    print(f"dramatiq_suite: {len(theirs)} passed with `dramatiq`, {len(ours)} with "
          f"`pprunner dramatiq` ({len(EXCLUDED)} excluded)")
    if not theirs:
        print("dramatiq_suite: nothing passed with Dramatiq's own command: no broker?")
        return 1
    for test in missing:
        print(f"dramatiq_suite: passes with `dramatiq`, not with `pprunner dramatiq`: {test}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
