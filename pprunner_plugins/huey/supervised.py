"""The ``create_consumer`` route: Huey's own start-up (``huey_consumer``, or a script
that calls ``consumer.run()``) with pprunner's workers under it.

Huey builds its consumer with ``Huey.create_consumer(**options)``; a project
whose Huey returns this :class:`Consumer` from it keeps its start command::

    from huey import RedisHuey
    from pprunner_plugins.huey.supervised import Consumer

    class SupervisedHuey(RedisHuey):
        def create_consumer(self, **options):
            return Consumer(self, **options)

    huey = SupervisedHuey("myapp")

and ``huey_consumer myapp.huey -w 2`` then runs ``-w`` pprunner workers, each
running Huey's own worker loop, forked from the consumer's process as Huey's
``-k process`` workers are (so they inherit the Huey instance and its tasks,
whatever ``-k`` says). What changes is what ``pprunner huey`` changes
(docs/hosts/huey.md); the scheduler (``-s``, periodic tasks) is Huey's own, of
the ``-k`` type asked for, as with Huey's consumer.
"""

from __future__ import annotations

import logging
from typing import Any

import huey.consumer
from huey import Huey
from huey.exceptions import ConfigurationError

from pprunner import ExitCode, log

from . import supervising

logger = logging.getLogger("pprunner.huey")


class Consumer(huey.consumer.Consumer):
    """Huey's ``Consumer``, its workers pprunner's; Huey's options, attributes, scheduler
    and subclass hooks (``worker_class``, ``_create_worker``) as Huey's own.

    ``start``/``stop`` (a consumer run inside a program, as Huey's tests do) supervise
    from a background thread; ``run`` (``huey_consumer``) supervises in the calling
    thread and handles signals as ``pprunner huey`` does.
    """

    #: a task whose worker died under it is not run again (Huey's own consumer's way)
    #: instead of re-enqueued; set it in a subclass
    at_most_once = False

    def __init__(self, huey: Huey, **options: Any) -> None:
        super().__init__(huey, **options)
        self.supervisor: supervising.HueySupervisor | None = None

    def start(self) -> None:
        """Boot the workers, then the scheduler; return once they were started."""
        self.supervisor = self._supervisor()
        self.supervisor.start()

    def stop(self, graceful: bool = False) -> None:
        """Stop the scheduler and the workers: ``graceful``, after the tasks that run
        (bounded by pprunner's ``shutdown_timeout``, ``-t``), else at once, the tasks that
        run put back in the queue. A consumer whose workers were started by hand, from
        its ``worker_threads``, stops as Huey's does."""
        if self.supervisor is None:
            super().stop(graceful)
            return
        self.supervisor.scheduling.stop()
        self.supervisor.stop(immediate=not graceful)

    def run(self) -> None:
        """Supervise until a signal stops it (``pprunner huey``'s signals); a pool that
        could not start ends the program with pprunner's exit code."""
        self.supervisor = self._supervisor()
        log.setup(self.supervisor.config.log_level, self.supervisor.id)
        try:
            code = self.supervisor.run()
        finally:
            self.supervisor.scheduling.stop()
        if code != ExitCode.OK:
            raise SystemExit(code)

    def _supervisor(self) -> supervising.HueySupervisor:
        if self.huey.immediate:
            raise ConfigurationError("Consumer cannot be run with Huey instances where "
                                     "immediate is enabled (huey.immediate = False).")
        # -t is Huey 3.5's
        settings = supervising.settings(self.workers, self.max_tasks,
                                        getattr(self, "shutdown_timeout", None))
        # forked children must not share the parent's storage connection (Huey's start)
        self.huey.storage.close()
        return supervising.supervisor(self, settings, at_most_once=self.at_most_once)
