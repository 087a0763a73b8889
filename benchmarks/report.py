"""The machine header and one table per scenario, as text, Markdown and JSON.

Every table compares each system's median with the baseline's in words
("3.0x faster", "2.1x more"), so no one has to remember which way a ratio
goes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from .runner import Result
from .scenarios import P99, Metric, Scenario, Settings
from .system import ROOT, Value

#: longest error text in a table cell (the whole message is in the JSON and on stderr)
CELL_LIMIT = 60
#: the libraries whose versions decide the numbers, printed with the machine
VERSIONED = ("redis", "hiredis", "msgpack", "celery", "kombu", "rq", "dramatiq", "huey",
             "pynenc", "loky", "psycopg", "pgqueuer", "asyncpg", "taskiq", "taskiq-redis")

Table = tuple[list[str], list[list[str]]]


def machine() -> dict[str, Any]:
    try:
        pprunner = metadata.version("pprunner")
    except metadata.PackageNotFoundError:
        pprunner = "not installed"
    return {"cpus": os.cpu_count(), "cpu_model": _cpu_model(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "pprunner": pprunner, "platform": platform.platform(), "git": _git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(), "redis_server": _redis_server(),
            "postgres_server": _postgres_server()}


def _versions() -> dict[str, str]:
    """Installed versions of the libraries in :data:`VERSIONED` (missing ones left out)."""
    found = {}
    for name in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _redis_server() -> str:
    """The version of the Redis server the Redis systems use, or why there is none."""
    from .systems.pprunner_redis import server_version

    return server_version()


def _postgres_server() -> str:
    """The version of the PostgreSQL server the PostgreSQL systems use, or why there is none."""
    from .systems.pprunner_postgres import server_version

    return server_version()


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.startswith("model name")), "unknown")


def _git_commit() -> str:
    """The repository's commit, "+ changes" when the work tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + (" + changes" if git("status", "--porcelain", "--untracked-files=no")
                         else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_line(info: dict[str, Any]) -> str:
    """One line naming the machine, for the single-table benchmarks."""
    return (f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['python']}, "
            f"pprunner {info['pprunner']} ({info['git']}), {info['date']}")


def header_lines(info: dict[str, Any], settings: Settings) -> list[str]:
    return [f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['platform']}",
            f"python {info['python']}, pprunner {info['pprunner']} (git {info['git']}), "
            f"{info['date']}",
            "libraries: " + (", ".join(f"{k} {v}" for k, v in info["versions"].items())
                             or "none of the peers") + f"; Redis server {info['redis_server']}"
            + f"; PostgreSQL server {info.get('postgres_server', 'unknown')}",
            f"{settings.rounds} round(s) per system and scenario"
            + ("" if settings.rounds_forced else
               " (latency and idle cost: 1, each already a statistic over many samples)")
            + ("; interleaved: round 1 of every system, then round 2, ..., each round starting"
               " one system later; tables show medians"
               if settings.interleave else
               f"; fewer where another round would have ended past {settings.round_budget_s:g} s "
               "or a round had outcomes and no numbers (never, deadlock); tables show medians")]


# -- tables -------------------------------------------------------------------------------


def number(value: Value, unit: str) -> str:
    if isinstance(value, str):
        return value
    if not unit or value == 0:
        return f"{value:g} {unit}".rstrip()
    size = abs(value)
    text = (f"{value:,.0f}" if size >= 100 else f"{value:.1f}" if size >= 10
            else f"{value:.2f}" if size >= 1 else f"{value:.3f}")
    return f"{text} {unit}"


def ratio(metric: Metric, value: Value, baseline: Value) -> str:
    """How ``value`` compares with the baseline's, in the metric's words."""
    if isinstance(value, str) or isinstance(baseline, str):
        return "-"
    if value == baseline:
        return "same"
    if min(value, baseline) <= 0:
        return "n/a (zero)"
    better = value > baseline if metric.higher_is_better else value < baseline
    good, bad = metric.words
    return f"{max(value, baseline) / min(value, baseline):.1f}x {good if better else bad}"


def table(scenario: Scenario, settings: Settings, results: Sequence[Result],
          baseline: str) -> Table:
    with_p99 = any(m.has_p99 for m in scenario.metrics)
    headers = ["metric", "system", "median", *(["p99"] if with_p99 else []),
               f"vs {baseline}"]
    base = next((r for r in results if r.system == baseline and r.status == "ok"), None)
    rows = []
    for metric in scenario.metrics:
        for index, result in enumerate(results):
            label = metric.label if index == 0 else ""
            if result.status != "ok":
                status = result.status
                if result.error and result.status in ("error", "unavailable"):
                    status = f"{result.status}: {result.error}".splitlines()[0][:CELL_LIMIT]
                rows.append([label, result.system, status, *([""] if with_p99 else []), "-"])
                continue
            value = result.median[metric.key]
            p99 = number(result.median[metric.key + P99], metric.unit) if metric.has_p99 else ""
            compared = ("baseline" if result.system == baseline else
                        ratio(metric, value, base.median[metric.key]) if base else "-")
            name = result.system
            planned = scenario.rounds(settings)
            if len(result.rounds) < planned:  # cut short: round budget, or outcomes only
                name += f" ({len(result.rounds)} of {planned} rounds)"
            rows.append([label, name, number(value, metric.unit),
                         *([p99] if with_p99 else []), compared])
    return headers, rows


def legend(scenario: Scenario, baseline: str) -> str:
    p99 = "; p99 is not compared" if any(m.has_p99 for m in scenario.metrics) else ""
    return (f'"vs {baseline}": the system\'s median against {baseline}\'s, e.g. "3.0x faster" '
            f"= this system is 3.0 times faster than {baseline}{p99}.")


def title(scenario: Scenario, settings: Settings) -> str:
    return f"{scenario.name}: {scenario.title(settings)}"


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """The rows as lines of left-aligned columns (every benchmark prints its tables so)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def text(scenario: Scenario, settings: Settings, results: Sequence[Result],
         baseline: str) -> str:
    headers, rows = table(scenario, settings, results, baseline)
    lines = aligned([headers, *rows])
    rule = "-" * max(map(len, lines))
    return "\n".join([title(scenario, settings), rule, lines[0], rule, *lines[1:], rule,
                      legend(scenario, baseline)])


def markdown(info: dict[str, Any], settings: Settings,
             done: Sequence[tuple[Scenario, Sequence[Result]]], baseline: str,
             heading: str = "pprunner benchmarks") -> str:
    out = [f"# {heading}", "", *(f"- {line}" for line in header_lines(info, settings))]
    for scenario, results in done:
        headers, rows = table(scenario, settings, results, baseline)
        out += ["", f"## {scenario.name}", "", scenario.title(settings), "",
                "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                for row in rows]
        out += ["", legend(scenario, baseline)]
    return "\n".join(out) + "\n"


def to_json(info: dict[str, Any], settings: Settings,
            done: Sequence[tuple[Scenario, Sequence[Result]]], baseline: str) -> str:
    return json.dumps({
        "machine": info, "settings": dataclasses.asdict(settings), "baseline": baseline,
        "scenarios": [{"name": scenario.name, "title": scenario.title(settings),
                       "metrics": [dataclasses.asdict(m) for m in scenario.metrics],
                       "results": [dataclasses.asdict(r) for r in results]}
                      for scenario, results in done],
    }, indent=2)
