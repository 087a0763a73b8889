"""Huey's consumer on pprunner's supervised workers: ``pprunner huey path.to.huey ...``.

Install with ``python -m pip install -e '.[huey]'`` in the clone. The command takes
``huey_consumer``'s own arguments (:mod:`.command`); each worker process runs
Huey's own worker loop (:mod:`.consumer`). docs/hosts/huey.md puts the two
commands side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

import pprunner
from pprunner.plugins import Command, install_extra

HELP = "run Huey's consumer (huey_consumer's arguments) on pprunner's workers"


def _arguments(parser: argparse.ArgumentParser) -> None:
    if importlib.util.find_spec("huey") is None:
        parser.add_argument("huey_arguments", nargs=argparse.REMAINDER)
        return
    from .command import arguments

    arguments(parser)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if importlib.util.find_spec("huey") is None:
        parser.error(f"the huey package is not installed: {install_extra('huey')}")
    from .command import run

    return run(args, parser)


@pprunner.hookimpl
def pprunner_register_commands(register: Any) -> None:
    register(Command("huey", _run, help=HELP, arguments=_arguments))
