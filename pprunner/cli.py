"""``pprunner``: run a supervisor, enqueue, inspect, list plugins.

Every error that is the user's to fix is one line on stderr and a
documented exit code (:class:`~pprunner.exitcodes.ExitCode`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__, control, health, log
from .backend import Admin, missing_capability, purge_finished
from .config import SETTING_NAMES, START_METHODS, describe_settings, parse_duration
from .display import counts_text, shown_url, table_lines
from .errors import (
    AppLoadError,
    BackendError,
    ConfigError,
    PluginError,
    PprunnerError,
    ResultTimeout,
    SerializationError,
    TaskFailed,
    UnknownInvocation,
)
from .exitcodes import ExitCode
from .invocation import Status
from .plugins import (
    Command,
    Plugins,
    blocked_names,
    describe,
    get_plugin_manager,
    install_extra,
)
from .snapshot import Snapshot, look
from .supervisor import Supervisor
from .task import App, load_app, outcome_of
from .top import DEFAULT_FAILURES, DEFAULT_INTERVAL, print_refreshes

#: which exit code each kind of deliberate error maps to (first match wins)
ERROR_EXIT_CODES: tuple[tuple[type[Exception], ExitCode], ...] = (
    (UnknownInvocation, ExitCode.USAGE_ERROR),
    (ConfigError, ExitCode.CONFIG_ERROR),
    (PluginError, ExitCode.CONFIG_ERROR),
    (AppLoadError, ExitCode.APP_LOAD_ERROR),
    (BackendError, ExitCode.BACKEND_ERROR),
    (TaskFailed, ExitCode.TASK_FAILED),
    (ResultTimeout, ExitCode.TIMEOUT),
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


def number_argument(kind: Callable[[str], float], unit: str, least: float,
                     *, above: bool = False) -> Callable[[str], float]:
    """An argument parser for a number of ``unit``: ``least`` or more (with ``above``:
    more than ``least``); anything else, nan included, is refused with what was given."""
    def parse(text: str) -> float:
        try:
            number = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {unit}, got {text!r}"
                                             ) from None
        if not (number > least if above else number >= least):
            bound = f"more than {least:g}" if above else f"{least:g} or more"
            raise argparse.ArgumentTypeError(f"expected {bound} {unit}, got {text!r}")
        return number

    parse.__name__ = unit  # what argparse names in its own errors
    return parse


#: a wait: a negative one has no meaning, so it is refused
_seconds_argument = number_argument(float, "seconds", 0)
#: seconds between refreshes
_interval_argument = number_argument(float, "seconds", 0, above=True)
_refreshes_argument = number_argument(int, "refreshes", 1)
_failures_argument = number_argument(int, "failures", 1)


def _setting_help(name: str) -> str:
    """Help for an option that overrides a setting: the setting's own description,
    so the two never drift apart, and where the default comes from."""
    doc, default = next((doc, default) for setting, _env, default, doc in describe_settings()
                        if setting == name)
    return f"{doc}; default: the {name} setting ({default})"


def add_app_options(parser: argparse.ArgumentParser) -> None:
    """--app and --backend, which every command that works on an app's store takes."""
    parser.add_argument("--app", default=os.environ.get("PPRUNNER_APP"),
                        help="the App as module:attribute (default: $PPRUNNER_APP)")
    parser.add_argument("--backend", metavar="URL", help="backend URL, e.g. sqlite:///jobs.db "
                                                         "(default: the backend setting)")


def _add_plugin_commands(commands: Any, plugins: Plugins) -> None:
    """Each plugin's commands, beside the built-in ones; a name taken already fails."""

    def register(command: Command) -> None:
        if command.name in commands.choices:
            raise PluginError(f"a plugin registers the command {command.name!r}, which "
                              f"pprunner (or another plugin) has already")
        sub = commands.add_parser(command.name, help=command.help)
        if command.arguments is not None:
            command.arguments(sub)
        sub.set_defaults(plugin_command=command.run)

    plugins.hook.pprunner_register_commands(register=register)


