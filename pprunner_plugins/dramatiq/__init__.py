"""Dramatiq on pprunner's supervised workers: ``pprunner dramatiq``.

Install ``pprunner[dramatiq]`` and start the workers with the command you
use today, ``dramatiq`` replaced by ``pprunner dramatiq`` (Dramatiq's own
arguments, parsed by Dramatiq's own parser)::

    pprunner dramatiq myapp.tasks --processes 2 --threads 1 --queues default

Each worker process runs Dramatiq's own :class:`dramatiq.Worker` (its consumer
and worker threads, the broker's middleware, Results, Retries, Callbacks)
under pprunner's supervisor, which adds what ``dramatiq``'s parent lacks: a
dead worker is replaced alone, the message it held is settled at once by
Dramatiq's own ``Retries`` (:mod:`.settle`), hard time limits stop blocking
code, and workers are recycled by count and memory. :mod:`.consumer` is the
worker's side, :mod:`.command` the command.
"""

from __future__ import annotations

import argparse
from typing import Any

import pprunner
from pprunner.plugins import Command

from .._optional import OptionalLibrary

DRAMATIQ = OptionalLibrary("dramatiq", "dramatiq")
HELP = "run Dramatiq's workers on pprunner's supervisor (Dramatiq's own arguments)"


@pprunner.hookimpl
def pprunner_register_commands(register: Any) -> None:
    if DRAMATIQ.missing() is None:
        from .command import add_arguments, run

        register(Command("dramatiq", run, help=HELP, arguments=add_arguments))
    else:  # listed all the same, and says how to install it
        register(Command("dramatiq", _missing, help=HELP, arguments=_any_arguments))


def _any_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arguments", nargs=argparse.REMAINDER)


def _missing(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    parser.error(DRAMATIQ.missing() or "")
