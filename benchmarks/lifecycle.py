"""``python -m benchmarks.lifecycle [--rounds N] [--json PATH]``: how long work stands still
when pprunner loses a runner, on SQLite.

Three ways of losing one, each timed from the moment of the loss until the
affected work runs again, read from the invocations' own ``started_at`` (set
by the claiming worker) or from a task's own clock, so how quickly this
process polls does not count:

- ``time_limit``: a task past its hard ``time_limit`` has its worker killed by
  the supervisor; with one worker, the next invocation waits for the replacement.
- ``supervisor_killed``: supervisor A (not its workers) gets SIGKILL; its
  workers see the lifeline pipe close and hand back, and supervisor B runs them.
- ``host_lost``: A's whole process group gets SIGKILL, nobody hands back; B takes
  the work back once A's heartbeats are ``dead_after`` (default 30 s) old.

Every ``pprunner run`` is a real CLI process in its own process group with
default settings (except ``PPRUNNER_SHUTDOWN_TIMEOUT=1``, which only shortens
teardown), on a fresh database per round; rounds are run by
:func:`benchmarks.runner.run_round`, so teardown and the sweep for stray
processes are the ones the main benchmark uses.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pprunner.config import Config
from pprunner.invocation import Invocation, RunnerInfo, RunnerKind, Status

from . import procs, report, runner, system
from .cli import _positive
from .scenarios import Scenario, Settings
from .system import WORKERS, Value
from .systems.pprunner_common import SHUTDOWN_TIMEOUT
from .systems.pprunner_sqlite import PprunnerSQLite

#: how long the task past its time limit would sleep if nobody killed it
SLOW_TASK_S = 60.0
#: the tasks A's workers hold when A is lost (B runs them again in full)
HELD_TASK_S = 3.0
#: pprunner's default, which the supervisors run with (their environment sets no other)
DEAD_AFTER_S = Config().dead_after
#: seconds a supervisor may take until all its workers are ready
BOOT_BOUND_S = 30.0
#: seconds the work may take to run again when it needs no ``dead_after`` wait
RERUN_BOUND_S = 15.0
#: the host-lost case waits ``dead_after`` first: one round unless --rounds is given
HOST_LOST_DEFAULT_ROUNDS = 1
DEFAULT_ROUNDS = 3
#: lines of each supervisor's log shown when a round fails (the folder is then deleted)
LOG_TAIL = 20


@dataclass(frozen=True)
class Sample:
    seconds: float
    #: what else the round saw: the invocation's outcome, its attempt count
    note: str


# -- the pools ----------------------------------------------------------------------------


@dataclass
class Pool:
    """One ``pprunner run`` process group, its log, and its rows in the ``runners`` table."""

    process: subprocess.Popen[bytes]
    log: Path
    backend: Any

    def alive(self) -> None:
        """Fail at once, naming the log, if ``pprunner run`` exited when it should not have."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.log.stem}: pprunner run exited with code "
                               f"{self.process.returncode}")

    def workers(self) -> dict[str, RunnerInfo]:
        """This supervisor's worker rows: those whose supervisor row has our pid."""
        rows = self.backend.runners()
        mine = {r.id for r in rows if r.kind == RunnerKind.SUPERVISOR
                and r.pid == self.process.pid}
        return {r.id: r for r in rows if r.kind == RunnerKind.WORKER and r.supervisor in mine}

    def ready(self) -> set[str]:
        """Workers that have loaded the app: pprunner retitles a worker from
        "...: starting" to "...: idle" just before its claim loop (a row alone
        only means the process was spawned)."""
        self.alive()
        return {i for i, r in self.workers().items()
                if procs.title(r.pid).startswith("pprunner worker")
                and not procs.title(r.pid).endswith(": starting")}


def launch(bench: PprunnerSQLite, name: str, processes: int) -> Pool:
    """Start ``pprunner run --processes N`` on the round's database, in its own
    process group on the round's cleanup stack, and wait until every worker is ready."""
    argv = system.python("-m", "pprunner", "run", "--app", "benchmarks.apps:app",
                         "--processes", str(processes))
    log = bench.workdir / f"{name}.log"
    stream = bench.cleanup.enter_context(log.open("ab"))
    process = bench.cleanup.enter_context(procs.process_group(
        argv, cwd=bench.workdir, stdout=stream, stderr=stream, env=system.child_env(
            PPRUNNER_BACKEND=f"sqlite:///{bench.database}",
            PPRUNNER_SHUTDOWN_TIMEOUT=SHUTDOWN_TIMEOUT)))
    pool = Pool(process, log, bench.apps.app.backend)
    procs.wait_until(lambda: len(pool.ready()) >= processes, BOOT_BOUND_S,
                     f"{processes} workers of supervisor {name} to be ready", poll=0.02)
    return pool


