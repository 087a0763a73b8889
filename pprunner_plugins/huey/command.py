"""``pprunner huey path.to.huey [huey_consumer's options]``.

The options are ``huey_consumer``'s own, read from Huey's own option table
(names, letters, types, choices, help), so a start command changes only in
its first word. What they mean under pprunner:

- ``-w/--workers``: worker processes (each runs one Huey worker);
  ``-k/--worker-type`` is accepted and ignored (they are always processes);
- ``-M/--max-tasks``: pprunner's ``max_tasks_per_child`` (no health check needed);
- ``-c``/``-C`` (health checks): accepted, not needed: a death is seen at once;
- ``-t/--shutdown-timeout``: pprunner's ``shutdown_timeout``;
- ``-g/--graceful-signal``: which of SIGINT/SIGTERM stops gracefully; the other
  stops at once (the tasks that run are handed back to the queue, not lost);
- ``--at-most-once`` (pprunner's): a dead worker's task is not run again, as with
  Huey's own consumer; by default it is re-enqueued at once;
- scheduler, periodic tasks, ``-f``/``-L`` lock flushing and logging: as Huey's,
  in the supervisor process.
"""

from __future__ import annotations

import argparse
import logging

from huey.consumer_options import ConsumerConfig, OptionParserHandler

from pprunner import log

from . import consumer, supervising

logger = logging.getLogger("pprunner.huey")

#: huey_consumer's options that only its own process model needs, or that pprunner's
#: settings carry out; a worker's consumer is built without them
SUPERVISOR_ONLY = ("workers", "worker_type", "max_tasks", "check_worker_health",
                   "health_check_interval", "flush_locks", "extra_locks", "shutdown_timeout")
#: huey_consumer's logging options (``values`` leaves them out): the supervisor and each
#: worker set Huey's logger up from them
LOGGING = ("logfile", "verbose", "simple_log")
#: help for the options Huey gives none
MISSING_HELP = {"--logfile": "Huey's log lines go to FILE only (pprunner's stay on stderr)"}
_TYPES = {"int": int, "float": float}


def arguments(parser: argparse.ArgumentParser) -> None:
    """huey_consumer's options, taken from Huey's own option table."""
    parser.add_argument("huey_path", metavar="path.to.huey_instance")
    handler = OptionParserHandler()
    for options in (handler.get_logging_options(), handler.get_worker_options(),
                    handler.get_scheduler_options()):
        for short, long, settings in options:
            settings = dict(settings, default=None)
            settings.setdefault("help", MISSING_HELP.get(long, "as huey_consumer's"))
            if "type" in settings:
                settings["type"] = _TYPES[settings["type"]]
            parser.add_argument(short, long, **settings)
    parser.add_argument("--at-most-once", action="store_true",
                        help="pprunner: a task whose worker died or was stopped under it is "
                             "not run again (Huey's own consumer's way), instead of re-enqueued")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    given = {name: getattr(args, name) for name in ConsumerConfig._fields
             if getattr(args, name, None) is not None}
    options = ConsumerConfig(**given)
    try:
        options.validate()
    except ValueError as exc:
        parser.error(str(exc))
    huey = consumer.load_huey(args.huey_path)
    settings = supervising.settings(given.get("workers"), given.get("max_tasks"),
                                    given.get("shutdown_timeout"))
    worker_options = {k: v for k, v in options.values.items() if k not in SUPERVISOR_ONLY}
    # Huey's consumer (Huey's own, or the project's create_consumer's), without workers:
    # its lock flushing and scheduler run here, and each forked worker makes its Worker
    template = huey.create_consumer(**worker_options, workers=0, worker_type="thread",
                                    flush_locks=options.flush_locks,
                                    extra_locks=options.extra_locks)
    supervisor = supervising.supervisor(template, settings, at_most_once=args.at_most_once)
    log.setup(settings.log_level, supervisor.id)
    consumer.huey_logging({k: getattr(options, k) for k in LOGGING})
    if given.get("worker_type", "process") != "process":
        logger.info("-k %s: each of pprunner's workers is a process", given["worker_type"])
    try:
        return supervisor.run()
    finally:
        supervisor.scheduling.stop()
