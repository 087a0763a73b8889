"""pgqueuer 1.6 with its own worker, beside pprunner-postgres on the same database.

Two worker processes, as every system has: each is pgqueuer's runner in drain
mode (``pgq run benchmarks.peer_apps.pgqueuer_app:main --mode drain``, started
through :func:`pgqueuer.run` as :mod:`benchmarks.peer_apps.pgqueuer_app` says why)
with its defaults: asyncpg, batches of 10, LISTEN/NOTIFY. A round installs
pgqueuer's tables with ``pgq install`` in a schema of its own on the server
pprunner-postgres uses (:mod:`.pprunner_postgres`), and drops that schema after.

Throughput and latency: pgqueuer keeps no results, which the other scenarios
wait for. The drain is read from pgqueuer's own log table: the first ``picked``
to the last ``successful``. Latency is timed as for every system
(:func:`~benchmarks.system.sample_latency`): the clock starts just before the
enqueue (pgqueuer's ``Queries.enqueue`` on a connection kept open, a commit that
waits for the disk as pprunner's does) and stops at the start time the job sends
back over a UNIX datagram socket (:mod:`benchmarks.peer_apps.pgqueuer_app`).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from .. import system
from ..pool_process import LoggedPool
from ..system import WORKERS, System, ThroughputRun
from .pprunner_postgres import POSTGRES_URL, connect, fresh_schema, unavailable

#: the longest a latency sample waits for its job's start (the first: the workers' boot)
STAMP_TIMEOUT_S = 30.0


class Pgqueuer(System):
    name = "pgqueuer"
    requires = ("pgqueuer", "asyncpg", "psycopg")
    only_scenarios = ("throughput", "latency")

    @classmethod
    def unavailable(cls) -> str | None:
        return unavailable()

    def setup(self, workdir: Path) -> None:
        super().setup(workdir)
        self.schema = fresh_schema(self.cleanup, "pgqueuer")
        with connect() as connection:
            connection.execute(f'CREATE SCHEMA "{self.schema}"')
        self.env = system.child_env(PGDSN=POSTGRES_URL, PGQUEUER_SCHEMA=self.schema)
        subprocess.run(system.python("-m", "pgqueuer", "install"), env=self.env, cwd=workdir,
                       check=True, capture_output=True, timeout=60)
        self.pools = [LoggedPool(self.cleanup, workdir, name=f"pgqueuer worker {n + 1}")
                      for n in range(WORKERS)]

    async def _queries(self) -> tuple[Any, Any]:
        """A connection of the producer's own, and pgqueuer's queries on it."""
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries
        from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment, QueryQueueBuilder
        from pgqueuer.domain.settings import DBSettings

        connection = await asyncpg.connect(POSTGRES_URL)
        settings = DBSettings(db_schema=self.schema)
        return connection, Queries(AsyncpgDriver(connection),
                                   qbe=QueryBuilderEnvironment(settings),
                                   qbq=QueryQueueBuilder(settings))

    def _enqueue(self, count: int) -> None:
        """``count`` no-op jobs in one batch, as pgqueuer's ``Queries.enqueue`` takes lists."""
        async def enqueue() -> None:
            connection, queries = await self._queries()
            try:
                await queries.enqueue(["noop"] * count, [str(x).encode() for x in range(count)],
                                      [0] * count)
            finally:
                await connection.close()

        asyncio.run(enqueue())

    def latency(self, count: int, gap_s: float) -> list[float]:
        stamps = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.cleanup.callback(stamps.close)
        address = str(self.workdir / "stamps.sock")
        stamps.bind(address)
        stamps.settimeout(STAMP_TIMEOUT_S)
        env = {**self.env, "BENCHMARKS_STAMP_SOCKET": address}
        for pool in self.pools:
            pool.launch(system.python("-m", "benchmarks.peer_apps.pgqueuer_app"), env)
        loop = asyncio.new_event_loop()
        self.cleanup.callback(loop.close)
        connection, queries = loop.run_until_complete(self._queries())
        self.cleanup.callback(lambda: loop.run_until_complete(connection.close()))

        def call_stamp() -> float:
            loop.run_until_complete(queries.enqueue("stamp", None))
            try:
                return float(stamps.recv(64))
            except TimeoutError:
                for pool in self.pools:
                    pool.alive()
                raise TimeoutError(f"no pgqueuer job started within {STAMP_TIMEOUT_S} s") from None

        return system.sample_latency(call_stamp, count, gap_s)

    def throughput(self, count: int, cap_s: float) -> ThroughputRun:
        self._enqueue(count)
        started = time.perf_counter()
        workers = [pool.launch(system.python("-m", "benchmarks.peer_apps.pgqueuer_app", "drain"),
                               self.env) for pool in self.pools]
        for pool, worker in zip(self.pools, workers, strict=True):
            try:
                code = worker.wait(timeout=60 + count / 100)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"{pool.name} still running:\n{pool.tail()}") from None
            if code != 0:
                raise RuntimeError(f"{pool.name} exited with {code}:\n{pool.tail()}")
        wall = time.perf_counter() - started
        return ThroughputRun(count=count, wall_s=wall, drain_s=self._drain_s(count))

    def _drain_s(self, count: int) -> float:
        with connect() as connection:
            done, drain = connection.execute(
                f"SELECT count(*) FILTER (WHERE status = 'successful'), extract(epoch FROM "
                f"max(created) FILTER (WHERE status = 'successful') - min(created) FILTER "
                f"(WHERE status = 'picked'))::float8 FROM \"{self.schema}\".pgqueuer_log"
            ).fetchone()
        if done != count:
            raise RuntimeError(f"{done} of {count} pgqueuer jobs succeeded")
        return float(drain)
