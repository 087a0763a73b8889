"""A host framework of the tests' own, for host-consumed mode.

Jobs are JSON files in a spool folder: ``queue/`` holds what waits, a worker's
consumer claims one by renaming it into ``claimed/`` (atomic: one claimer
wins), runs the named function from :data:`TASKS` and writes
``results/<id>.json``. Like a real host it knows nothing of pprunner but the
consumer seam: :func:`settle` puts a dead worker's job back in the queue, or
fails it, as the supervisor says. A job enqueued as ``redelivered`` plays a
broker's own redelivery of a dead worker's job (RabbitMQ's): the consumer asks
the supervisor whether to drop it, and :func:`settle_redelivered` is the
settling that goes with such a broker.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pprunner
from pprunner.consuming import HostJob, HostJobs, Redelivery
from pprunner.invocation import ErrorInfo


def _pid() -> int:
    return os.getpid()


def _block_first(marker_dir: str) -> int:
    """The first attempt announces itself and blocks until its worker dies; the next
    one returns its pid."""
    first = Path(marker_dir, "first")
    if not first.exists():
        partial = Path(marker_dir, "first.partial")
        partial.write_text(str(os.getpid()))
        partial.replace(first)
        time.sleep(120)
    return os.getpid()


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _fan_out(count: int) -> list[int]:
    """Enqueue ``count`` jobs and wait for them the core's way (the pause-on-wait
    hook, ``WorkerContext.wait_for_host``); returns the pids that ran them."""
    spool = Spool(_running.folder)
    ids = [spool.enqueue("pid") for _ in range(count)]
    context = pprunner.current_context()
    assert context is not None and _running.job is not None
    context.wait_for_host(_running.job, ids,
                          lambda: [i for i in ids if spool.result(i) is None], timeout=30)
    return [spool.result(i)["value"] for i in ids]  # type: ignore[index]


TASKS: dict[str, Callable[..., Any]] = {"pid": _pid, "block_first": _block_first,
                                        "sleep": _sleep, "fan_out": _fan_out}


class _Running:
    """The worker's spool folder and the job it runs (what a task that waits needs)."""

    folder: Path
    job: HostJob | None = None


_running = _Running()


class Spool:
    """The producer's and the tests' view of a spool folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for name in ("queue", "claimed", "results", "dropped"):
            (folder / name).mkdir(parents=True, exist_ok=True)

    def enqueue(self, task: str, *args: Any, time_limit: float | None = None,
                soft_time_limit: float | None = None, job_id: str | None = None,
                redelivered: bool = False) -> str:
        job_id = job_id or os.urandom(6).hex()
        body = json.dumps({"id": job_id, "task": task, "args": args, "time_limit": time_limit,
                           "soft_time_limit": soft_time_limit, "redelivered": redelivered})
        partial = self.folder / f"{job_id}.partial"
        partial.write_text(body)
        partial.replace(self.folder / "queue" / f"{time.time_ns()}-{job_id}.json")
        return job_id

    def result(self, job_id: str) -> dict[str, Any] | None:
        path = self.folder / "results" / f"{job_id}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def dropped(self) -> list[str]:
        """The ids of the redeliveries the consumers dropped unrun."""
        return sorted(path.stem for path in (self.folder / "dropped").iterdir())


class SpoolConsumer:
    """The consumer each worker runs: claim the oldest job, run it, write its result;
    an empty queue is polled with a back-off up to 0.1 s."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self._stopped = threading.Event()

    def consume(self, jobs: HostJobs) -> None:
        pause = 0.005
        while not self._stopped.is_set():
            claimed = self._claim()
            if claimed is None:
                self._stopped.wait(pause)
                pause = min(pause * 2, 0.1)
                continue
            pause = 0.005
            job = json.loads(claimed.read_text())
            if job.get("redelivered") and jobs.redelivery_settled(job["id"]):
                claimed.rename(self.folder / "dropped" / f"{job['id']}.json")
                continue
            _running.folder, _running.job = self.folder, HostJob(job["id"], job["task"])
            with jobs.running(job["id"], job["task"], time_limit=job["time_limit"],
                              soft_time_limit=job["soft_time_limit"], data=claimed.name):
                try:
                    result = {"value": TASKS[job["task"]](*job["args"])}
                except Exception as exc:  # the task's own error is its result
                    result = {"error": type(exc).__name__, "message": str(exc)}
            _write_result(self.folder, job["id"], result)
            claimed.unlink()

    def stop(self) -> None:
        self._stopped.set()

    def _claim(self) -> Path | None:
        for name in sorted(os.listdir(self.folder / "queue")):
            target = self.folder / "claimed" / name
            try:
                (self.folder / "queue" / name).rename(target)
            except FileNotFoundError:  # another worker's
                continue
            return target
        return None


def make_consumer(folder: str) -> SpoolConsumer:
    return SpoolConsumer(folder)


def settle(folder: str, job: HostJob, error: ErrorInfo | None, retry: bool) -> None:
    """In the supervisor: a dead worker's job goes back in the queue (stopped, or worth
    another try) or fails with the error."""
    claimed = Path(folder, "claimed", job.data)
    if error is None or retry:
        claimed.rename(Path(folder, "queue", job.data))
        return
    _write_result(Path(folder), job.id, {"error": error.type, "message": error.message})
    claimed.unlink()


def settle_redelivered(folder: str, job: HostJob, error: ErrorInfo | None,
                       retry: bool) -> Redelivery | None:
    """:func:`settle` for a broker that delivers a dead worker's job again by itself
    (the tests play that broker): a stopped worker's job is left to that
    redelivery; a dead one's fails here, and its redelivery is to be dropped."""
    if error is None:
        return None
    _write_result(Path(folder), job.id, {"error": error.type, "message": error.message})
    Path(folder, "claimed", job.data).unlink()
    return Redelivery.DROP


def _write_result(folder: Path, job_id: str, result: dict[str, Any]) -> None:
    partial = folder / "results" / f"{job_id}.partial"
    partial.write_text(json.dumps(result))
    partial.replace(folder / "results" / f"{job_id}.json")

