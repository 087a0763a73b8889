"""The documentation names only what exists, so a rename or a removal cannot leave a
page describing code that is gone; the site builds with no broken link, and every
complete program it shows runs."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pprunner import channel, hookspecs

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


# -- the site ----------------------------------------------------------------------------

DOCS = ROOT / "docs"
#: a complete file of a page: a fenced block with a title, ```python title="myproject/tasks.py"
TITLED_BLOCK = re.compile(r'^```(?P<lang>python|sh) title="(?P<path>[\w./-]+)"\n(?P<body>.*?)^```$',
                          re.MULTILINE | re.DOTALL)
MAIN_GUARD = 'if __name__ == "__main__":'


def _docs_required() -> bool:
    return os.environ.get("PPRUNNER_REQUIRE_DOCS", "") not in ("", "0")


def _mkdocs_or_skip() -> None:
    if importlib.util.find_spec("mkdocs") is None:
        reason = "mkdocs is not installed (python -m pip install -e '.[docs]')"
        if _docs_required():
            pytest.fail(f"PPRUNNER_REQUIRE_DOCS is set but {reason}")
        pytest.skip(reason)


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a broken link, anchor, include or hook reference fails;
    the hook reference has a heading for every hook specification."""
    _mkdocs_or_skip()
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                           cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert build.returncode == 0, build.stderr[-3000:]
    assert (site / "index.html").is_file()
    reference = (site / "plugins" / "hooks" / "index.html").read_text(encoding="utf-8")
    hooks = [name for name in dir(hookspecs) if name.startswith("pprunner_")]
    assert len(hooks) >= 9
    missing = [hook for hook in hooks if f'id="pprunner.hookspecs.{hook}"' not in reference]
    assert not missing, f"the hook reference has no heading for {missing}"


def _pages_files() -> dict[str, dict[str, tuple[str, str]]]:
    """Each page's complete files, by path: (language, text)."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for page in sorted(DOCS.rglob("*.md")):
        blocks = {match["path"]: (match["lang"], match["body"])
                  for match in TITLED_BLOCK.finditer(page.read_text(encoding="utf-8"))}
        if blocks:
            found[page.relative_to(DOCS).as_posix()] = blocks
    return found


PAGES_FILES = _pages_files()
#: the programs among them: shell scripts, and Python files with a main guard
PROGRAMS = [(page, path) for page, files in PAGES_FILES.items()
            for path, (lang, text) in files.items() if lang == "sh" or MAIN_GUARD in text]


def test_the_docs_mark_their_complete_programs() -> None:
    """The marker is not lost: the pages that show whole programs still mark them."""
    assert ("getting-started.md", "run.sh") in PROGRAMS
    assert ("hosts/executor.md", "survives.py") in PROGRAMS
    assert len(PROGRAMS) >= 4


@pytest.mark.slow
@pytest.mark.parametrize(("page", "program"), PROGRAMS, ids=[f"{p}:{f}" for p, f in PROGRAMS])
def test_every_complete_program_in_the_docs_runs(page: str, program: str, tmp_path: Path) -> None:
    """Each program runs as a reader would run it: the page's files in a project folder
    of their own, the command started there, no PYTHONPATH, the installed ``pprunner``
    and ``python`` on PATH. A program asserts what the page says it does."""
    for path, (_lang, text) in PAGES_FILES[page].items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and (not k.startswith("PPRUNNER_") or k == "PPRUNNER_SERIALIZER")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = ["bash", "-e", program] if program.endswith(".sh") else ["python", program]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its workers too, whatever happened
        process.wait()
    assert process.returncode == 0, f"{page}: {program} exited {process.returncode}:\n{output}"


def _include_hook() -> Any:
    _mkdocs_or_skip()
    spec = importlib.util.spec_from_file_location("docs_include", DOCS / "_hooks" / "include.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_include_of_a_missing_section_fails_the_build() -> None:
    include = _include_hook()
    page = SimpleNamespace(file=SimpleNamespace(src_uri="hosts/rq.md"))
    with pytest.raises(include.IncludeError, match="no-such-section"):
        include.on_page_markdown("<!-- include BENCHMARKS.md#no-such-section -->", page=page)
    with pytest.raises(include.IncludeError, match=r"NOPE\.md"):
        include.on_page_markdown("<!-- include NOPE.md -->", page=page)


def test_an_include_keeps_the_rows_of_the_systems_named() -> None:
    """A host page shows its own rows of the full run's tables, each metric named once,
    and the links between included files point at the pages that show them."""
    include = _include_hook()
    page = SimpleNamespace(file=SimpleNamespace(src_uri="hosts/huey.md"))
    shown = include.on_page_markdown(
        "## Benchmarks\n<!-- include BENCHMARKS.md#results systems=pprunner-sqlite,huey-redis -->",
        page=page)
    rows = [line for line in shown.splitlines() if line.startswith("| ")]
    systems = {line.split("|")[2].strip().split(" (")[0] for line in rows
               if not line.startswith("| metric")}
    assert systems == {"pprunner-sqlite", "huey-redis"}
    assert "| drain rate, excl. boot | pprunner-sqlite |" in shown
    assert "| | huey-redis |" in shown.replace("|  |", "| |")
    assert "### throughput" in shown  # the section's sub-headings, under the page's heading
    whole = include.on_page_markdown("<!-- include BENCHMARKS.md -->",
                                     page=SimpleNamespace(file=SimpleNamespace(src_uri="x.md")))
    assert "](benchmarks-method.md)" in whole and "](benchmarks/README.md" not in whole
