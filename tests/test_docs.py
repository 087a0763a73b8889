"""The documentation names only what exists, so a rename or a removal cannot leave a
page describing code that is gone."""

from __future__ import annotations

import re
from pathlib import Path

from pprunner import channel

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: a module path as the page writes it: ``pprunner/pool.py``, ``pprunner_plugins/rq/horse.py``
MODULE_PATH = re.compile(r"\bpprunner(?:_plugins)?/[\w/]+\.py\b")
#: a test as the page writes it: ``tests/test_x.py::test_y`` (contract tests live in pprunner/)
TEST_REFERENCE = re.compile(r"\b((?:tests|pprunner/testing)/\w+\.py)::(test_\w+)")
#: the first cell of a row of the pipe messages table: ``| `Ready` | worker → ...``
MESSAGE_ROW = re.compile(r"^\| `(\w+)` \| (?:worker|supervisor) →", re.MULTILINE)


def _page() -> str:
    return ARCHITECTURE.read_text(encoding="utf-8")


def _names_in_test_file(path: Path) -> set[str]:
    return set(re.findall(r"def (test_\w+)\(", path.read_text(encoding="utf-8")))


def test_architecture_names_real_modules() -> None:
    page = _page()
    paths = set(MODULE_PATH.findall(page))
    assert "pprunner/pool.py" in paths  # the pattern finds what the page names
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
    tabled = MESSAGE_ROW.findall(page)
    assert tabled == [kind.__name__ for kind in channel.MESSAGES], (
        "the pipe messages table of docs/architecture.md must list every message of "
        "pprunner/channel.py, in its order, and nothing else")


def test_architecture_names_real_tests() -> None:
    references = TEST_REFERENCE.findall(_page())
    assert references  # the guarantees table names its tests
    missing = sorted(f"{path}::{name}" for path, name in set(references)
                     if not (ROOT / path).is_file()
                     or name not in _names_in_test_file(ROOT / path))
    assert not missing, f"docs/architecture.md names tests that do not exist: {missing}"
