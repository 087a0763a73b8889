"""``pprunner top``: what a store's supervisors and workers do, refreshed.

The content is one function of a :class:`~pprunner.snapshot.Snapshot`
(:func:`summary` and :func:`sections`), drawn either on a terminal screen by
:mod:`pprunner.top_screen` (the ``top`` extra: Textual) or, when the output is
not a terminal or a count of refreshes is given, printed as plain text again
every interval (:func:`print_refreshes`), which needs no extra.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import attrs

from .display import counts_text, duration_text, memory_text, table_lines
from .errors import PprunnerError
from .exitcodes import ExitCode
from .invocation import Invocation, Status
from .snapshot import RATE_WINDOW, RunnerView, Snapshot

#: seconds between refreshes unless ``--interval`` says otherwise
DEFAULT_INTERVAL = 1.0
#: failures listed unless ``--failures`` says otherwise
DEFAULT_FAILURES = 10
#: the longest error message shown in a failure's row
ERROR_WIDTH = 100


@attrs.frozen
class Section:
    """One table of the view: a title line, then the header and the rows."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def summary(snapshot: Snapshot) -> list[str]:
    """The lines above the tables: the queue by status and the last minute's rates."""
    return [f"queue: {counts_text(snapshot.counts)}",
            f"last {RATE_WINDOW:.0f} s: {snapshot.rate(Status.SUCCESS):.2f} succeeded/s, "
            f"{snapshot.rate(Status.FAILED):.2f} failed/s"]


def sections(snapshot: Snapshot) -> list[Section]:
    """The supervisors, the workers and the latest failures, as tables."""
    now = snapshot.taken_at
    workers = snapshot.workers
    supervisors = snapshot.supervisors
    lost = sum(v.state == "LOST" for v in supervisors)
    return [
        Section(f"supervisors: {len(supervisors)}" + (f" ({lost} lost)" if lost else ""),
                ("SUPERVISOR", "HOST", "PID", "STATE", "WORKERS", "UP", "HEARTBEAT", "MEMORY"),
                tuple(_supervisor_row(v, workers, now) for v in supervisors)),
        Section(f"workers: {len(workers)}, "
                f"{sum(v.state == 'busy' for v in workers)} busy",
                # narrow columns first: a narrow terminal scrolls the rest sideways
                ("SLOT", "PID", "HOST", "STATE", "RUNNING FOR", "MEMORY", "TASK", "INVOCATION",
                 "RUNNER"),
                tuple(_worker_row(v, now) for v in workers)),
        Section(f"latest failures: {len(snapshot.failures)} of "
                f"{snapshot.counts[Status.FAILED]} failed",
                ("FAILED AT", "TASK", "INVOCATION", "ERROR"),
                tuple(failure_row(i, now) for i in snapshot.failures)),
    ]


def _supervisor_row(view: RunnerView, workers: list[RunnerView],
                    now: float) -> tuple[str, ...]:
    runner = view.runner
    state = f"LOST: {view.lost_because}" if view.lost_because else view.state
    return (runner.id, runner.host, str(runner.pid), state,
            str(sum(w.runner.supervisor == runner.id for w in workers)),
            duration_text(now - runner.started_at),
            f"{duration_text(now - runner.heartbeat_at)} ago",
            memory_text(view.memory))


def _worker_row(view: RunnerView, now: float) -> tuple[str, ...]:
    runner, current = view.runner, view.current
    task = invocation = running_for = "-"
    if current is not None:
        task, invocation = current.task, current.id
        if current.waiting_for:
            task += f" (waiting for {len(current.waiting_for)})"
        if current.started_at is not None:
            running_for = duration_text(now - current.started_at)
    return (str(runner.slot or "-"), str(runner.pid), runner.host, view.state, running_for,
            memory_text(view.memory), task, invocation, runner.id)


def failure_row(invocation: Invocation, now: float) -> tuple[str, ...]:
    """A failure as the latest failures' table shows it (the web dashboard's too)."""
    error = invocation.error
    message = f"{error.type}: {error.message}" if error else "?"
    message = message.splitlines()[0] if message else message
    if len(message) > ERROR_WIDTH:
        message = message[:ERROR_WIDTH - 3] + "..."
    finished = invocation.finished_at or now
    when = (f"{time.strftime('%H:%M:%S', time.localtime(finished))} "
            f"({duration_text(now - finished)} ago)")
    return (when, invocation.task, invocation.id, message)


def plain_text(snapshot: Snapshot, title: str) -> list[str]:
    """The whole view as lines of text: what a pipe gets every interval."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.taken_at))
    lines = [f"{title} at {stamp}", *summary(snapshot)]
    for section in sections(snapshot):
        lines.append(section.title)
        if section.rows:
            lines.extend(table_lines([section.header, *section.rows]))
    return lines


def print_refreshes(look: Callable[[], Snapshot], title: str, interval: float,
                    iterations: int | None, first: Snapshot) -> ExitCode:
    """Print the view as plain text every ``interval`` seconds, ``iterations`` times
    (None: until interrupted), each refresh after a blank line. Ctrl-C ends it with 0,
    as ``q`` and Ctrl-C end the screen. A store that cannot be read after the first
    look is one line on stderr, and the next refresh tries again."""
    snapshot: Snapshot | None = first
    shown = 0
    next_at = time.monotonic()
    try:
        while True:
            if snapshot is not None:
                if shown:
                    print()
                print("\n".join(plain_text(snapshot, title)), flush=True)
            shown += 1
            if iterations is not None and shown >= iterations:
                return ExitCode.OK
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            try:
                snapshot = look()
            except PprunnerError as exc:
                snapshot = None
                print(f"pprunner top: cannot read the store: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        return ExitCode.OK
