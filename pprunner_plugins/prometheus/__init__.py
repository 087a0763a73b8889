"""Prometheus metrics of a supervisor and all its workers, on one HTTP endpoint.

Off unless the ``metrics_port`` setting is set: ``pprunner run --metrics-port
9100``, ``PPRUNNER_METRICS_PORT``, ``metrics_port`` in ``[tool.pprunner]``,
``pprunner.Executor(metrics_port=9100)``, or a host plugin's own key (Celery's
``pprunner_metrics_port``, ``RQ_METRICS_PORT``, pynenc's
``pprunner_metrics_port``). This module is the entry point, and all that is
loaded while it is off: a switch that implements no per-job hook, so metrics
that are off cost nothing. When it is on, the switch registers:

- in the supervisor, as it boots, :class:`.supervisor.SupervisorMetrics`: the
  endpoint (prometheus_client, ``pip install -e '.[prometheus]'``) and what
  only the supervisor sees (push-mode calls, workers' boots and exits, what
  they held when they died);
- in each pull-mode worker, as it boots, :class:`.worker.WorkerMetrics`, which
  counts that worker's attempts into a file of its own (:mod:`.tally`) that
  the supervisor reads when scraped.

docs/operating/metrics.md lists every metric and what it counts.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

import pprunner
from pprunner.errors import ConfigError

from .._optional import OptionalLibrary

if TYPE_CHECKING:  # the switch stays light: it is loaded wherever plugins are
    from pprunner.supervisor import SupervisorView
    from pprunner.worker import WorkerContext

logger = logging.getLogger("pprunner.metrics")

CLIENT = OptionalLibrary("prometheus_client", "prometheus")


@pprunner.hookimpl
def pprunner_add_cli_options(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "run":
        parser.add_argument("--metrics-port", metavar="[HOST:]PORT",
                            help="serve Prometheus metrics of the supervisor and its workers "
                                 "on this port (FIRST-LAST: the first free one); default: the "
                                 "metrics_port setting (off)")


@pprunner.hookimpl
def pprunner_supervisor_booting(supervisor: SupervisorView) -> None:
    setting = supervisor.config.metrics_port
    if setting:
        missing = CLIENT.missing()
        if missing is not None:
            raise ConfigError(f"metrics_port is {setting}, but {missing}")
        from .supervisor import start

        start(supervisor)


@pprunner.hookimpl
def pprunner_worker_init(context: WorkerContext) -> None:
    """A pull-mode worker counts its own attempts (push mode's are seen by the
    supervisor, which hands the calls out)."""
    if not context.config.metrics_port or context.app is None:
        return
    from .tally import SUFFIX, Tally, folder_of
    from .worker import WorkerMetrics

    folder = folder_of(context.supervisor_id)
    if not folder.is_dir():
        logger.warning("no metrics folder %s: its supervisor serves no metrics; this "
                       "worker counts nothing", folder)
        return
    tally = Tally(folder / f"{context.runner_id}{SUFFIX}")
    context.plugins.manager.register(WorkerMetrics(tally))
