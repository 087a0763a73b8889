"""Runs a scenario on each system for N rounds and keeps the medians.

Each round gets a fresh system object and an empty temporary folder, and
ends with the system's teardown and a sweep for stray processes, whatever
happened: an error, a timeout or Ctrl-C. A failing system is reported as
an error in its row; the other systems still run.

By default a system runs all its rounds before the next one starts. With
``settings.interleave`` round 1 of every system runs, then round 2 of every system,
and so on: on a machine whose load drifts, systems compared with each other
(metrics on and off) then see the same drift. Each round starts one system
later than the one before (A B C, then B C A, then C A B), so no system always
runs first, or always right after the same other one: what a round leaves
behind (a warm page cache, a Redis busy freeing the last round's keys) then
falls on each in turn.
"""

from __future__ import annotations

import contextlib
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import procs
from .scenarios import Scenario, Settings
from .system import System, Value

T = TypeVar("T")


@dataclass
class Result:
    """One system in one scenario."""

    system: str
    #: "ok", "error", "not installed", "unavailable" or "not supported"
    status: str
    #: metric key -> median over the rounds
    median: dict[str, Value] = field(default_factory=dict)
    #: metric key -> value, one dict per round
    rounds: list[dict[str, Value]] = field(default_factory=list)
    error: str = ""


def run_scenario(scenario: Scenario, systems: Sequence[type[System]],
                 settings: Settings) -> list[Result]:
    if settings.interleave:
        return interleaved(scenario, systems, settings)
    return [measure(scenario, cls, settings) for cls in systems]


def cannot_run(scenario: Scenario, cls: type[System]) -> Result | None:
    """Why ``cls`` cannot run ``scenario`` here, as its row; None when it can."""
    if missing := cls.missing():
        return Result(cls.name, "not installed", error=f"cannot import {', '.join(missing)}")
    if not cls.supports(scenario.name):
        return Result(cls.name, "not supported")
    if reason := cls.unavailable():
        note(f"{scenario.name}: {cls.name} is unavailable: {reason}")
        return Result(cls.name, "unavailable", error=reason)
    return None


def interleaved(scenario: Scenario, systems: Sequence[type[System]],
                settings: Settings) -> list[Result]:
    """Round 1 of every system, then round 2 of every system, ..., each round's
    order rotated by one (module docstring); no round budget. A system whose
    round fails is an error and runs no further round."""
    results = {cls: cannot_run(scenario, cls) for cls in systems}
    rounds: dict[type[System], list[dict[str, Value]]] = {cls: [] for cls in systems}
    planned = scenario.rounds(settings)
    for number in range(1, planned + 1):
        for cls in rotated(systems, number):
            if results[cls] is not None:
                continue
            note(f"{scenario.name}: {cls.name}, round {number}/{planned} (interleaved) ...")
            started = time.monotonic()
            try:
                rounds[cls].append(run_round(scenario, cls, settings))
            except Exception as exc:
                note(traceback.format_exc())
                results[cls] = Result(cls.name, "error", rounds=rounds[cls],
                                      error=f"{type(exc).__name__}: {exc}")
                continue
            note(f"  done in {time.monotonic() - started:.1f} s")
    return [results[cls] or Result(cls.name, "ok", median=medians(rounds[cls]),
                                   rounds=rounds[cls]) for cls in systems]


def rotated(items: Sequence[T], number: int) -> list[T]:
    """The order of interleaved round ``number`` (from 1): each round starts one
    item later than the round before (module docstring)."""
    shift = (number - 1) % len(items)
    return [*items[shift:], *items[:shift]]


def measure(scenario: Scenario, cls: type[System], settings: Settings) -> Result:
    if (refused := cannot_run(scenario, cls)) is not None:
        return refused
    rounds: list[dict[str, Value]] = []
    first_started = started = time.monotonic()
    planned = scenario.rounds(settings)
    for number in range(1, planned + 1):
        if rounds and all(isinstance(v, str) for v in rounds[-1].values()):
            outcomes = ", ".join(map(str, rounds[-1].values()))
            note(f"  {cls.name}: outcomes, no numbers ({outcomes}); no more rounds")
            break
        last_took = time.monotonic() - started if rounds else 0.0
        if number > 1 and (time.monotonic() + last_took - first_started
                           > settings.round_budget_s):
            note(f"  {cls.name} has used its {settings.round_budget_s:g} s: "
                 f"{len(rounds)} of {planned} rounds")
            break
        note(f"{scenario.name}: {cls.name}, round {number}/{planned} ...")
        started = time.monotonic()
        try:
            rounds.append(run_round(scenario, cls, settings))
        except Exception as exc:
            note(traceback.format_exc())
            return Result(cls.name, "error", rounds=rounds, error=f"{type(exc).__name__}: {exc}")
        note(f"  done in {time.monotonic() - started:.1f} s")
    return Result(cls.name, "ok", median=medians(rounds), rounds=rounds)


def run_round(scenario: Scenario, cls: type[System], settings: Settings) -> dict[str, Value]:
    system = cls()
    with tempfile.TemporaryDirectory(prefix="pprunner-bench-") as workdir:
        try:
            system.setup(Path(workdir))
            return scenario.measure(system, settings)
        finally:
            with interrupts_deferred():
                try:
                    system.teardown()
                finally:
                    for stray in procs.reap_strays():
                        note(f"warning: {cls.name} left {stray} running; killed it")


def medians(rounds: list[dict[str, Value]]) -> dict[str, Value]:
    """Per metric, the median of the rounds; a word (e.g. "never") wins over
    numbers, saying in how many rounds it happened when not in all."""
    result: dict[str, Value] = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        words = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if not isinstance(v, str)]
        if not words:
            result[key] = statistics.median(numbers)
        else:
            result[key] = words[0] if not numbers else f"{words[0]} in {len(words)}/{len(values)}"
    return result


#: the signals that stop a benchmark run (see ``cli.main``)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: stop like Ctrl-C does, cleaning up on the way out."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, so cleanup is never
    cut short. Cleanup is bounded (see :mod:`benchmarks.procs`), so the wait is too.
    """
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise KeyboardInterrupt(signal.Signals(received[0]).name)


def note(text: str) -> None:
    """Progress and diagnostics go to stderr; stdout holds only the report."""
    print(text, file=sys.stderr, flush=True)
