"""The web dashboard: ``pprunner web --app myapp:app``.

Install ``pprunner[web]`` (Starlette, uvicorn, Jinja2). It shows what ``pprunner
top`` shows, read through the same :func:`~pprunner.snapshot.look` (queue by
status, rates over time, supervisors and workers with their state, task and
memory, failures with their tracebacks), refreshed in place by a few lines of
``fetch()``, and acts as ``retry``, ``purge`` and ``scale`` do. :mod:`.watch`
reads and acts, :mod:`.app` serves, :mod:`.access` guards, :mod:`.command` starts it.
docs/web.md is the user's page.
"""

from __future__ import annotations

import argparse
from typing import Any

import pprunner
from pprunner.plugins import Command

HELP = "a web dashboard of the store: queue, rates, workers, failures; retry, purge, scale"


@pprunner.hookimpl
def pprunner_register_commands(register: Any) -> None:
    register(Command("web", _run, help=HELP, arguments=_arguments))


def _arguments(parser: argparse.ArgumentParser) -> None:
    from .command import add_arguments  # needs none of the web extra's libraries

    add_arguments(parser)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .command import run

    return run(args, parser)
