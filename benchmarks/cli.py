"""``python -m benchmarks run|executors|tracing|floor|taskiq [--quick] [--only SCENARIO,...] ...``,
``python -m benchmarks redis_cost|hosts|async_waiters [...]``

``run`` measures pprunner's pull mode against queues and pools, ``executors``
``pprunner.Executor`` against the pools without a queue, ``tracing`` pprunner
with tracing off and on, ``floor`` pprunner's drain against its store
operations with the worker removed; the same options,
each command its own systems, scenarios and baseline. Tables go to stdout as
each scenario finishes, progress to stderr. Nothing is installed: a system
whose library is missing is "not installed".
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import procs, report, runner, system
from .runner import Result
from .scenarios import (
    EXECUTOR_SCENARIOS,
    FLOOR_SCENARIOS,
    SCENARIOS,
    TASKIQ_SCENARIOS,
    TRACING_SCENARIOS,
    Scenario,
    Settings,
)
from .system import System
from .systems import (
    BASELINE,
    EXECUTOR_BASELINE,
    EXECUTORS,
    FLOOR_SYSTEMS,
    SYSTEMS,
    TASKIQ_BASELINE,
    TASKIQ_SYSTEMS,
    TRACING_SYSTEMS,
)


@dataclass(frozen=True)
class Command:
    """One comparison: which systems run which scenarios, against which baseline."""

    name: str
    help: str
    heading: str
    scenarios: dict[str, Scenario]
    systems: tuple[type[System], ...]
    baseline: str
    #: no further round of a system that would end past this (None: the settings' own,
    #: which keeps slow peers from taking the run; pprunner alone needs every round)
    round_budget_s: float | None = None


COMMANDS = {command.name: command for command in (
    Command("run", "run the benchmarks and print one table per scenario",
            "pprunner benchmarks", SCENARIOS, SYSTEMS, BASELINE),
    Command("executors", "pprunner.Executor against ProcessPoolExecutor, loky and "
            "multiprocessing.Pool, one table per scenario",
            "pprunner.Executor against the standard library's pools and loky",
            EXECUTOR_SCENARIOS, EXECUTORS, EXECUTOR_BASELINE),
    Command("tracing", "what the OpenTelemetry plugin costs: pprunner-sqlite with the "
            "tracing setting off, on without the SDK, and on with it",
            "pprunner with tracing off and on", TRACING_SCENARIOS, TRACING_SYSTEMS,
            BASELINE, round_budget_s=180.0),
    Command("floor", "the no-op drain of pprunner's workers against the same store "
            "operations with the worker removed (systems/drain_floor.py), and Huey's",
            "pprunner's drain against its store's floor", FLOOR_SCENARIOS, FLOOR_SYSTEMS,
            BASELINE, round_budget_s=180.0),
    Command("taskiq", "taskiq worker's thread pool (its default) and process pool against "
            "pprunner's receiver: CPU-bound throughput, a killed worker's task, idle cost",
            "taskiq worker's pools and pprunner's receiver", TASKIQ_SCENARIOS,
            TASKIQ_SYSTEMS, TASKIQ_BASELINE),
)}


def _names(known: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown name {unknown[0] if unknown else text!r}; known: {', '.join(known)}")
        return names
    parse.__name__ = "list of names"
    return parse


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Benchmark pprunner against other pools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        names = [s.name for s in command.systems]
        run = commands.add_parser(command.name, help=command.help)
        run.add_argument("--quick", action="store_true",
                         help="smaller workloads and 1 round (about 5 minutes)")
        run.add_argument("--only", type=_names(list(command.scenarios)), metavar="SCENARIO,...",
                         help=f"scenarios to run (default: all): {', '.join(command.scenarios)}")
        run.add_argument("--systems", type=_names(names), metavar="SYSTEM,...",
                         help=f"systems to run (default: all): {', '.join(names)}")
        run.add_argument("--rounds", type=_positive, metavar="N",
                         help="rounds per system and scenario (default: 3, --quick: 1)")
        run.add_argument("--interleave", action="store_true",
                         help="round 1 of every system, then round 2 of every system, ...: "
                              "systems compared on a noisy machine see the same noise")
        run.add_argument("--json", type=Path, metavar="PATH",
                         help="also write the results as JSON")
        run.add_argument("--markdown", type=Path, metavar="PATH",
                         help="also write the tables as Markdown")
    return parser


#: measurements of one thing, each a module with its own options and ``main(argv)``
TOOLS = {"redis_cost": "benchmarks.redis_cost", "hosts": "benchmarks.hosts",
         "async_waiters": "benchmarks.async_waiters"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        tool: Any = importlib.import_module(TOOLS[argv[0]])
        return int(tool.main(argv[1:]))
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    settings = Settings.make(quick=args.quick, rounds=args.rounds, interleave=args.interleave)
    if command.round_budget_s is not None:
        settings = dataclasses.replace(settings, round_budget_s=command.round_budget_s)
    scenarios = [command.scenarios[name] for name in args.only or command.scenarios]
    systems = [s for s in command.systems if args.systems is None or s.name in args.systems]
    procs.become_subreaper()
    system.compile_bytecode()
    signal.signal(signal.SIGTERM, runner.interrupt)
    # a forked pool worker is stopped by SIGTERM; it must not inherit that handler
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    info = report.machine()
    print("\n".join(report.header_lines(info, settings)), flush=True)
    done: list[tuple[Scenario, Sequence[Result]]] = []
    code = 0
    try:
        for scenario in scenarios:
            results = runner.run_scenario(scenario, systems, settings)
            done.append((scenario, results))
            print("\n" + report.text(scenario, settings, results, command.baseline), flush=True)
            code = code or int(any(r.status == "error" for r in results))
    except KeyboardInterrupt:
        runner.note("interrupted; every process the benchmark started has been ended")
        code = 130
    if args.json:
        args.json.write_text(report.to_json(info, settings, done, command.baseline) + "\n")
    if args.markdown:
        args.markdown.write_text(report.markdown(info, settings, done, command.baseline,
                                                     command.heading))
    return code
