"""How pprunner and its extras are installed, as the README and the errors say it.

pprunner is installed from its clone, not from a package index: every install
command the README gives, and every one an error message gives, must work that
way. The ``benchmarks`` extra installs what every benchmarked system imports:
``pip install -e '.[benchmarks]'`` is how BENCHMARKS.md says to get the peers,
and a system whose library it leaves out shows as "not installed" in
``python -m benchmarks ...`` (issue 24: pprunner-sqlite-metrics did).
"""

from __future__ import annotations

import re

import pytest

from benchmarks.cli import COMMANDS
from pprunner.plugins import install_extra
from tests.conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: modules whose distribution is not named after their top-level package
DISTRIBUTION_OF = {"opentelemetry.trace": "opentelemetry-api",
                   "opentelemetry.sdk.trace": "opentelemetry-sdk"}
#: the project's own packages: installed by any extra
OWN = {"pprunner", "pprunner_plugins"}


def normalized(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_by(extra: str) -> set[str]:
    """The distributions ``pip install '.[extra]'`` brings besides pprunner: the
    core dependencies, the extra's own, and those of pprunner's extras it names
    (``pprunner[redis,msgpack]``)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names: set[str] = set()
    pending = [*project["dependencies"], *extras[extra]]
    while pending:
        requirement = pending.pop()
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
        assert match is not None, requirement
        name, named_extras = normalized(match[1]), match[2]
        if name == "pprunner":
            pending += [r for e in (named_extras or "").split(",") for r in extras[e.strip()]]
        else:
            names.add(name)
    return names


def distribution_of(module: str) -> str:
    return normalized(DISTRIBUTION_OF.get(module, module.partition(".")[0]))


def test_the_docs_install_from_the_clone() -> None:
    """Every ``pip install`` in the README and on the site's pages names the clone
    (``.``, ``-e .``, a path), never ``pprunner[...]`` on an index, where pprunner is not."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    commands = [command for page in pages
                for command in re.findall(r"pip install\s+([^`]*)", page.read_text())]
    assert len(commands) > 10
    by_name = [c for c in commands if re.search(r"(?<![/\w.])pprunner\[", c)]
    assert by_name == []


def test_a_missing_extra_is_named_with_a_command_that_installs_it() -> None:
    """In a clone (how pprunner is installed), the errors that name an extra give
    the clone's own path, so the command works from any folder."""
    assert install_extra("rq") == f"pip install -e '{REPO}[rq]'"


SYSTEMS = sorted({system for command in COMMANDS.values() for system in command.systems},
                 key=lambda system: system.name)


@pytest.mark.parametrize("system", SYSTEMS, ids=[system.name for system in SYSTEMS])
def test_the_benchmarks_extra_installs_what_each_system_imports(system: type) -> None:
    needed = {distribution_of(module) for module in system.requires
              if module.partition(".")[0] not in OWN}
    assert needed - installed_by("benchmarks") == set()


def test_self_references_are_expanded() -> None:
    """The check above reads ``pprunner[...]`` in an extra as pip does."""
    assert {"redis", "hiredis"} <= installed_by("rq")
    assert "attrs" in installed_by("otel")
