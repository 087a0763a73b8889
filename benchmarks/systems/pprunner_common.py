"""pprunner run the way a user runs it, on whichever backend a subclass names.

The producer is this process (``benchmarks.apps`` configured with
``app.configure``); the pool is a real ``python -m pprunner run --app
benchmarks.apps:app --processes 2`` subprocess with ``PPRUNNER_BACKEND``
naming the same fresh store, in its own process group. Its working
directory is the round's empty folder, so no ``pyproject.toml`` of the
repository changes its settings.

A backend's system (:class:`PprunnerSystem` subclass) only says how a round
gets a fresh, empty store (:meth:`PprunnerSystem.fresh_backend`) and how it
is cleaned up; launching, readiness, every scenario and the drain-rate
measurement (through pprunner's public backend API) are the same for all.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Collection
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from .. import otel, procs, system
from ..pool_process import LoggedPool
from ..system import WORKERS, CrashRun, IdleRun, System, ThroughputRun

#: seconds a graceful stop may take in teardown (the default, 30, only slows teardown)
SHUTDOWN_TIMEOUT = "1"
#: crash recovery only: quick heartbeats, so a replacement's runner row appears at once
CRASH_HEARTBEAT_INTERVAL = "0.1"


class PprunnerSystem(System):
    """pprunner on one backend; subclasses implement :meth:`fresh_backend`."""

    requires: ClassVar[tuple[str, ...]] = ("pprunner",)
    #: the app's serializer, in the producer and the pool alike
    serializer: ClassVar[str] = "json"
    #: ``python -m benchmarks tracing``: what the pool's processes have, the ``tracing``
    #: setting on, in :data:`benchmarks.otel.MODES` (``off``: the setting is off)
    tracing: ClassVar[str] = "off"

    def fresh_backend(self, workdir: Path) -> str:
        """The backend URL of an empty store for this round alone. Whatever must
        be removed after the round goes on ``self.cleanup`` here: it then runs
        last, once the pool has ended and the producer is closed."""
        raise NotImplementedError

    def setup(self, workdir: Path) -> None:
        super().setup(workdir)
        from .. import apps  # imports pprunner, so only once it is known to be installed

        self.apps: ModuleType = apps
        self.pool = LoggedPool(self.cleanup, workdir, name="pprunner run")
        self.backend_url = self.fresh_backend(workdir)
        apps.app.configure(source="the benchmark", replace=True, backend=self.backend_url,
                           serializer=self.serializer, tracing=self.tracing != "off")
        if self.tracing != "off":  # a traced producer: its invocations carry a traceparent
            otel.install_sdk()
        self.cleanup.callback(self._release_app)

    def _release_app(self) -> None:
        """Close the producer's connection and forget the round's backend."""
        self.apps.app.close()
        self.apps.app.configure(source="the benchmark", replace=True)

    # -- the pool ----------------------------------------------------------------------

    def _launch(self, *, burst: bool = False, **env: str) -> subprocess.Popen[bytes]:
        argv = system.python("-m", "pprunner", "run", "--app", "benchmarks.apps:app",
                             "--processes", str(WORKERS), *(["--burst"] if burst else []))
        return self.pool.launch(argv, system.child_env(
            PPRUNNER_BACKEND=self.backend_url, PPRUNNER_SERIALIZER=self.serializer,
            PPRUNNER_SHUTDOWN_TIMEOUT=SHUTDOWN_TIMEOUT, **self._tracing_env(), **env))

    def _tracing_env(self) -> dict[str, str]:
        if self.tracing == "off":
            return {}
        return {"PPRUNNER_TRACING": "1", otel.MODE_VARIABLE: self.tracing}

    def _workers(self) -> dict[str, Any]:
        """Runner records of the workers, by runner id (the supervisor writes them)."""
        return {r.id: r for r in self.apps.app.backend.runners() if r.kind == "worker"}

    def _ready(self, exclude: Collection[str] = ()) -> dict[str, Any]:
        """Workers in a slot, not in ``exclude``, that have loaded the app: a worker
        retitles itself "pprunner worker N: idle" just before its claim loop (a spare
        is "pprunner worker spare: ..." until it takes a slot)."""
        self.pool.alive()
        return {i: r for i, r in self._workers().items() if i not in exclude
                and procs.title(r.pid).startswith("pprunner worker")
                and not procs.title(r.pid).startswith("pprunner worker spare")
                and not procs.title(r.pid).endswith(": starting")}

    def _wait_ready(self, timeout: float = 30.0) -> None:
        procs.wait_until(lambda: len(self._ready()) >= WORKERS, timeout,
                         f"{WORKERS} pprunner workers to be ready")

    def _drain_s(self, count: int) -> float:
        """First ``started_at`` (set when a worker claims an invocation) to last
        ``finished_at`` of the succeeded invocations, read through the backend API
        once the pool has exited."""
        from pprunner.invocation import Status

        done = self.apps.app.backend.invocations(Status.SUCCESS, count + 1)
        if len(done) != count:
            raise RuntimeError(f"{len(done)} of {count} invocations succeeded")
        started: list[float] = [i.started_at for i in done if i.started_at is not None]
        finished: list[float] = [i.finished_at for i in done if i.finished_at is not None]
        if len(started) != count or len(finished) != count:
            raise RuntimeError("a succeeded invocation has no started_at or finished_at")
        return max(finished) - min(started)

    # -- scenarios ---------------------------------------------------------------------

    def throughput(self, count: int, cap_s: float) -> ThroughputRun:
        for x in range(count):
            self.apps.noop.enqueue(x)
        self.apps.app.close()  # the producer is done before the clock starts
        started = time.perf_counter()
        process = self._launch(burst=True)
        try:
            code = process.wait(timeout=60 + count / 100)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"pprunner run --burst still running:\n{self.pool.tail()}") from None
        wall = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"pprunner run --burst exited with {code}:\n{self.pool.tail()}")
        return ThroughputRun(count=count, wall_s=wall, drain_s=self._drain_s(count))

    def one_process(self, count: int) -> dict[str, float]:
        done = subprocess.run(
            system.python("-m", "benchmarks.producer", self.backend_url, str(count),
                          self.tracing),
            env=system.child_env(PPRUNNER_SERIALIZER=self.serializer), cwd=self.workdir,
            capture_output=True, text=True, timeout=60 + count / 50)
        if done.returncode != 0:
            raise RuntimeError(f"benchmarks.producer exited with {done.returncode}:\n"
                               f"{done.stderr}")
        run: dict[str, float] = json.loads(done.stdout)
        return run

    def latency(self, count: int, gap_s: float) -> list[float]:
        self._launch()
        self._wait_ready()
        return system.sample_latency(lambda: self.apps.stamp.enqueue().result(timeout=10),
                                     count, gap_s)

    def crash_recovery(self, task_s: float, bound_s: float) -> CrashRun:
        self._launch(PPRUNNER_HEARTBEAT_INTERVAL=CRASH_HEARTBEAT_INTERVAL)
        self._wait_ready()
        marker = self.workdir / "attempts.log"
        before = self._serving()
        self.apps.announce_and_sleep.enqueue(str(marker), task_s)
        killed_at = system.start_and_kill(marker)
        return system.watch_recovery(
            killed_at, bound_s, rerun=system.retry_started(marker),
            ready=lambda: time.time() if self._serving() - before else None)

    def _serving(self) -> set[int]:
        """The pool's worker processes in a slot that have loaded the app, by their
        titles (read at once: a runner record waits for the next heartbeat)."""
        self.pool.alive()
        return {pid for pid in procs.descendants(self.pool.process.pid)
                if procs.title(pid).startswith("pprunner worker")
                and not procs.title(pid).startswith("pprunner worker spare")
                and not procs.title(pid).endswith(": starting")}

    def idle_cost(self, window_s: float) -> IdleRun:
        first = self.apps.stamp.enqueue()  # queued before launch: the first task it runs
        launched_at = time.time()
        process = self._launch()
        started_at = first.result(timeout=30)
        self._wait_ready()
        return system.idle_run(process.pid, launched_at, started_at, window_s)

    def wait_on_subtask(self, parents: int, children: int, bound_s: float) -> system.Value:
        from pprunner import ResultTimeout, gather

        self._launch()
        self._wait_ready()

        def send_and_wait() -> list[Any]:
            handles = [self.apps.parent_of_noops.enqueue(children, "nested")
                       for _ in range(parents)]
            return gather(handles, timeout=bound_s)

        return system.time_parents(send_and_wait, ResultTimeout, parents, children, bound_s)