def build_parser(plugins: Plugins) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pprunner", description="A persistent-process supervisor for Python task queues.")
    parser.add_argument("--version", action="version", version=f"pprunner {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a supervisor and its worker processes")
    add_app_options(run)
    run.add_argument("--processes", "-p", type=int, metavar="N",
                     help="worker processes (default: the processes setting); 0 runs inline")
    run.add_argument("--inline", action="store_true",
                     help="run tasks in this process, for debugging (same as --processes 0)")
    run.add_argument("--serializer", metavar="NAME", help=_setting_help("serializer"))
    run.add_argument("--burst", action="store_true",
                     help="exit 0 once the queue is empty and every invocation is final")
    run.add_argument("--start-method", choices=START_METHODS,
                     help=_setting_help("start_method"))
    run.add_argument("--shutdown-timeout", type=float, metavar="SECONDS",
                     help=_setting_help("shutdown_timeout"))
    run.add_argument("--log-level", metavar="LEVEL", help=_setting_help("log_level"))

    enqueue = commands.add_parser("enqueue", help="enqueue one invocation of a registered task")
    add_app_options(enqueue)
    enqueue.add_argument("task", metavar="TASK_NAME")
    enqueue.add_argument("--args", type=_json_value(list), default=[], metavar="JSON",
                         help="positional arguments as a JSON list")
    enqueue.add_argument("--kwargs", type=_json_value(dict), default={}, metavar="JSON",
                         help="keyword arguments as a JSON object")
    enqueue.add_argument("--serializer", metavar="NAME", help=_setting_help("serializer"))
    enqueue.add_argument("--wait", type=_seconds_argument, metavar="SECONDS",
                         help="wait this long for the result and print it as JSON "
                              "(exit 124 if it has not ended by then)")

    status = commands.add_parser("status", help="runners and invocation counts")
    add_app_options(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", type=_interval_argument, nargs="?", const=DEFAULT_INTERVAL,
                        metavar="SECONDS", help="the live view of `pprunner top`, refreshed "
                                                f"every SECONDS (default {DEFAULT_INTERVAL:g})")

    top = commands.add_parser("top", help="live view: supervisors, workers, queue, rates, "
                                          "latest failures")
    add_app_options(top)
    top.add_argument("--interval", type=_interval_argument, default=DEFAULT_INTERVAL,
                     metavar="SECONDS",
                     help=f"seconds between refreshes (default {DEFAULT_INTERVAL:g})")
    top.add_argument("--iterations", type=_refreshes_argument, metavar="N",
                     help="print N refreshes as plain text and exit, even on a terminal")
    top.add_argument("--once", action="store_const", const=1, dest="iterations",
                     help="print one refresh as plain text and exit (--iterations 1)")
    top.add_argument("--failures", type=_failures_argument, default=DEFAULT_FAILURES, metavar="N",
                     help=f"how many of the latest failures to list (default "
                          f"{DEFAULT_FAILURES})")

    show = commands.add_parser("show", help="one invocation: status, attempts and their errors")
    add_app_options(show)
    show.add_argument("id", metavar="ID")
    show.add_argument("--traceback", action="store_true", help="the last error's traceback")

    failed = commands.add_parser("failed", help="list failed invocations with their errors")
    add_app_options(failed)
    failed.add_argument("--limit", type=int, default=50, help="at most this many (newest first)")
    failed.add_argument("--history", action="store_true", help="every attempt's error")

    retry = commands.add_parser("retry", help="put failed invocations back in the queue")
    add_app_options(retry)
    retry.add_argument("ids", nargs="*", metavar="ID")
    retry.add_argument("--all", action="store_true", help="every failed invocation")

    purge = commands.add_parser("purge", help="delete invocations that finished (SUCCESS or "
                                              "FAILED) long enough ago")
    add_app_options(purge)
    purge.add_argument("--older-than", type=_duration_argument, metavar="DURATION",
                       help="finished longer ago than this: seconds, or e.g. 15m, 12h, 7d "
                            "(default: the keep_finished setting)")

    scale = commands.add_parser("scale", help="set the worker count of running supervisors "
                                              "on this host")
    add_app_options(scale)
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

    _add_plugin_commands(commands, plugins)
    for name, sub in commands.choices.items():
        plugins.hook.pprunner_add_cli_options(command=name, parser=sub)
        # a command's errors show its own usage line, not the top-level one
        sub.set_defaults(command_parser=sub)
    return parser


