"""``pprunner``: run a supervisor, enqueue, inspect, list plugins.

Every error that is the user's to fix is one line on stderr and a
documented exit code (:class:`~pprunner.exitcodes.ExitCode`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__, control, health, log
from .backend import Admin, missing_capability, purge_finished
from .config import parse_duration
from .errors import (
    AppLoadError,
    BackendError,
    ConfigError,
    PluginError,
    PprunnerError,
    SerializationError,
    TaskFailed,
    UnknownInvocation,
)
from .exitcodes import ExitCode
from .invocation import Invocation, RunnerKind, Status
from .plugins import Plugins, describe, get_plugin_manager
from .supervisor import Supervisor
from .task import App, load_app, outcome_of

#: which exit code each kind of deliberate error maps to (first match wins)
ERROR_EXIT_CODES: tuple[tuple[type[Exception], ExitCode], ...] = (
    (UnknownInvocation, ExitCode.USAGE_ERROR),
    (ConfigError, ExitCode.CONFIG_ERROR),
    (PluginError, ExitCode.CONFIG_ERROR),
    (AppLoadError, ExitCode.APP_LOAD_ERROR),
    (BackendError, ExitCode.BACKEND_ERROR),
    (TaskFailed, ExitCode.TASK_FAILED),
    (SerializationError, ExitCode.USAGE_ERROR),
    (PprunnerError, ExitCode.INTERNAL_ERROR),
)


def _json_value(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"expected a JSON {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"JSON {kind.__name__}"
    return parse


#: seconds between progress lines of a long ``pprunner purge``
PURGE_PROGRESS_EVERY = 5.0


def _duration_argument(text: str) -> float:
    try:
        seconds: float = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds


def _add_app_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", default=os.environ.get("PPRUNNER_APP"),
                        help="the App as module:attribute (default: $PPRUNNER_APP)")


def build_parser(plugins: Plugins) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pprunner", description="A persistent-process supervisor for Python task queues.")
    parser.add_argument("--version", action="version", version=f"pprunner {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a supervisor and its worker processes")
    _add_app_option(run)
    run.add_argument("--processes", "-p", type=int, metavar="N",
                     help="worker processes (default: the processes setting); 0 runs inline")
    run.add_argument("--inline", action="store_true",
                     help="run tasks in this process, for debugging (same as --processes 0)")
    run.add_argument("--backend", metavar="URL", help="backend URL, e.g. sqlite:///jobs.db")
    run.add_argument("--serializer", metavar="NAME", help="serializer for new invocations")
    run.add_argument("--burst", action="store_true",
                     help="exit 0 once the queue is empty and every invocation is final")
    run.add_argument("--start-method", choices=("spawn", "forkserver", "fork"))
    run.add_argument("--shutdown-timeout", type=float, metavar="SECONDS")
    run.add_argument("--log-level", metavar="LEVEL")

    enqueue = commands.add_parser("enqueue", help="enqueue one invocation of a registered task")
    _add_app_option(enqueue)
    enqueue.add_argument("task", metavar="TASK_NAME")
    enqueue.add_argument("--args", type=_json_value(list), default=[], metavar="JSON",
                         help="positional arguments as a JSON list")
    enqueue.add_argument("--kwargs", type=_json_value(dict), default={}, metavar="JSON",
                         help="keyword arguments as a JSON object")
    enqueue.add_argument("--backend", metavar="URL")
    enqueue.add_argument("--serializer", metavar="NAME")
    enqueue.add_argument("--wait", type=float, metavar="SECONDS",
                         help="wait this long for the result and print it as JSON")

    status = commands.add_parser("status", help="runners and invocation counts")
    _add_app_option(status)
    status.add_argument("--backend", metavar="URL")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    show = commands.add_parser("show", help="one invocation: status, attempts and their errors")
    _add_app_option(show)
    show.add_argument("--backend", metavar="URL")
    show.add_argument("id", metavar="ID")
    show.add_argument("--traceback", action="store_true", help="the last error's traceback")

    failed = commands.add_parser("failed", help="list failed invocations with their errors")
    _add_app_option(failed)
    failed.add_argument("--backend", metavar="URL")
    failed.add_argument("--limit", type=int, default=50, help="at most this many (newest first)")
    failed.add_argument("--history", action="store_true", help="every attempt's error")

    retry = commands.add_parser("retry", help="put failed invocations back in the queue")
    _add_app_option(retry)
    retry.add_argument("--backend", metavar="URL")
    retry.add_argument("ids", nargs="*", metavar="ID")
    retry.add_argument("--all", action="store_true", help="every failed invocation")

    purge = commands.add_parser("purge", help="delete invocations that finished (SUCCESS or "
                                              "FAILED) long enough ago")
    _add_app_option(purge)
    purge.add_argument("--backend", metavar="URL")
    purge.add_argument("--older-than", type=_duration_argument, metavar="DURATION",
                       help="finished longer ago than this: seconds, or e.g. 15m, 12h, 7d "
                            "(default: the keep_finished setting)")

    scale = commands.add_parser("scale", help="set the worker count of running supervisors "
                                              "on this host")
    _add_app_option(scale)
    scale.add_argument("--backend", metavar="URL")
    scale.add_argument("processes", type=int, metavar="N")
    scale.add_argument("--supervisor", metavar="ID", help="only this one (default: every "
                                                           "supervisor of the app on this host)")

    health_parser = commands.add_parser(
        "health", help="check a running supervisor's health file (exit 0: healthy)")
    health_parser.add_argument("--file", default=os.environ.get("PPRUNNER_HEALTH_FILE"),
                               help="the health_file setting of the supervisor "
                                    "(default: $PPRUNNER_HEALTH_FILE)")
    health_parser.add_argument("--max-age", type=float, default=30.0, metavar="SECONDS",
                               help="older than this means not alive (default 30)")
    health_parser.add_argument("--ready", action="store_true",
                               help="also require every worker to have booted")

    plugins_parser = commands.add_parser(
        "plugins", help="loaded plugins, their backends and serializers")
    plugins_parser.add_argument("--json", action="store_true", help="machine-readable output")

    for name, sub in commands.choices.items():
        plugins.hook.pprunner_add_cli_options(command=name, parser=sub)
    return parser


def _app(args: argparse.Namespace, parser: argparse.ArgumentParser) -> App:
    if not args.app:
        parser.error(f"{args.command}: --app MODULE:ATTRIBUTE is required (or set PPRUNNER_APP)")
    app = load_app(args.app)
    app.configure(source="the command line", backend=args.backend,
                  serializer=getattr(args, "serializer", None),
                  processes=getattr(args, "processes", None),
                  start_method=getattr(args, "start_method", None),
                  shutdown_timeout=getattr(args, "shutdown_timeout", None),
                  log_level=getattr(args, "log_level", None))
    return app


# -- commands ---------------------------------------------------------------------


def command_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    if args.inline:
        args.processes = 0
    app = _app(args, parser)
    supervisor = Supervisor(app, burst=args.burst, progress=args.burst and sys.stderr.isatty(),
                            options=args)
    log.setup(app.config.log_level, supervisor.id)
    code = supervisor.run()
    if args.burst and code == ExitCode.OK:
        counts = app.backend.counts()
        print("burst done: " + ", ".join(f"{s.value.lower()} {n}" for s, n in counts.items()))
    return code


def command_enqueue(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    app = _app(args, parser)
    task = app.tasks.get(args.task)
    if task is None:
        parser.error(f"enqueue: unknown task {args.task!r}; registered tasks: "
                     f"{', '.join(sorted(app.tasks)) or 'none'}")
    handle = task.enqueue(*args.args, **args.kwargs)
    print(handle.id)
    if args.wait is not None:
        print(json.dumps(handle.result(timeout=args.wait)))
    return ExitCode.OK


def _admin(app: App, args: argparse.Namespace) -> Admin:
    """The app's backend for an operator's command (status, failed, retry, purge,
    scale): one with the Admin capability, else MissingCapability (one line, exit 3)."""
    backend = app.backend
    if not isinstance(backend, Admin):
        raise missing_capability(backend, Admin, f"pprunner {args.command}")
    return backend


def command_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    backend = _admin(_app(args, parser), args)
    runners = backend.runners()
    held: dict[str | None, list[Invocation]] = {}
    for invocation in backend.owned_by(r.id for r in runners):
        held.setdefault(invocation.owner, []).append(invocation)
    counts = backend.counts()
    now = time.time()
    if args.json:
        print(json.dumps({
            "runners": [{"id": r.id, "kind": r.kind.value, "pid": r.pid, "host": r.host,
                         "supervisor": r.supervisor, "slot": r.slot,
                         "heartbeat_age": round(now - r.heartbeat_at, 3),
                         "invocations": [{"id": i.id, "task": i.task, "status": i.status.value,
                                          "waiting_for": list(i.waiting_for)}
                                         for i in held.get(r.id, [])]}
                        for r in runners],
            "counts": {s.value: n for s, n in counts.items()},
        }, indent=2))
        return ExitCode.OK
    rows = [("RUNNER", "KIND", "PID", "HOST", "SLOT", "HEARTBEAT", "INVOCATIONS")]
    for r in runners:
        current = "; ".join(
            f"{i.id} {i.task} {i.status}"
            + (f" (waiting for {len(i.waiting_for)})" if i.waiting_for else "")
            for i in held.get(r.id, [])) or "-"
        rows.append((r.id, r.kind.value, str(r.pid), r.host, str(r.slot or "-"),
                     f"{now - r.heartbeat_at:.1f} s ago", current))
    print(f"runners: {len(runners)}")
    _print_table(rows)
    print("invocations: " + ", ".join(f"{s.value.lower()} {n}" for s, n in counts.items()))
    return ExitCode.OK


def command_show(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    app = _app(args, parser)
    i = app.backend.get(args.id)
    when = {name: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
            for name, value in (("enqueued", i.enqueued_at), ("started", i.started_at),
                                ("finished", i.finished_at)) if value is not None}
    print(f"{i.id}  {i.task}  {i.status}  attempts {i.attempts}/{i.max_attempts}"
          + (f"  owner {i.owner}" if i.owner else ""))
    print("  " + "  ".join(f"{name} {stamp}" for name, stamp in when.items()))
    if i.waiting_for:
        print(f"  waiting for: {', '.join(i.waiting_for)}")
    for number, error in enumerate(i.history, 1):
        print(f"  attempt {number}: {error.type}: {error.message}")
    if i.status is Status.SUCCESS:
        print(f"  result: {json.dumps(outcome_of(app, i), default=repr)}")
    if args.traceback and i.error and i.error.traceback:
        print(i.error.traceback.rstrip())
    return ExitCode.OK


def command_failed(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    backend = _admin(_app(args, parser), args)
    failed = backend.invocations(Status.FAILED, args.limit)
    print(f"failed: {backend.counts()[Status.FAILED]} (newest {len(failed)} shown)")
    for invocation in failed:
        error = invocation.error
        print(f"  {invocation.id}  {invocation.task}  attempts {invocation.attempts}/"
              f"{invocation.max_attempts}  {error.type if error else '?'}: "
              f"{error.message if error else ''}")
        if args.history:
            for number, past in enumerate(invocation.history, 1):
                print(f"      attempt {number}: {past.type}: {past.message}")
    return ExitCode.OK


def command_retry(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    if bool(args.ids) == args.all:
        parser.error("retry: give invocation ids or --all (not both)")
    backend = _admin(_app(args, parser), args)
    requeued = backend.requeue(None if args.all else args.ids)
    missed = set(args.ids) - {i.id for i in requeued}
    print(f"requeued {len(requeued)} invocation(s)")
    if missed:
        print(f"not FAILED (or unknown), left alone: {', '.join(sorted(missed))}",
              file=sys.stderr)
        return ExitCode.USAGE_ERROR
    return ExitCode.OK


def command_purge(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    app = _app(args, parser)
    older_than = app.config.keep_finished if args.older_than is None else args.older_than
    if args.older_than is None and not older_than:
        parser.error("purge: keep_finished is 0 (keep every invocation); give --older-than")
    backend = _admin(app, args)
    cutoff = time.time() - older_than
    purged = 0
    while True:
        batch, all_gone = purge_finished(backend, cutoff,
                                         until=time.monotonic() + PURGE_PROGRESS_EVERY)
        purged += batch
        if all_gone:
            break
        print(f"purge: {purged:,} deleted so far", file=sys.stderr)
    print(f"deleted {purged} invocation(s) that finished before "
          f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(cutoff))}")
    return ExitCode.OK


def command_scale(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    if args.processes < 1:
        parser.error("scale: N must be at least 1")
    here = os.environ.get("PPRUNNER_HOST") or socket.gethostname()
    supervisors = [r for r in _admin(_app(args, parser), args).runners()
                   if r.kind is RunnerKind.SUPERVISOR and r.host == here
                   and args.supervisor in (None, r.id)]
    if not supervisors:
        print(f"pprunner: error: no running supervisor of this app on {here}"
              + (f" with id {args.supervisor}" if args.supervisor else ""), file=sys.stderr)
        return ExitCode.USAGE_ERROR
    for runner in supervisors:
        try:
            control.send(runner.id, f"scale {args.processes}")
        except OSError as exc:
            print(f"pprunner: error: supervisor {runner.id} (pid {runner.pid}) did not take "
                  f"the command: {exc}", file=sys.stderr)
            return ExitCode.USAGE_ERROR
        print(f"supervisor {runner.id} (pid {runner.pid}): scaling to {args.processes}")
    return ExitCode.OK


def command_health(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    if not args.file:
        parser.error("health: --file PATH is required (or set PPRUNNER_HEALTH_FILE)")
    trouble = health.problem(args.file, args.max_age, args.ready)
    print(trouble or ("ready" if args.ready else "alive"))
    return ExitCode.UNHEALTHY if trouble else ExitCode.OK


def command_plugins(args: argparse.Namespace, parser: argparse.ArgumentParser,
                    plugins: Plugins) -> ExitCode:
    registry = plugins.registry
    rows = describe(plugins)
    if args.json:
        print(json.dumps({
            "plugins": [{"name": r.name, "distribution": r.distribution, "hooks": r.hooks}
                        for r in rows],
            "backends": {scheme: registry.backend_owners[scheme] for scheme in registry.backends},
            "serializers": {name: {"plugin": registry.serializer_owners[name],
                                   "safe": s.safe, "unavailable": s.unavailable()}
                            for name, s in registry.serializers.items()},
            "failed": [{"name": f.name, "distribution": f.distribution, "error": f.error}
                       for f in registry.failures],
        }, indent=2))
        return ExitCode.OK
    print("plugins:")
    _print_table([("NAME", "DISTRIBUTION", "HOOKS")]
                 + [(r.name, r.distribution, ", ".join(r.hooks)) for r in rows])
    print("backends:")
    _print_table([("SCHEME", "PLUGIN")]
                 + [(f"{s}://", registry.backend_owners[s]) for s in sorted(registry.backends)])
    print("serializers:")
    _print_table([("NAME", "PLUGIN", "SAFETY", "AVAILABLE")]
                 + [(n, registry.serializer_owners[n],
                     "safe" if s.safe else "runs code on load: choose it explicitly",
                     s.unavailable() or "yes")
                    for n, s in sorted(registry.serializers.items())])
    if registry.failures:
        print("failed to load:")
        _print_table([("NAME", "DISTRIBUTION", "ERROR")]
                     + [(f.name, f.distribution, f.error) for f in registry.failures])
    return ExitCode.OK


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(("  " + "  ".join(cells)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    plugins = get_plugin_manager()
    parser = build_parser(plugins)
    args = parser.parse_args(argv)
    try:
        if args.command == "plugins":
            return command_plugins(args, parser, plugins)
        command = {"run": command_run, "enqueue": command_enqueue, "status": command_status,
                   "show": command_show, "failed": command_failed, "retry": command_retry,
                   "health": command_health, "scale": command_scale, "purge": command_purge}
        return command[args.command](args, parser)
    except PprunnerError as exc:
        code = next(code for kind, code in ERROR_EXIT_CODES if isinstance(exc, kind))
        print(f"pprunner: error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
