"""The supervisor's side of host-consumed workers (:mod:`pprunner.consuming`)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from . import channel
from .child import Child
from .consuming import HostJob, Redelivery, Settle
from .invocation import ErrorInfo, RunnerInfo
from .jobs import Call
from .pool import Pool

logger = logging.getLogger("pprunner.supervisor")

#: seconds a host-consumed worker's reports may wait to be read: each of its jobs'
#: start and end is reported, and the loop reads them in batches
#: (:meth:`Supervisor._select <pprunner.supervisor.Supervisor._select>`)
REPORT_DELAY = 0.01
#: settled jobs whose redelivery by the host's broker is still to be dropped, at most:
#: the oldest are forgotten (a redelivery that went to another machine's workers)
SETTLED_REDELIVERIES = 10_000


class HostFeed:
    """The supervisor's side of host-consumed workers: nothing to hand out; a dead
    worker's jobs go to the plugin's ``settle`` (see the module docstring).

    :param consumer: makes the :class:`Consumer` in each worker (importable there).
    :param settle: ends a dead worker's job in the host's terms (:data:`Settle`).
    """

    backend = None
    tick = None
    #: the consumer is made by an importable function, never one of ``__main__``'s
    calls_from_main = False
    report_delay = REPORT_DELAY

    def __init__(self, consumer: Call, settle: Settle) -> None:
        self.consumer = consumer
        self._settle = settle
        #: ids of dead workers' jobs settled here that the host's broker delivers again
        #: by itself (``settle`` returned ``Redelivery.DROP``): that delivery is dropped
        self._settled_redeliveries: OrderedDict[str, None] = OrderedDict()

    def app_path(self) -> None:
        """No app: each worker runs the host's consumer."""

    def boot(self, pool: Pool, stopping: Callable[[], bool], wake: Callable[[], None],
             plugins: Any) -> None:
        """Nothing to prepare: the host's broker is the consumer's."""

    def heartbeat(self, plugins: Any, runners: Sequence[RunnerInfo]) -> None:
        plugins.hook.pprunner_heartbeat(backend=None, runners=runners, at=time.time())

    def on_done(self, child: Child, message: channel.Done | channel.Note) -> None:
        logger.warning("%s reported a pushed call, which a host-consumed worker never "
                       "gets", child.who)

    on_note = on_done

    def on_cache_request(self, child: Child, message: channel.CacheRequest) -> None:
        child.refuse_cache_request()

    def job_waiting(self, child: Child, waiting: bool) -> None:
        """Nothing to do: the supervisor lends the slot."""

    def hand_out(self, pool: Pool) -> None:
        """Nothing to hand out: the workers consume for themselves."""

    def worker_exited(self, child: Child, error: ErrorInfo | None) -> tuple[HostJob, ...]:
        """Settle each job the dead worker held, in the host's terms, at once."""
        held = []
        kill = child.kill
        for running in child.running:
            job = HostJob(running.job_id, running.name, running.data)
            if kill is None or kill.job_id in (None, job.id):
                ending, retry = error, kill is None or kill.retry
            else:  # another job's hard limit killed the worker under this one
                ending, retry = ErrorInfo("WorkerDied", f"{child.who} was killed while "
                                          f"running this job: {kill.error.message}"), True
            try:
                if self._settle(job, ending, retry) is Redelivery.DROP:
                    self._expect_redelivery(job.id)
            except Exception:
                logger.exception("settling %s (%s) of %s failed", job.id, job.name, child.who)
            held.append(job)
        return tuple(held)

    def drop_redelivery(self, job_id: str) -> bool:
        """Whether the delivery of ``job_id`` a worker was just given by the host's
        broker is the redelivery of a job settled here (answered True once)."""
        if job_id in self._settled_redeliveries:
            del self._settled_redeliveries[job_id]
            return True
        return False

    def _expect_redelivery(self, job_id: str) -> None:
        self._settled_redeliveries[job_id] = None
        while len(self._settled_redeliveries) > SETTLED_REDELIVERIES:
            self._settled_redeliveries.popitem(last=False)

    def drained(self) -> bool:
        return False

    def stopping(self) -> None:
        """Each worker's consumer stops itself when retired."""

    def close(self, runner_ids: list[str], backend_lost: bool) -> None:
        """Nothing held here."""
