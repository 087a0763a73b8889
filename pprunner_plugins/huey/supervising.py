"""The supervisor both routes to Huey on pprunner build: ``pprunner huey`` (:mod:`.command`)
and the ``create_consumer`` route (:mod:`.supervised`).

Both run Huey's own worker loop in each pprunner worker (:mod:`.consumer`); they differ
only in how a worker gets its Huey instance: the command's workers import it by path, the
class route's are forked from the process that built the consumer, as Huey's own
``-k process`` workers are.
"""

from __future__ import annotations

import functools
import logging
import signal
from typing import Any

from huey import Huey

from pprunner import Supervisor, config
from pprunner.hostfeed import HostFeed
from pprunner.jobs import Call

from . import consumer

logger = logging.getLogger("pprunner.huey")


def settings(workers: int | None, max_tasks: int | None, shutdown_timeout: float | None,
             **fixed: Any) -> config.Config:
    """pprunner's settings, huey_consumer's worker count, ``-M`` and ``-t`` among them:
    one worker unless told, as huey_consumer; pyproject and ``PPRUNNER_*`` may say more.
    ``fixed``: what the route needs whatever the user set (its start method)."""
    return config.load({"processes": 1}, {"processes": workers, "max_tasks_per_child": max_tasks,
                                          "shutdown_timeout": shutdown_timeout, **fixed},
                       overrides_source="huey_consumer's options")


def supervisor(huey: Huey, maker: Call, settings: config.Config, *, graceful_signal: str,
               at_most_once: bool) -> HueySupervisor:
    """A supervisor whose workers run the consumer ``maker`` makes, each task of a
    dead worker settled in Huey's terms (:func:`.consumer.settle`) on ``huey``."""
    feed = HostFeed(maker, functools.partial(consumer.settle, huey, at_most_once=at_most_once))
    return HueySupervisor(feed=feed, config=settings, graceful_signal=graceful_signal)


class HueySupervisor(Supervisor):
    """Signals as ``huey_consumer`` treats them: its graceful signal (SIGINT unless
    ``-g TERM``) stops after what runs; the other stops at once. SIGHUP, Huey's
    restart, is pprunner's reload: each worker is replaced, the pool never empty."""

    def __init__(self, *, graceful_signal: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._interrupt_signal = signal.SIGTERM if graceful_signal == "INT" else signal.SIGINT

    def handle_sigterm(self) -> None:
        self._stop_on(signal.SIGTERM)

    def handle_sigint(self) -> None:
        self._stop_on(signal.SIGINT)

    def _stop_on(self, signum: signal.Signals) -> None:
        if signum == self._interrupt_signal or self._stop_requested:
            logger.warning("%s: stopping at once; running tasks go back to the queue",
                           signum.name)
            self._immediate = True
        else:
            logger.info("%s: stopping gracefully (shutdown_timeout %.0f s)", signum.name,
                        self.config.shutdown_timeout)
        self.request_stop()
