"""loky's pool and ``pprunner.Executor``, for ``python -m benchmarks executors``.

Measured by exactly the code that measures the standard library's pools
(:class:`~benchmarks.systems.stdlib_pools.BarePool`), on the same function
and two workers; each with its own defaults (start method included).
"""

from __future__ import annotations

from .stdlib_pools import BarePool


class LokyExecutor(BarePool):
    """``loky.ProcessPoolExecutor(max_workers=2)``: the same executor object all
    along, as with the others (``loky.get_reusable_executor()`` would hand out
    a new one, with new workers, after a worker's death broke it)."""

    name = "loky"
    kind = "loky"
    requires = ("loky",)


class PprunnerExecutor(BarePool):
    """``pprunner.Executor(max_workers=2)``: a supervisor loop thread and a dispatcher
    thread in the pool's process, ``spawn``ed workers."""

    name = "pprunner.Executor"
    kind = "pprunner"
    requires = ("pprunner",)


class PprunnerExecutorMetrics(PprunnerExecutor):
    """``pprunner.Executor(max_workers=2, metrics_port=...)``: what the metrics plugin
    costs a push-mode pool, whose supervisor counts every call."""

    name = "pprunner.Executor+metrics"
    kind = "pprunner-metrics"
    requires = ("pprunner", "prometheus_client")
