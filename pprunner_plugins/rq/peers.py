"""The hand-back of a dead pprunner RQ worker's jobs, seconds after its death.

RQ finds a job abandoned by a dead worker only when the job's entry in the
``StartedJobRegistry`` expires (its heartbeat TTL, 90 s by default) and a
maintenance pass (every 10 minutes by default) runs ``cleanup()``: the job
then runs again if its ``Retry`` allows, else it goes to the
``FailedJobRegistry`` with ``AbandonedJobError``. Here the workers watch each
other through the core's :class:`~pprunner.peers.PeerWatch` on RQ's Redis: a
worker without a sign of life for ``dead_after`` seconds (3 by default) is
dead, and the survivor that wins its burial marks that worker's registry
entries expired and runs the same ``cleanup()`` — RQ's own decision, taken
seconds after the death instead of minutes — then records the dead worker's
death, as the worker itself would have on the way out.
"""

from __future__ import annotations

import logging
from typing import Any

from rq.executions import Execution
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty
from rq.utils import as_text, current_timestamp
from rq.worker import Worker as RQWorker

from pprunner.peers import PeerWatch
from pprunner_plugins.redis.peers import RedisPeers

logger = logging.getLogger("pprunner.rq")


class Peers:
    """This worker's place among the pprunner RQ workers on its Redis."""

    def __init__(self, worker: Any, dead_after: float) -> None:
        self.worker = worker
        namespace = worker.redis_worker_namespace_prefix.rsplit("worker:", 1)[0]  # "rq:"
        self.watch = PeerWatch(RedisPeers(worker.connection, f"{namespace}pprunner:peers:"),
                               worker.name, lambda: ",".join(worker.queue_names()),
                               dead_after, self._bury)

    def join(self) -> None:
        """Announce this worker and start watching (after RQ registered its birth)."""
        self.watch.join()

    def leave(self) -> None:
        """Stop watching; hand back whatever this worker still holds (a cold shutdown
        leaves its job started), then withdraw the announcement."""
        self.watch.leave()
        self.hand_back(self.worker.name, self.worker.queue_names())
        self.watch.forget()

    def stand_in(self) -> None:
        """A horse whose worker died keeps the worker's sign of life while it finishes
        its job, so that no peer hands the job back as abandoned meanwhile; it lapses
        when the horse exits."""
        self.watch.stand_in()

    def _bury(self, name: str, queues: str) -> None:
        self.hand_back(name, queues.split(","))
        dead = RQWorker.find_by_key(self.worker.redis_worker_namespace_prefix + name,
                                    connection=self.worker.connection)
        if dead is not None and dead.death_date is None:
            dead.register_death()

    def hand_back(self, name: str, queue_names: list[str]) -> list[str]:
        """Run RQ's abandoned-job cleanup on the jobs worker ``name`` started, now.

        Their ``StartedJobRegistry`` entries get an expiry in the past (what
        their heartbeat TTL would have given them a minute later) and
        ``cleanup()`` decides: ``Retry`` or ``FailedJobRegistry``, the failure
        callback with ``AbandonedJobError``, dependents. Callbacks run under
        ``TimerDeathPenalty``: this is not the main thread. Returns the job ids.
        """
        connection, worker = self.worker.connection, self.worker
        handed: list[str] = []
        for queue_name in queue_names:
            registry = StartedJobRegistry(queue_name, connection=connection,
                                          job_class=worker.job_class, serializer=worker.serializer,
                                          death_penalty_class=TimerDeathPenalty)
            entries = registry.get_job_and_execution_ids(cleanup=False)
            if not entries:
                continue
            with connection.pipeline() as pipeline:
                for job_id, execution_id in entries:
                    pipeline.hget(Execution(execution_id, job_id, connection).key, "worker_name")
                owners = pipeline.execute()
            theirs = {f"{job_id}:{execution_id}": current_timestamp() - 1
                      for (job_id, execution_id), owner in zip(entries, owners, strict=True)
                      if owner is not None and as_text(owner) == name}
            if not theirs:
                continue
            connection.zadd(registry.key, theirs, xx=True)
            registry.cleanup(exception_handlers=worker._exc_handlers)
            handed += [key.split(":", 1)[0] for key in theirs]
        if handed:
            logger.warning("Worker %s: handed back job(s) %s of worker %s through RQ's "
                           "abandoned-job cleanup", worker.name, ", ".join(handed), name)
        return handed
