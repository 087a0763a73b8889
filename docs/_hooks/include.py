"""MkDocs hook: pages include the repository's own Markdown instead of copying it.

BENCHMARKS.md (the benchmark command's tables, pasted as it prints them) and
benchmarks/README.md (how each number is measured) stay where the benchmark tooling and
readers of the repository find them; the site shows them, whole or a section at a time,
so a new run pasted there is on the site without a second copy to forget. A page asks
with one line of its own::

    <!-- include BENCHMARKS.md -->
    <!-- include BENCHMARKS.md#rq-persistent-horses-rq-worker-pool-pprunner -->
    <!-- include BENCHMARKS.md#results systems=pprunner-sqlite,huey-redis -->

``#slug`` takes the section under that heading (its own heading left out, its
sub-headings moved to sit under the page's heading before the include line);
``systems=`` keeps, in every table with a ``system`` column, the rows of those systems.
Links between the included files are rewritten to the pages that show them. An include
that names a missing file or section fails the build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[2]
#: repository file -> the site page that shows it (links to one become links to the other)
PAGE_OF = {
    "BENCHMARKS.md": "benchmarks.md",
    "benchmarks/README.md": "benchmarks-method.md",
    "docs/architecture.md": "architecture.md",
}
INCLUDE = re.compile(r"^<!-- include (?P<path>[\w./-]+)(?:#(?P<slug>[\w-]+))?"
                     r"(?: systems=(?P<systems>[\w.,+-]+))? -->$")
HEADING = re.compile(r"^(#{1,6}) (.*)$")
LINK = re.compile(r"\]\((?P<target>[\w./-]+\.md)(?P<anchor>#[\w-]+)?\)")
#: "(1 of 3 rounds)" and the like after a system's name in a table cell
ROUNDS_NOTE = re.compile(r"\s*\(.*\)$")


class IncludeError(Exception):
    """An include line names a file or section that does not exist."""


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace each include line of a page with what it names."""
    out: list[str] = []
    level = 1
    for line in markdown.splitlines():
        match = INCLUDE.match(line.strip())
        if match is None:
            heading = HEADING.match(line)
            if heading:
                level = len(heading.group(1))
            out.append(line)
            continue
        text = _read(match["path"], page.file.src_uri)
        if match["slug"]:
            text = _section(text, match["slug"], level, match["path"])
        if match["systems"]:
            text = _rows_of(text, set(match["systems"].split(",")))
        out.append(text)
    return "\n".join(out)


def _read(path: str, including_page: str) -> str:
    source = ROOT / path
    if not source.is_file():
        raise IncludeError(f"{including_page}: include of {path}, which does not exist")
    here = posixpath.dirname(including_page)

    def relink(match: re.Match[str]) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), match["target"]))
        page = PAGE_OF.get(target)
        if page is None:
            return match.group(0)
        # GitHub keeps a hyphen per space and dash ("python--m"); the site's anchors one
        anchor = re.sub("-+", "-", match["anchor"] or "")
        return f"]({posixpath.relpath(page, here or '.')}{anchor})"

    return LINK.sub(relink, source.read_text(encoding="utf-8"))


def _section(text: str, slug: str, under: int, path: str) -> str:
    """The body of the section headed ``slug``, its sub-headings placed under level ``under``."""
    lines = text.splitlines()
    headings = [(number, HEADING.match(line)) for number, line in enumerate(lines)]
    found = [(number, heading) for number, heading in headings
             if heading and slugify(heading.group(2).replace("`", ""), "-") == slug]
    if not found:
        raise IncludeError(f"include of {path}#{slug}: no heading has that anchor")
    start, own = found[0][0], len(found[0][1].group(1))
    body: list[str] = []
    for line in lines[start + 1:]:
        heading = HEADING.match(line)
        if heading and len(heading.group(1)) <= own:
            break
        if heading:
            line = "#" * min(6, len(heading.group(1)) - own + under) + " " + heading.group(2)
        body.append(line)
    return "\n".join(body)


def _rows_of(text: str, systems: set[str]) -> str:
    """Tables with a ``system`` column keep only these systems' rows; the first kept row
    of a metric names it, however blank its cell was in the full table."""
    out: list[str] = []
    system_column = None
    metric = shown = ""
    for line in text.splitlines():
        if not line.startswith("|"):
            system_column = None
            out.append(line)
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if system_column is None:
            system_column = cells.index("system") if "system" in cells else -1
            metric = shown = ""
            out.append(line)
            continue
        if system_column < 0 or set(cells[system_column]) <= {"-"}:
            out.append(line)
            continue
        metric = cells[0] or metric
        if ROUNDS_NOTE.sub("", cells[system_column]) in systems:
            if system_column > 0:
                cells[0] = "" if metric == shown else metric
                shown = metric
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