# -- the cases ----------------------------------------------------------------------------


def time_limit(bench: PprunnerSQLite) -> Sample:
    """One worker: the slow task's worker is killed at its limit, and the quick
    task queued behind it can only start on the replacement."""
    apps, backend = bench.apps, bench.apps.app.backend
    launch(bench, "a", processes=1)
    slow = apps.limited_sleep.enqueue(str(bench.workdir / "slow.attempts"), SLOW_TASK_S)
    quick_started = apps.stamp.enqueue().result(timeout=RERUN_BOUND_S)
    slow_after = procs.wait_until(lambda: final(backend.get(slow.id)), RERUN_BOUND_S,
                                  "the slow invocation to end")
    limit_passed = slow_after.started_at + apps.limited_sleep.time_limit
    error = slow_after.error.type if slow_after.error else "no error"
    return Sample(quick_started - limit_passed, f"slow one {slow_after.status} {error}")


def final(invocation: Invocation) -> Invocation | None:
    return invocation if invocation.status.is_final else None


def supervisor_killed(bench: PprunnerSQLite) -> Sample:
    """SIGKILL of A's supervisor process only; its workers stay alive and learn
    of it through the lifeline pipe."""
    a, b, held = held_by_a(bench)
    return rerun_under(b, held, procs.kill_now(a.process.pid), RERUN_BOUND_S)


def host_lost(bench: PprunnerSQLite) -> Sample:
    """SIGKILL of A's whole process group at once, as if its host vanished."""
    a, b, held = held_by_a(bench)
    killed_at = time.time()
    procs.kill_group(a.process.pid)
    return rerun_under(b, held, killed_at, DEAD_AFTER_S + RERUN_BOUND_S)


def held_by_a(bench: PprunnerSQLite) -> tuple[Pool, Pool, list[str]]:
    """A's two workers each hold a task; B is ready and idle.

    B is started only once A's workers hold the tasks, so B's workers are
    free when the work comes back: the measure is the recovery, not B
    finishing tasks of its own.
    """
    apps, backend = bench.apps, bench.apps.app.backend
    a = launch(bench, "a", WORKERS)
    marker = str(bench.workdir / "held.attempts")
    held = [apps.announce_and_sleep.enqueue(marker, HELD_TASK_S).id for _ in range(WORKERS)]
    a_workers = set(a.workers())
    procs.wait_until(lambda: all(backend.get(i).owner in a_workers for i in held),
                     RERUN_BOUND_S, "A's workers to hold the tasks")
    b = launch(bench, "b", WORKERS)
    now = [backend.get(i) for i in held]
    if any(i.status is not Status.RUNNING or i.owner not in a_workers for i in now):
        raise RuntimeError(f"A's {HELD_TASK_S:g} s tasks ended before B was ready: "
                           f"{[(i.status.value, i.owner) for i in now]}")
    return a, b, held


def rerun_under(b: Pool, held: Sequence[str], killed_at: float, bound: float) -> Sample:
    """Seconds from ``killed_at`` until every held invocation has been claimed
    again by one of B's workers (the latest ``started_at`` of them)."""
    backend, b_workers = b.backend, set(b.workers())

    def rerun() -> list[Invocation] | None:
        b.alive()
        now = [backend.get(i) for i in held]
        return now if all(i.owner in b_workers and i.started_at for i in now) else None

    rerun_now = procs.wait_until(rerun, bound, "B to run A's invocations again", poll=0.02)
    started = max(i.started_at or 0.0 for i in rerun_now)  # all set: see rerun()
    attempts = sorted({i.attempts for i in rerun_now})
    errors = sorted({i.error.type if i.error else "none" for i in rerun_now})
    return Sample(started - killed_at, f"attempts {attempts}, error {'/'.join(errors)}")


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    #: how the number is taken, for the table
    method: str
    measure: Callable[[PprunnerSQLite], Sample]


CASES = (
    Case("time_limit", "hard time limit -> next invocation running",
         "1 worker; limited_sleep (time_limit=0.5) sleeps 60 s, stamp() queued behind it; "
         "its started_at + 0.5 -> stamp()'s own time.time()", time_limit),
    Case("supervisor_killed", "supervisor SIGKILLed alone -> running under B",
         f"A and B, 2 workers each; A's hold {HELD_TASK_S:g} s tasks, B idle; SIGKILL A's pid "
         "-> latest started_at under a B worker", supervisor_killed),
    Case("host_lost", "whole host lost -> running under B",
         f"as above, SIGKILL A's whole group; dead_after {DEAD_AFTER_S:g} s, heartbeat "
         f"{Config().heartbeat_interval:g} s (defaults)", host_lost),
)


