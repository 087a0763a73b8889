"""``pprunner dramatiq``: Dramatiq's own arguments, pprunner's supervisor.

The arguments are Dramatiq's, taken from its own parser (names, defaults and
help as ``dramatiq --help`` shows them). What they mean here:

- ``broker``, ``modules``, ``--path``, ``--queues``, ``--threads``: as in
  ``dramatiq``; ``--processes`` is pprunner's worker count;
- ``--worker-shutdown-timeout`` (ms) is the graceful stop's grace
  (pprunner's ``shutdown_timeout``); past it a worker is killed and its
  messages requeued;
- ``--verbose`` sets the log level to DEBUG, ``--pid-file`` is written;
- ``--fork-function`` (and each middleware's ``forks``) run beside the workers
  (:mod:`.forks`);
- pprunner always spawns its workers, so ``--use-spawn`` changes nothing;
  ``--watch`` and ``--log-file`` are refused.

pprunner's own settings (``max_tasks_per_child``, ``max_memory_per_child``,
``start_method``, ...) come from ``[tool.pprunner]`` and ``PPRUNNER_*``
variables as for every pprunner command.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dramatiq.cli import (
    RET_IMPORT,
    RET_PIDFILE,
    make_argument_parser,
    remove_pidfile,
    setup_pidfile,
)

from pprunner import Supervisor, config, log
from pprunner.hostfeed import HostFeed
from pprunner.jobs import Call

from .consumer import import_modules, load_broker, make_consumer
from .forks import ForkProcesses, fork_paths
from .settle import Settler

logger = logging.getLogger("pprunner.dramatiq")

#: Dramatiq options whose feature pprunner's supervisor does not offer
REFUSED = {"watch": "--watch", "log_file": "--log-file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Dramatiq's own arguments, from its parser (not --help and --version: ours)."""
    for action in make_argument_parser()._actions:
        if not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            parser._add_action(action)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    for name, option in REFUSED.items():
        if getattr(args, name, None):  # Dramatiq before 2.0 has --watch with watchdog only
            parser.error(f"{option} is not offered by pprunner dramatiq")
    if args.pid_file:  # first, as dramatiq does: a process manager waits for it
        try:
            setup_pidfile(args.pid_file)
        except RuntimeError as exc:
            sys.stderr.write(f"pprunner dramatiq: {exc}\n")
            return RET_PIDFILE
    try:
        return _supervise(args)
    finally:
        if args.pid_file:
            remove_pidfile(args.pid_file, logger)


def _supervise(args: argparse.Namespace) -> int:
    settings = config.load({}, {"shutdown_timeout": args.worker_shutdown_timeout / 1000,
                                "log_level": "DEBUG" if args.verbose else None})
    try:
        broker = load_broker(args.broker, args.path)
        import_modules(args.modules)  # the settler looks actors up, as Retries does
    except ImportError as exc:  # as dramatiq says it, with its exit code
        sys.stderr.write(f"pprunner dramatiq: {exc}\n")
        return RET_IMPORT
    consumer = Call(make_consumer, (args.broker, args.modules, args.path, args.queues,
                                    args.threads, args.worker_shutdown_timeout))
    forks = ForkProcesses(fork_paths(args.forks or [], broker), args.processes,
                          settings.log_level)
    supervisor = Supervisor(feed=HostFeed(consumer, Settler(broker)), config=settings,
                            processes=args.processes, plugins=[forks])
    log.setup(settings.log_level, supervisor.id)
    return supervisor.run()
