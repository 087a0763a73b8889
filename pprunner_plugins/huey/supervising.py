"""The supervisor both routes to Huey on pprunner build: ``pprunner huey`` (:mod:`.command`)
and the ``create_consumer`` route (:mod:`.supervised`).

Both fork each worker from the process that built Huey's consumer, as Huey's own
``-k process`` workers are (so a worker has the Huey instance and its tasks without
importing anything, and boots in milliseconds), and run Huey's own worker loop there
(:mod:`.consumer`); they differ in who builds the consumer: the command, or
``huey_consumer`` through the project's ``create_consumer``.
"""

from __future__ import annotations

import functools
import logging
import signal
from typing import Any

from huey.consumer import Consumer

import pprunner
from pprunner import Supervisor, config
from pprunner.hostfeed import HostFeed
from pprunner.jobs import Call

from . import consumer

logger = logging.getLogger("pprunner.huey")


def settings(workers: int | None, max_tasks: int | None,
             shutdown_timeout: float | None) -> config.Config:
    """pprunner's settings, huey_consumer's worker count, ``-M`` and ``-t`` among them:
    one worker unless told, as huey_consumer; pyproject and ``PPRUNNER_*`` may say more,
    but the workers are forked whatever ``start_method`` says."""
    return config.load({"processes": 1}, {"processes": workers, "max_tasks_per_child": max_tasks,
                                          "shutdown_timeout": shutdown_timeout,
                                          "start_method": "fork"},
                       overrides_source="huey_consumer's options")


def supervisor(template: Consumer, settings: config.Config, *,
               at_most_once: bool) -> HueySupervisor:
    """A supervisor whose workers are forked from this process and each run a Worker of
    ``template`` (Huey's consumer, built here), each task of a dead worker settled in
    Huey's terms (:func:`.consumer.settle`); ``template``'s scheduler starts once the
    first workers are forked (:class:`Scheduling`)."""
    feed = HostFeed(Call(consumer.adopt, (template, settings.time_limit), name="huey consumer"),
                    functools.partial(consumer.settle, template.huey, at_most_once=at_most_once))
    # -g is Huey 3.5's; before, SIGINT was the graceful one
    return HueySupervisor(feed=feed, config=settings, plugins=[Scheduling(template)],
                          graceful_signal=getattr(template, "graceful_signal", "INT"))


class Scheduling:
    """Huey's scheduler (delayed and periodic tasks) of ``template``, started once the
    supervisor has forked its first workers: a fork while another thread of the process
    takes a lock (its first connection, a module imported on first use) leaves the child
    that lock held for ever, and the scheduler's first round does just that. (Later
    rounds reuse the connection.)"""

    def __init__(self, template: Consumer) -> None:
        self._template = template
        self._started = False

    @pprunner.hookimpl
    def pprunner_supervisor_started(self) -> None:
        self._template.scheduler.start()
        self._started = True

    def stop(self) -> None:
        """Stop it (it ends its round) and wait for it, if it was started."""
        self._template.stop_flag.set()
        if self._started:
            self._template.scheduler.join()


class HueySupervisor(Supervisor):
    """Signals as ``huey_consumer`` treats them: its graceful signal (SIGINT unless
    ``-g TERM``) stops after what runs; the other stops at once. SIGHUP, Huey's
    restart, is pprunner's reload: each worker is replaced, the pool never empty (by
    a worker forked from this process, so with the code it loaded)."""

    def __init__(self, *, graceful_signal: str, plugins: list[Scheduling],
                 **kwargs: Any) -> None:
        super().__init__(plugins=plugins, **kwargs)
        (self.scheduling,) = plugins
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
