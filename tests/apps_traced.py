"""An app with tracing on, for tests/test_otel.py, and what its workers need to
export their spans where the test reads them.

Registered as a plugin module (``Supervisor(plugins=[...])``), so every worker
runs :func:`pprunner_worker_init`: it installs a tracer provider that writes each
finished span as one JSON line to the file ``$PPRUNNER_TEST_SPANS`` names.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import pprunner
from pprunner import App, Retry, current_context

app = App(name="traced", tracing=True)
#: the variable naming the file workers append their spans to
SPAN_FILE = "PPRUNNER_TEST_SPANS"


def export_spans_to(path: str) -> None:
    """Install this process's tracer provider: each span a JSON line in ``path``,
    written when it ends (one write per line, so processes can share the file)."""
    out = open(path, "a")  # noqa: SIM115 - open for the process's life
    exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None)
                                   + "\n")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


@pprunner.hookimpl
def pprunner_worker_init() -> None:
    export_spans_to(os.environ[SPAN_FILE])


def _attempt() -> int:
    context = current_context()
    assert context is not None and context.invocation is not None
    return context.invocation.attempts


@app.task
def ok(value: Any) -> Any:
    return value


@app.task
def boom(message: str) -> None:
    raise ValueError(message)


@app.task(max_attempts=3)
def retried_once() -> int:
    if _attempt() == 1:
        raise Retry("once more", delay=0)
    return _attempt()


@app.task(max_attempts=2)
def killed_on_first_attempt() -> int:
    if _attempt() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return _attempt()


@app.task
def enqueues_a_child() -> str:
    return ok.enqueue("child").id


@app.task
def registered_plugins() -> list[str]:
    context = current_context()
    assert context is not None
    return sorted(name for name, _ in context.plugins.manager.list_name_plugin())


def headers_of_this_call() -> dict[str, str]:
    """Push mode: the running call's headers, as the worker got them."""
    context = current_context()
    assert context is not None and context.job is not None
    return dict(context.job.headers)
