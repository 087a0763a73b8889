"""Signs of life between pprunner's RQ workers, and the hand-back of a dead one's jobs.

RQ finds a job abandoned by a dead worker only when the job's entry in the
``StartedJobRegistry`` expires (its heartbeat TTL, 90 s by default) and a
maintenance pass (every 10 minutes by default) runs ``cleanup()``: the job
then runs again if its ``Retry`` allows, else it goes to the
``FailedJobRegistry`` with ``AbandonedJobError``. Here every worker renews
a short-lived key each second from a thread of its own; a worker whose key
lapses (``dead_after``, 3 s by default) is dead, and the first survivor to
notice marks that worker's registry entries expired and runs the same
``cleanup()`` — RQ's own decision, taken seconds after the death instead of
minutes. The survivor then records the dead worker's death, as the worker
itself would have on the way out.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from rq.executions import Execution
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty
from rq.utils import as_text, current_timestamp
from rq.worker import Worker as RQWorker

logger = logging.getLogger("pprunner.rq")


class Peers:
    """This worker's sign of life, and its watch over the other pprunner RQ workers."""

    def __init__(self, worker: Any, dead_after: float) -> None:
        self.worker = worker
        self.dead_after = dead_after
        self.prefix = worker.redis_worker_namespace_prefix  # "rq:worker:"
        #: a hash: worker name -> its queue names, comma-separated
        self.members_key = self.prefix.rsplit("worker:", 1)[0] + "pprunner:workers"
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def alive_key(self, name: str) -> str:
        return f"{self.prefix}{name}:alive"

    def join(self) -> None:
        """Announce this worker and start watching (after RQ registered its birth)."""
        self._beat()
        self._thread = threading.Thread(target=self._watch, daemon=True,
                                        name=f"pprunner-rq-peers {self.worker.name}")
        self._thread.start()

    def leave(self) -> None:
        """Stop watching; hand back whatever this worker still holds (a cold shutdown
        leaves its job started), then withdraw the announcement."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        self.hand_back(self.worker.name, self.worker.queue_names())
        with self.worker.connection.pipeline() as pipeline:
            pipeline.hdel(self.members_key, self.worker.name)
            pipeline.delete(self.alive_key(self.worker.name))
            pipeline.execute()

    def stand_in(self) -> None:
        """Renew this worker's sign of life from here on, without watching the others:
        a horse whose worker died keeps it while it finishes its job, so that no peer
        hands the job back as abandoned meanwhile; it lapses when the horse exits."""
        threading.Thread(target=self._renew_until_exit, daemon=True,
                         name=f"pprunner-rq-stand-in {self.worker.name}").start()

    def _renew_until_exit(self) -> None:
        while True:
            try:
                self.worker.connection.set(self.alive_key(self.worker.name), 1,
                                           px=int(self.dead_after * 1000))
            except Exception as exc:  # Redis away for a moment: the next renewal may do
                logger.warning("Worker %s: could not renew its sign of life: %s",
                               self.worker.name, exc)
            time.sleep(self.dead_after / 3)

    def _watch(self) -> None:
        while not self._stopped.wait(self.dead_after / 3):
            try:
                for name, queues in self._beat():
                    self._bury(name, queues)
            except Exception as exc:  # Redis away for a moment: RQ's own loop reports it
                logger.warning("Worker %s: could not renew its sign of life or check other "
                               "workers': %s", self.worker.name, exc)

    def _beat(self) -> list[tuple[str, list[str]]]:
        """Renew this worker's sign of life; return the members that have none."""
        connection, name = self.worker.connection, self.worker.name
        with connection.pipeline() as pipeline:
            pipeline.set(self.alive_key(name), 1, px=int(self.dead_after * 1000))
            pipeline.hset(self.members_key, name, ",".join(self.worker.queue_names()))
            pipeline.hgetall(self.members_key)
            members = pipeline.execute()[-1]
        others = [(as_text(member), as_text(queues)) for member, queues in members.items()
                  if as_text(member) != name]
        if not others:
            return []
        with connection.pipeline() as pipeline:
            for member, _ in others:
                pipeline.exists(self.alive_key(member))
            alive = pipeline.execute()
        return [(member, queues.split(",")) for (member, queues), up in zip(others, alive,
                                                                             strict=True)
                if not up]

    def _bury(self, name: str, queue_names: list[str]) -> None:
        """A worker without a sign of life: one survivor hands back its jobs."""
        connection = self.worker.connection
        if not connection.set(f"{self.members_key}:burying:{name}", self.worker.name, nx=True,
                              ex=60):
            return  # another survivor does it
        logger.warning("Worker %s: worker %s gave no sign of life for %.0f s; handing back "
                       "its started jobs", self.worker.name, name, self.dead_after)
        self.hand_back(name, queue_names)
        dead = RQWorker.find_by_key(self.prefix + name, connection=connection)
        if dead is not None and dead.death_date is None:
            dead.register_death()
        connection.hdel(self.members_key, name)

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
