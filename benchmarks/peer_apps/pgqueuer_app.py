"""The pgqueuer app the benchmarks run: ``pgq run benchmarks.peer_apps.pgqueuer_app:main``.

Its one entrypoint wraps :func:`benchmarks.workload.noop`, the no-op every system
runs. pgqueuer's own worker with its defaults (asyncpg, the driver its published
figures use; batches of 10; LISTEN/NOTIFY), on the database and schema the round
names in ``PGDSN`` and ``PGQUEUER_SCHEMA`` (see :mod:`benchmarks.systems.pgqueuer`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import asyncpg
import pgqueuer
from pgqueuer import AsyncpgDriver, Job, PgQueuer
from pgqueuer.adapters.cli.cli import asyncio_run
from pgqueuer.types import QueueExecutionMode

from .. import workload


@contextlib.asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(os.environ["PGDSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        workload.noop(int(job.payload or b"0"))

    try:
        yield pgq
    finally:
        await connection.close()


if __name__ == "__main__":
    # what ``pgq run benchmarks.peer_apps.pgqueuer_app:main --mode drain`` does, through
    # pgqueuer's own runner: that command fails at start with typer 0.29 (its log level
    # option reaches pgqueuer as a string)
    asyncio_run(pgqueuer.run(main, mode=QueueExecutionMode.drain))
