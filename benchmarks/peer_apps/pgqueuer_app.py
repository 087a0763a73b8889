"""The pgqueuer app the benchmarks run: ``pgq run benchmarks.peer_apps.pgqueuer_app:main``.

Its entrypoints wrap :func:`benchmarks.workload.noop`, the no-op every system
runs, and :func:`benchmarks.workload.stamp`, the latency's end point: pgqueuer keeps
no results, so the start time is sent as one datagram to the UNIX socket the round
names in ``BENCHMARKS_STAMP_SOCKET``. pgqueuer's own worker with its defaults
(asyncpg, the driver its published figures use; batches of 10; LISTEN/NOTIFY), on
the database and schema the round names in ``PGDSN`` and ``PGQUEUER_SCHEMA`` (see
:mod:`benchmarks.systems.pgqueuer`); ``drain`` as the first argument: exit once the
queue is empty (throughput), else serve until stopped (latency).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator

import asyncpg
import pgqueuer
from pgqueuer import AsyncpgDriver, Job, PgQueuer
from pgqueuer.adapters.cli.cli import asyncio_run
from pgqueuer.types import QueueExecutionMode

from .. import workload

#: where the ``stamp`` entrypoint sends its start time from
stamps = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


@contextlib.asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(os.environ["PGDSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        workload.noop(int(job.payload or b"0"))

    @pgq.entrypoint("stamp")
    async def stamp(job: Job) -> None:
        stamps.sendto(repr(workload.stamp()).encode(), os.environ["BENCHMARKS_STAMP_SOCKET"])

    try:
        yield pgq
    finally:
        await connection.close()


if __name__ == "__main__":
    # what ``pgq run benchmarks.peer_apps.pgqueuer_app:main --mode drain`` does, through
    # pgqueuer's own runner: that command fails at start with typer 0.29 (its log level
    # option reaches pgqueuer as a string)
    drain = sys.argv[1:] == ["drain"]
    asyncio_run(pgqueuer.run(main, mode=QueueExecutionMode.drain if drain
                             else QueueExecutionMode.continuous))