# -- rounds and the report --------------------------------------------------------------------


@dataclass
class Result:
    case: Case
    samples: list[Sample] = field(default_factory=list)
    error: str = ""

    def row(self, rounds: int) -> list[str]:
        if not self.samples:
            return [self.case.label, f"error: {self.error}"[:60], "", "", f"0/{rounds}",
                    self.case.method]
        seconds = [s.seconds for s in self.samples]
        seen = collections.Counter(s.note for s in self.samples)
        notes = "; ".join(f"{note} ({count}/{len(self.samples)})" for note, count in seen.items())
        return [self.case.label, f"{statistics.median(seconds):.3f}", f"{min(seconds):.3f}",
                f"{max(seconds):.3f}", f"{len(seconds)}/{rounds}",
                f"{self.case.method}. seen: {notes}" + (f". error: {self.error}" if self.error
                                                        else "")]


def scenario_of(case: Case) -> Scenario:
    """The case as a scenario of the main benchmark, so ``runner.run_round`` runs it:
    a fresh folder, PprunnerSQLite's producer setup, teardown and stray sweep."""
    def measure(bench: system.System, settings: Settings) -> dict[str, Value]:
        assert isinstance(bench, PprunnerSQLite)
        try:
            sample = case.measure(bench)
        except Exception:
            show_logs(bench.workdir)  # the folder is gone once the round ends
            raise
        return {"seconds": sample.seconds, "note": sample.note}
    return Scenario(case.key, lambda settings: case.label, (), measure)


def show_logs(workdir: Path) -> None:
    for log in sorted(workdir.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        runner.note(f"--- last lines of supervisor {log.stem}'s log:\n" + "\n".join(lines))


def run_case(case: Case, rounds: int) -> Result:
    result = Result(case)
    scenario = scenario_of(case)
    settings = Settings.make(quick=True, rounds=rounds)  # unused by the cases
    for number in range(1, rounds + 1):
        runner.note(f"{case.key}: round {number}/{rounds} ...")
        started = time.monotonic()
        try:
            values = runner.run_round(scenario, PprunnerSQLite, settings)
        except Exception as exc:
            runner.note(f"  failed: {type(exc).__name__}: {exc}")
            result.error = f"{type(exc).__name__}: {exc}"
            break
        seconds, note = values["seconds"], values["note"]
        assert isinstance(seconds, float) and isinstance(note, str)
        result.samples.append(Sample(seconds, note))
        runner.note(f"  {seconds:.3f} s ({note}), round took {time.monotonic() - started:.1f} s")
    return result


def table(results: Sequence[Result], rounds: dict[str, int]) -> str:
    headers = ["scenario", "median s", "min s", "max s", "rounds", "method"]
    lines = report.aligned([headers, *(r.row(rounds[r.case.key]) for r in results)])
    rule = "-" * max(map(len, lines))
    return "\n".join([rule, lines[0], rule, *lines[1:], rule])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lifecycle",
                                     description="Time pprunner's recovery from lost runners.")
    parser.add_argument("--rounds", type=_positive, metavar="N",
                        help=f"rounds per case (default {DEFAULT_ROUNDS}; host_lost: "
                             f"{HOST_LOST_DEFAULT_ROUNDS}, as each waits dead_after)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write the results, every round included, as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rounds = {case.key: args.rounds or (HOST_LOST_DEFAULT_ROUNDS if case.key == "host_lost"
                                        else DEFAULT_ROUNDS) for case in CASES}
    procs.become_subreaper()  # a killed supervisor's workers come back to us to be reaped
    signal.signal(signal.SIGTERM, runner.interrupt)
    info = report.machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['python']}, "
          f"pprunner {info['pprunner']} (git {info['git']}), {info['date']}", flush=True)
    results: list[Result] = []
    code = 0
    try:
        for case in CASES:
            results.append(run_case(case, rounds[case.key]))
    except KeyboardInterrupt:
        runner.note("interrupted; every process the benchmark started has been ended")
        code = 130
    print(table(results, rounds), flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": info, "rounds": rounds,
            "results": [{"scenario": r.case.key, "label": r.case.label, "method": r.case.method,
                         "samples": [asdict(s) for s in r.samples], "error": r.error,
                         **({"median_s": statistics.median(s.seconds for s in r.samples),
                             "min_s": min(s.seconds for s in r.samples),
                             "max_s": max(s.seconds for s in r.samples)} if r.samples else {})}
                        for r in results]}, indent=2) + "\n")
    return code or int(any(r.error for r in results))


if __name__ == "__main__":
    sys.exit(main())
