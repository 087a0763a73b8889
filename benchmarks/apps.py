"""The pprunner app the benchmarks run: ``--app benchmarks.apps:app``.

Its tasks wrap :mod:`benchmarks.workload`, the functions the bare pools run
too. The backend is not set here: the benchmark configures a fresh SQLite
file per round (``app.configure`` in the producer, ``PPRUNNER_BACKEND`` for
the ``pprunner run`` process).
"""

from __future__ import annotations

from pprunner import App

from . import workload

app = App(name="benchmarks")

noop = app.task(workload.noop)
stamp = app.task(workload.stamp)
#: crash recovery kills the first attempt; the retry is the second one
announce_and_sleep = app.task(max_attempts=3)(workload.announce_and_sleep)
#: lifecycle (benchmarks.lifecycle): the supervisor kills its worker 0.5 s in; a hard time
#: limit is never retried, so the invocation ends FAILED with TimeLimitExceeded
limited_sleep = app.task(name="limited_sleep", time_limit=0.5)(workload.announce_and_sleep)
