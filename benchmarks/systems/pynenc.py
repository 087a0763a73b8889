"""pynenc 0.1.1 with its PersistentProcessRunner on its SQLite backend.

The pool is ``pynenc --app benchmarks.peer_apps.pynenc_app.app runner
start``, which runs the app's runner: a ``PersistentProcessRunner`` that
spawns two worker processes (and multiprocessing's resource tracker and
a manager process), each taking one invocation at a time. Broker,
orchestrator, state backend, trigger and client data store are pynenc's
SQLite ones, on a fresh database file in the round's folder; the worker
command gets its path from ``PYNENC__SQLITE_DB_PATH``. No server is needed.

The benchmark process is the producer: calling a task registers an
invocation, and the producer waits for it by polling its status. Only
the producer's own settings differ from pynenc's defaults (see
:data:`PRODUCER_SETTINGS`); the pool runs with pynenc's defaults.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import procs
from ..system import WORKERS
from .cli_pool import BOOT_TIMEOUT_S, LogReadySystem, console_script

#: the producer only: no status cache (pynenc keeps a non-final status 0.1 s,
#: which would make noticing a result up to 0.1 s late) and no INFO line per
#: task on the benchmark's stderr
PRODUCER_SETTINGS = {"cached_status_time": 0.0, "logging_level": "warning"}
#: seconds between two looks at a result's status
POLL_S = 0.005
#: seconds between two counts of the finished no-ops while the pool drains
DRAIN_POLL_S = 0.5
#: history pages read at a time
HISTORY_BATCH = 1000


class PynencSQLite(LogReadySystem):
    name = "pynenc-sqlite"
    requires = ("pynenc",)
    #: "Persistent process worker started with pid:123": logged by each spawned
    #: worker once the app is loaded, just before its loop takes invocations
    ready_line = re.compile(r"Persistent process worker started with pid:(\d+)")

    def setup(self, workdir: Path) -> None:
        super().setup(workdir)
        from ..peer_apps import pynenc_app  # imports pynenc: only once it is installed

        self.tasks = pynenc_app
        self.app = pynenc_app.app
        self.database = workdir / "pynenc.db"
        self.app.config_values = {**(self.app.config_values or {}), **PRODUCER_SETTINGS,
                                  "sqlite_db_path": str(self.database)}
        # the app builds its broker, orchestrator... once, from the settings it had
        # then; this (pynenc's own reset) makes them use this round's database
        self.app._reset_cached_components()
        self.cleanup.callback(self._release)

    def _release(self) -> None:
        """Let the producer's history writes (pynenc writes history in threads)
        finish before the round's folder goes, and forget the round's database."""
        self.app.state_backend.wait_for_all_async_operations()
        self.app._reset_cached_components()

    def command(self) -> list[str]:
        return [console_script("pynenc"), "--app", "benchmarks.peer_apps.pynenc_app.app",
                "runner", "start"]

    def pool_env(self) -> dict[str, str]:
        return {"PYNENC__SQLITE_DB_PATH": str(self.database)}

    def send(self, task: str, *args: Any) -> Any:
        return getattr(self.tasks, task)(*args)

    def result(self, handle: Any, timeout: float) -> Any:
        """``invocation.result`` waits without a bound, so its status is polled
        first (as ``result`` itself does, every 0.1 s by default)."""
        deadline = time.monotonic() + timeout
        while not handle.status.is_final():
            self.pool.alive()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no result within {timeout:g} s")
            time.sleep(POLL_S)
        return handle.result

    def queue_noops(self, count: int) -> Any:
        """``parallelize``, pynenc's way of calling a task many times: it registers
        the invocations in batches. Its history writes are waited for, so none
        is still going on when the clock starts."""
        group = self.tasks.noop.parallelize([(x,) for x in range(count)])
        self.app.state_backend.wait_for_all_async_operations()
        return group

    def drain_times(self, noops: Any, count: int, until: float) -> list[tuple[float, float]]:
        """From pynenc's own records: the count of succeeded no-ops is watched
        until it reaches ``count`` (or time is up); the pool is then stopped, so
        its workers finish writing their history (in threads, as they exit), and
        each no-op done has its RUNNING and SUCCESS records, timed in the worker
        as its status changed."""
        from pynenc.invocation.status import InvocationStatus

        def succeeded() -> int:
            return int(self.app.orchestrator.count_invocations(
                task_id=self.tasks.noop.task_id, statuses=[InvocationStatus.SUCCESS]))

        while (done := succeeded()) < count and time.monotonic() < until:
            self.pool.alive()
            time.sleep(DRAIN_POLL_S)
        procs.end_group(self.pool.process)
        times = self._run_times({invocation.invocation_id for invocation in noops.invocations})
        if len(times) < done:
            raise RuntimeError(f"{done} no-ops succeeded, {len(times)} have their history")
        return times

    def _run_times(self, ids: set[str]) -> list[tuple[float, float]]:
        """When each of invocations ``ids`` that succeeded became RUNNING and
        SUCCESS, from the history."""
        from pynenc.invocation.status import InvocationStatus

        started: dict[str, float] = {}
        finished: dict[str, float] = {}
        since = datetime.fromtimestamp(0, timezone.utc)
        for batch in self.app.state_backend.iter_history_in_timerange(
                since, datetime.now(timezone.utc), batch_size=HISTORY_BATCH):
            for record in batch:
                if record.invocation_id in ids:
                    status = record.status_record.status
                    at = record.timestamp.timestamp()
                    if status == InvocationStatus.RUNNING:
                        started[record.invocation_id] = at
                    elif status == InvocationStatus.SUCCESS:
                        finished[record.invocation_id] = at
        return [(started[i], finished[i]) for i in finished if i in started]


class PynencSQLitePprunner(PynencSQLite):
    """The same app, SQLite components, producer and run as :class:`PynencSQLite`,
    with pprunner's runner plugin selected the pynenc way (``PYNENC__RUNNER_CLS=
    PprunnerRunner`` in the pool's environment, overriding the app's
    PersistentProcessRunner); ``num_processes`` means the same to both."""

    name = "pynenc-sqlite-pprunner"
    #: "pprunner worker 1a2b3c4d5e6f ready (pid 123)": logged by each worker once it
    #: registered its runner context, just before it reports ready to the supervisor
    ready_line = re.compile(r"pprunner worker \w+ ready \(pid (\d+)\)")

    def pool_env(self) -> dict[str, str]:
        return {**super().pool_env(), "PYNENC__RUNNER_CLS": "PprunnerRunner"}


class PynencSQLitePprunnerSpare(PynencSQLitePprunner):
    """The same with one spare worker (``PYNENC__PPRUNNER_SPARE_WORKERS=1``): a
    waiting invocation's lent slot, or a killed worker's, is served by a booted
    worker at once instead of one that boots then."""

    name = "pynenc-sqlite-pprunner-spare"
    only_scenarios = ("crash_recovery", "idle_cost", "wait_on_subtask")

    def pool_env(self) -> dict[str, str]:
        return {**super().pool_env(), "PYNENC__PPRUNNER_SPARE_WORKERS": "1"}

    def _wait_ready(self) -> None:
        """Every slot's worker, and the spare, booted (each says so in the log)."""
        def ready() -> bool:
            self.pool.alive()
            return len(self.ready_workers()) >= WORKERS + 1
        procs.wait_until(ready, BOOT_TIMEOUT_S, f"{WORKERS} workers and a spare to be ready",
                         poll=self.ready_poll_s)
