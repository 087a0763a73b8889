"""A minimal third-party pprunner plugin: a liveness file for process managers.

``pprunner run --heartbeat-file /run/pprunner.alive`` rewrites the file on
every supervisor heartbeat with the live runners, so a container
orchestrator can check its age (e.g. ``find /run/pprunner.alive -mmin -1``)
even while every worker is busy.

Install it next to pprunner (``pip install ./examples/plugin_package``) and
it is picked up through its ``[project.entry-points.pprunner]`` table.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import pprunner

_path: str | None = None


@pprunner.hookimpl
def pprunner_add_cli_options(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "run":
        parser.add_argument("--heartbeat-file", metavar="PATH",
                            help="rewrite PATH with the live runners on every heartbeat")


@pprunner.hookimpl
def pprunner_supervisor_started(options: argparse.Namespace | None) -> None:
    global _path
    _path = getattr(options, "heartbeat_file", None)


@pprunner.hookimpl
def pprunner_heartbeat(runners: Sequence[pprunner.RunnerInfo], at: float) -> None:
    if _path is None:
        return
    state: dict[str, Any] = {"at": at, "runners": [
        {"id": r.id, "kind": str(r.kind), "pid": r.pid} for r in runners]}
    partial = f"{_path}.tmp"
    with open(partial, "w") as stream:
        json.dump(state, stream)
    os.replace(partial, _path)  # readers never see a half-written file
