"""The supervisor side: what only the supervisor sees, and the endpoint for all.

:class:`SupervisorMetrics` is registered in a supervisor whose metrics are
on (see :func:`start`). It counts in its own :class:`~.tally.Tally` what
the supervisor sees happen to jobs — push mode's calls, handed out and
ended; pull mode's invocations whose worker died under them — and keeps the
workers' boots and exits. When scraped it adds up every tally file of its
folder, and asks the supervisor, and in pull mode the backend, how things
stand now (workers, queue, heartbeat).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import prometheus_client
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

import pprunner
from pprunner.backend import Backend
from pprunner.invocation import Invocation, RunnerInfo, Status
from pprunner.jobs import Call, Ending, Failed, Finished
from pprunner.spawn import WorkerExit
from pprunner.supervisor import SupervisorView

from . import tally
from .endpoint import Endpoint
from .folder import MetricsFolder
from .worker import WorkerMetrics

logger = logging.getLogger("pprunner.metrics")

#: upper bounds of the worker boot-time buckets, in seconds
BOOT_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: (field, metric name, help) of the counters by task; exposed with ``_total``
TASK_COUNTERS = (
    (tally.ENQUEUED, "pprunner_invocations_enqueued",
     "Invocations enqueued by tasks running in this supervisor's workers (pull mode), "
     "calls submitted to this supervisor (push mode)"),
    (tally.STARTED, "pprunner_invocations_started", "Attempts started in a worker"),
    (tally.SUCCEEDED, "pprunner_invocations_succeeded", "Attempts that succeeded"),
    (tally.FAILED, "pprunner_invocations_failed",
     "Attempts that failed for good: raised, could not run, or their worker died on the "
     "last attempt or past a hard time limit"),
    (tally.RETRIED, "pprunner_invocations_retried",
     "Attempts that raised and went back to the queue for another (pull mode)"),
    (tally.REROUTED, "pprunner_invocations_rerouted",
     "Attempts whose worker died under them and that went back to the queue"),
)


def start(supervisor: SupervisorView) -> SupervisorMetrics:
    """Set up metrics for a booting supervisor: its folder, its endpoint, and the
    hook implementations that count (registered with its plugin manager)."""
    folder = MetricsFolder(supervisor.id)
    try:
        metrics = SupervisorMetrics(supervisor, folder)
    except BaseException:
        folder.remove()
        raise
    manager = supervisor.plugins.manager
    manager.register(metrics)
    if supervisor.processes == 0:  # inline: the supervisor runs the tasks itself
        manager.register(metrics.inline)
    logger.info("Prometheus metrics on http://%s:%d/metrics", metrics.endpoint.host,
                metrics.endpoint.port)
    return metrics


class SupervisorMetrics:
    """The supervisor's hook implementations, and the collector its endpoint serves."""

    def __init__(self, supervisor: SupervisorView, folder: MetricsFolder) -> None:
        self.supervisor = supervisor
        self.folder = folder
        self.own = tally.Tally(folder.path / f"{supervisor.id}{tally.SUFFIX}")
        #: an inline supervisor's own attempts go to its own file, as a worker's would
        self.inline = WorkerMetrics(self.own)
        #: push mode: calls handed to a worker and not ended yet, with when they started
        self._running: dict[str, float] = {}
        self._stopping = False
        self._last_beat = time.monotonic()
        #: held while a dead worker's file is folded into ``own`` and while the files are
        #: read, so that no scrape counts a worker twice or not at all; and around the
        #: counts below, which only the supervisor keeps
        self._lock = threading.Lock()
        self._exits: dict[tuple[str, str], int] = {}
        self._boots = [0.0] * (len(BOOT_BOUNDS) + 1)
        self._boot_seconds = 0.0
        #: the scrapes' connection to the backend (pull mode), and whether it is
        #: theirs to close
        self._store: Backend | None = None
        self._store_is_ours = False
        registry = prometheus_client.CollectorRegistry(auto_describe=False)
        registry.register(self)
        try:
            self.endpoint = Endpoint(prometheus_client.make_wsgi_app(registry),
                                     supervisor.config.metrics_port or "")
        except BaseException:
            self.own.close()
            raise

    def __repr__(self) -> str:
        return f"<SupervisorMetrics {self.supervisor.id} port {self.endpoint.port}>"

    # -- the supervisor's hooks ----------------------------------------------------

    @pprunner.hookimpl
    def pprunner_worker_ready(self, runner: RunnerInfo) -> None:
        seconds = max(0.0, time.time() - runner.started_at)
        with self._lock:
            self._boots[tally.bucket_of(BOOT_BOUNDS, seconds)] += 1
            self._boot_seconds += seconds

    @pprunner.hookimpl
    def pprunner_worker_exited(self, runner: RunnerInfo, exit: WorkerExit) -> None:
        """Count the exit and what the worker held; fold its file into ours."""
        how = exit.signal or str(exit.exitcode)
        for invocation in exit.invocations:  # pull mode, as they are after the reroute
            field = tally.REROUTED if invocation.status is Status.PENDING else tally.FAILED
            self.own.add(invocation.task, field)
        for call in exit.calls:  # push mode: run again, unless it ended (Lost) or we stop
            if self._running.pop(call.id, None) is not None and not self._stopping:
                self.own.add(call.task_name, tally.REROUTED)
        path = self.folder.path / f"{runner.id}{tally.SUFFIX}"
        with self._lock:
            self._exits[(exit.cause, how)] = self._exits.get((exit.cause, how), 0) + 1
            self.own.merge(tally.read(path))
            path.unlink(missing_ok=True)

    @pprunner.hookimpl(wrapper=True)
    def pprunner_enqueue(self, job: Invocation | Call) -> Generator[None, Any, Any]:
        """Calls submitted to this supervisor (push mode), once queued. Invocations
        are counted where tasks run (:class:`~.worker.WorkerMetrics`); one reaches
        here only in an inline supervisor, or in a worker forked from this process,
        which inherits this object with the plugin manager."""
        sent = yield
        if isinstance(job, Call):
            self.own.add(job.task_name, tally.ENQUEUED)
        return sent

    @pprunner.hookimpl
    def pprunner_job_started(self, call: Call) -> None:
        self._running[call.id] = time.monotonic()
        self.own.add(call.task_name, tally.STARTED)

    @pprunner.hookimpl
    def pprunner_job_finished(self, call: Call, ending: Ending) -> None:
        """Finished and Failed ran to their end in the worker: their time is counted;
        Lost (the worker died on the call's last attempt) and TimedOut are failures
        whose run was cut short."""
        started = self._running.pop(call.id, time.monotonic())
        if isinstance(ending, Finished | Failed):
            field = tally.SUCCEEDED if isinstance(ending, Finished) else tally.FAILED
            self.own.ended(call.task_name, field, time.monotonic() - started)
        else:
            self.own.add(call.task_name, tally.FAILED)

    @pprunner.hookimpl
    def pprunner_heartbeat(self) -> None:
        self._last_beat = time.monotonic()

    @pprunner.hookimpl
    def pprunner_supervisor_stopping(self) -> None:
        self._stopping = True

    @pprunner.hookimpl
    def pprunner_supervisor_stopped(self) -> None:
        """Stop serving, forget this supervisor's plugins, remove its folder."""
        self.endpoint.close()
        manager = self.supervisor.plugins.manager
        for plugin in (self, self.inline):
            if manager.is_registered(plugin):
                manager.unregister(plugin)
        if self._store is not None and self._store_is_ours:
            self._store.close()
        self.own.close()
        self.folder.remove()

    # -- the collector -------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            table = tally.combine(tally.read(p) for p in tally.files(self.folder.path))
            exits = dict(self._exits)
            boots, boot_seconds = list(self._boots), self._boot_seconds
        yield from _task_families(table)
        yield _histogram("pprunner_invocation_duration_seconds",
                         "How long attempts ran in a worker, for those that ended there",
                         tally.DURATION_BOUNDS,
                         {task: (row[tally.BUCKETS:], row[tally.DURATION_SUM])
                          for task, row in table.items()})
        family = CounterMetricFamily("pprunner_worker_exits", "Worker processes that ended, "
                                     "by cause and by signal name or exit code",
                                     labels=["cause", "exit"])
        for (cause, how), count in sorted(exits.items()):
            family.add_metric([cause, how], count)
        yield family
        yield CounterMetricFamily("pprunner_worker_boots", "Worker processes that booted",
                                  value=sum(boots))
        yield _histogram("pprunner_worker_boot_seconds", "From a worker's spawn to its "
                         "report that it is ready", BOOT_BOUNDS, {None: (boots, boot_seconds)})
        yield from self._now()
        yield GaugeMetricFamily("pprunner_supervisor_heartbeat_age_seconds",
                                "Seconds since the supervisor's loop last reported its "
                                "workers alive", value=time.monotonic() - self._last_beat)

    def _now(self) -> Iterator[Metric]:
        """The workers and the queue as they are now."""
        view = self.supervisor
        states = view.workers()
        yield GaugeMetricFamily("pprunner_workers_configured", "Worker processes the "
                                "supervisor keeps (processes, as scaled)", value=view.processes)
        inline = view.processes == 0
        yield GaugeMetricFamily("pprunner_workers_alive", "Worker processes alive (booting, "
                                "serving or on their way out)",
                                value=1 if inline else len(states))
        if view.app is None:
            busy = sum(s.call is not None for s in states)
            paused = sum(s.waiting for s in states)
            queue = {"pending": view.queued_calls, "running": busy}
        else:
            try:
                store = self._backend()
                owned = store.owned_by([view.id] if inline else [s.runner.id for s in states])
                counts = store.counts()
            except Exception as exc:
                logger.warning("metrics: cannot ask the backend how busy the workers are and "
                               "how long the queue is: %s", exc)
                return
            busy = len({i.owner for i in owned if i.status is Status.RUNNING})
            paused = len({i.owner for i in owned if i.status is Status.PAUSED})
            queue = {status.value.lower(): count for status, count in counts.items()}
        yield GaugeMetricFamily("pprunner_workers_busy", "Workers running a job",
                                value=busy)
        yield GaugeMetricFamily("pprunner_workers_paused", "Workers whose job waits for "
                                "others (PAUSED invocation; push mode: lend_slot())",
                                value=paused)
        family = GaugeMetricFamily("pprunner_queue_invocations", "Invocations in the store by "
                                   "status (push mode: calls waiting for a worker, and running)",
                                   labels=["status"])
        for status, count in queue.items():
            family.add_metric([status], count)
        yield family

    def _backend(self) -> Backend:
        """A connection of the scrapes' own (the supervisor's is its loop's): one that
        gives up at once when the store is unreachable, so a scrape fails instead of
        hanging. An in-process store (``memory://``) can only be the supervisor's.
        Opened once, whatever number of scrapes come at once."""
        with self._lock:
            if self._store is None:
                app = self.supervisor.app
                assert app is not None
                self._store_is_ours = app.backend.supports_processes
                if self._store_is_ours:
                    self._store = app.plugins.registry.backend_for(app.backend.url,
                                                                   create=False)
                    self._store.keep_waiting = lambda outage_s: False
                else:
                    self._store = app.backend
            return self._store


def _task_families(table: tally.Table) -> Iterator[Metric]:
    for field, name, documentation in TASK_COUNTERS:
        family = CounterMetricFamily(name, documentation, labels=["task"])
        for task, row in sorted(table.items()):
            family.add_metric([task], row[field])
        yield family


def _histogram(name: str, documentation: str, bounds: tuple[float, ...],
               series: dict[Any, tuple[list[float], float]]) -> HistogramMetricFamily:
    """A histogram family from non-cumulative bucket counts (and sums), by task
    (or the key None: no label)."""
    labelled = any(key is not None for key in series)
    family = HistogramMetricFamily(name, documentation, labels=["task"] if labelled else None)
    for key, (counts, total) in sorted(series.items(), key=lambda item: str(item[0])):
        cumulative, buckets = 0.0, []
        for bound, count in zip((*bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family.add_metric([key] if labelled else [], buckets, total)
    return family