def app_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser, *,
                  creates_store: bool = False) -> App:
    """The app with the command line's settings: every option named like a setting
    overrides it, a plugin's too (``--metrics-port``). Only commands that put work in
    the store (``run``, ``enqueue``) may create it; the others would only make a
    mistyped path look like an empty store."""
    if not args.app:
        parser.error("--app MODULE:ATTRIBUTE is required (or set PPRUNNER_APP)")
    app = load_app(args.app)
    app.use_plugins(args.plugin_manager)  # the one the options came from, not a second
    overrides: dict[str, Any] = {name: getattr(args, name, None) for name in SETTING_NAMES}
    app.configure(source="the command line", **overrides)
    if not creates_store:
        app.open_existing_only()
    return app


# -- commands ---------------------------------------------------------------------


def command_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    if args.inline:
        args.processes = 0
    app = app_from_args(args, parser, creates_store=True)
    supervisor = Supervisor.for_app(app, burst=args.burst,
                                    progress=args.burst and sys.stderr.isatty(), options=args)
    log.setup(app.config.log_level, supervisor.id)
    code = supervisor.run()
    if supervisor.progress is not None and code == ExitCode.OK:
        counts = app.backend.counts()
        ended = supervisor.progress.ended(counts)
        print(f"burst done: {sum(ended.values())} invocation(s) ended in this run: "
              f"{counts_text(ended)}")
        print(f"the store holds: {counts_text(counts)}")
    return code


