"""OpenTelemetry for ``python -m benchmarks tracing``: spans recorded and then dropped.

``BENCHMARKS_TRACING`` says what a process of the pool has, the ``tracing``
setting being on: ``api`` no SDK (the API's no-op provider: the plugin's spans
record nothing), ``sdk`` the SDK's ``TracerProvider`` with a
``BatchSpanProcessor`` whose exporter drops every batch: the whole cost of
recording spans, nothing of sending them anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

#: the variable the pool's processes read (set for them by the tracing systems)
MODE_VARIABLE = "BENCHMARKS_TRACING"
MODES = ("off", "api", "sdk")

_installed = False


def install_sdk() -> None:
    """This process's tracer provider (once: OpenTelemetry allows one per process)."""
    global _installed
    if _installed:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)
    _installed = True


def install_from_environment() -> None:
    """In the pool's processes: the SDK when ``BENCHMARKS_TRACING=sdk``."""
    if os.environ.get(MODE_VARIABLE) == "sdk":
        install_sdk()
