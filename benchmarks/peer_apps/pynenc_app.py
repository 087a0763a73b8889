"""The pynenc app the benchmarks run:
``pynenc --app benchmarks.peer_apps.pynenc_app.app runner start``.

pynenc's SQLite broker, orchestrator and state backend with its
``PersistentProcessRunner`` of two processes, otherwise its defaults. The
database file is not named here: the worker command gets it from pynenc's
own setting ``PYNENC__SQLITE_DB_PATH``, the benchmark process (the
producer) sets it in ``app.config_values`` for each round.

pynenc identifies a task by the module and name of the decorated function,
and its spawned workers look the task up there, so each task is a function
of this module calling its :mod:`benchmarks.workload` function.
"""

from __future__ import annotations

from pynenc.builder import PynencBuilder

from .. import workload
from ..system import WORKERS

app = (PynencBuilder().app_id("benchmarks").sqlite()
       .persistent_process_runner(num_processes=WORKERS).build())


@app.task
def noop(x: int) -> int:
    return workload.noop(x)


@app.task
def stamp() -> float:
    return workload.stamp()


@app.task
def announce_and_sleep(marker: str, seconds: float) -> float:
    return workload.announce_and_sleep(marker, seconds)


@app.task
def parent_of_noops(count: int) -> int:
    """Call ``count`` no-op children and read each ``invocation.result``, which
    blocks until it is final: pynenc's way of waiting inside a task."""
    children = [noop(n) for n in range(count)]
    return sum(child.result for child in children)
