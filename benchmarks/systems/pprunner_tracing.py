"""pprunner on SQLite with the ``tracing`` setting on, for ``python -m benchmarks tracing``.

Everything but the setting is :class:`~.pprunner_sqlite.PprunnerSQLite`, which,
with tracing off, is the baseline of that command's tables. The benchmark
process, the producer of the throughput and latency scenarios, records its spans
with the SDK in both, so the invocations carry a ``traceparent`` as a traced
producer's do; the name says what the pool's processes have.
"""

from __future__ import annotations

from .pprunner_sqlite import PprunnerSQLite


class PprunnerSQLiteTracingApi(PprunnerSQLite):
    """Tracing on, no SDK in the pool: OpenTelemetry's API with its no-op provider."""

    name = "pprunner-sqlite-tracing-api"
    requires = ("pprunner", "opentelemetry.trace")
    tracing = "api"


class PprunnerSQLiteTracingSdk(PprunnerSQLite):
    """Tracing on with the SDK, spans batched to an exporter that drops them."""

    name = "pprunner-sqlite-tracing-sdk"
    requires = ("pprunner", "opentelemetry.sdk.trace")
    tracing = "sdk"