def command_enqueue(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    app = app_from_args(args, parser, creates_store=True)
    task = app.tasks.get(args.task)
    if task is None:
        parser.error(f"unknown task {args.task!r}; registered tasks: "
                     f"{', '.join(sorted(app.tasks)) or 'none'}")
    handle = task.enqueue(*args.args, **args.kwargs)
    print(handle.id)
    if args.wait is not None:
        print(json.dumps(handle.result(timeout=args.wait)))
    return ExitCode.OK


def admin_backend(app: App, args: argparse.Namespace) -> Admin:
    """The app's backend for an operator's command (status, failed, retry, purge,
    scale): one with the Admin capability, else MissingCapability (one line, exit 3)."""
    backend = app.backend
    if not isinstance(backend, Admin):
        raise missing_capability(backend, Admin, f"pprunner {args.command}")
    return backend


def command_status(args: argparse.Namespace,
                   parser: argparse.ArgumentParser) -> ExitCode | int:
    if args.watch is not None:
        if args.json:
            parser.error("--watch shows the live view; it has no --json")
        args.interval, args.iterations, args.failures = args.watch, None, DEFAULT_FAILURES
        return command_top(args, parser)
    app = app_from_args(args, parser)
    snapshot = look(admin_backend(app, args), app.config.dead_after)
    now = snapshot.taken_at
    if args.json:
        print(json.dumps({
            "runners": [{"id": r.id, "kind": r.kind.value, "pid": r.pid, "host": r.host,
                         "supervisor": r.supervisor, "slot": r.slot, "phase": r.phase,
                         "heartbeat_age": round(now - r.heartbeat_at, 3),
                         "state": "lost" if v.lost_because else "alive",
                         "lost_because": v.lost_because,
                         "invocations": [{"id": i.id, "task": i.task, "status": i.status.value,
                                          "waiting_for": list(i.waiting_for)}
                                         for i in v.held]}
                        for v in snapshot.runners for r in (v.runner,)],
            "counts": {s.value: n for s, n in snapshot.counts.items()},
        }, indent=2))
        return ExitCode.OK
    rows = [("RUNNER", "KIND", "PID", "HOST", "SLOT", "STATE", "HEARTBEAT", "INVOCATIONS")]
    for v in snapshot.runners:
        r = v.runner
        current = "; ".join(
            f"{i.id} {i.task} {i.status}"
            + (f" (waiting for {len(i.waiting_for)})" if i.waiting_for else "")
            for i in v.held) or "-"
        state = f"LOST: {v.lost_because}" if v.lost_because else "alive"
        rows.append((r.id, r.kind.value, str(r.pid), r.host, str(r.slot or "-"), state,
                     f"{now - r.heartbeat_at:.1f} s ago", current))
    gone = sum(1 for v in snapshot.runners if v.lost_because)
    print(f"runners: {len(snapshot.runners)}" + (f" ({gone} lost)" if gone else ""))
    _print_table(rows)
    print(f"invocations: {counts_text(snapshot.counts)}")
    return ExitCode.OK


def command_top(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode | int:
    """The live view (``top``, ``status --watch``). The store is read once before
    anything is drawn, so a store that is missing or unreachable is one line and an
    exit code, never an empty screen."""
    app = app_from_args(args, parser)
    backend = admin_backend(app, args)
    dead_after = app.config.dead_after

    def read() -> Snapshot:
        return look(backend, dead_after, recent_failures=args.failures)

    first = read()
    title = f"pprunner top: {app.name}, {shown_url(backend.url)}"
    if args.iterations is not None or not sys.stdout.isatty():
        return print_refreshes(read, title, args.interval, args.iterations, first)
    try:
        from . import top_screen
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in ("textual", "rich"):
            raise
        raise ConfigError(f"pprunner top needs Textual to draw on a terminal: "
                          f"{install_extra('top')} (piped or with --once, it prints plain "
                          f"text without it)") from None
    return top_screen.show(read, title, args.interval, first)


def command_show(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    app = app_from_args(args, parser)
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
    backend = admin_backend(app_from_args(args, parser), args)
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
        parser.error("give invocation ids or --all (not both)")
    backend = admin_backend(app_from_args(args, parser), args)
    requeued = backend.requeue(None if args.all else args.ids)
    missed = set(args.ids) - {i.id for i in requeued}
    print(f"requeued {len(requeued)} invocation(s)")
    if missed:
        print(f"not FAILED (or unknown), left alone: {', '.join(sorted(missed))}",
              file=sys.stderr)
        return ExitCode.USAGE_ERROR
    return ExitCode.OK


def command_purge(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    app = app_from_args(args, parser)
    older_than = app.config.keep_finished if args.older_than is None else args.older_than
    if args.older_than is None and not older_than:
        parser.error("keep_finished is 0 (keep every invocation); give --older-than")
    backend = admin_backend(app, args)
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
        parser.error("N must be at least 1")
    app = app_from_args(args, parser)
    code = ExitCode.OK
    for notice in control.scale(admin_backend(app, args), args.processes,
                                dead_after=app.config.dead_after,
                                supervisor_id=args.supervisor):
        if notice.outcome is control.Outcome.SENT:
            print(notice.text)
        else:
            print(f"pprunner: {notice.outcome.value}: {notice.text}", file=sys.stderr)
        if notice.outcome is control.Outcome.ERROR:
            code = ExitCode.USAGE_ERROR
    return code


def command_health(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExitCode:
    if not args.file:
        parser.error("--file PATH is required (or set PPRUNNER_HEALTH_FILE)")
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
            "blocked": blocked_names(plugins),
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
    blocked = blocked_names(plugins)
    if blocked:
        print(f"blocked by PPRUNNER_DISABLED_PLUGINS: {', '.join(blocked)}")
    return ExitCode.OK


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    print("\n".join(table_lines(rows)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader of stdout that goes away (``| head``) ends it quietly.

    Like a Unix tool killed by SIGPIPE: no traceback, exit status 141. Python
    ignores SIGPIPE, so the closed pipe shows up as BrokenPipeError from
    whichever write or flush comes first, then again when the interpreter
    flushes stdout at exit unless stdout points somewhere else by then.
    """
    try:
        try:
            return _run_command(argv)
        finally:
            sys.stdout.flush()  # the buffered rest: a reader that left shows here at the latest
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.BROKEN_PIPE


def _run_command(argv: Sequence[str] | None) -> int:
    try:
        plugins = get_plugin_manager()  # a bad plugin switch is one line too
        args, unrecognized = build_parser(plugins).parse_known_args(argv)
        parser: argparse.ArgumentParser = args.command_parser
        args.plugin_manager = plugins
        if unrecognized:
            parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")
        if args.command == "plugins":
            return command_plugins(args, parser, plugins)
        command = {"run": command_run, "enqueue": command_enqueue, "status": command_status,
                   "top": command_top,
                   "show": command_show, "failed": command_failed, "retry": command_retry,
                   "health": command_health, "scale": command_scale, "purge": command_purge}
        run = command.get(args.command) or args.plugin_command
        return int(run(args, parser))
    except PprunnerError as exc:
        code = next(code for kind, code in ERROR_EXIT_CODES if isinstance(exc, kind))
        print(f"pprunner: error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
