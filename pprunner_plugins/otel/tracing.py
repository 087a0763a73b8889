"""The tracing hooks, registered by :mod:`pprunner_plugins.otel` while ``tracing`` is on.

A producer span (kind PRODUCER, ``send TASK``) covers each enqueue, or each
submit in push mode, and its context travels in the job's headers (W3C
``traceparent``, through the configured propagator); the worker's span (kind
CONSUMER, ``process TASK``) is its child. Attributes follow OpenTelemetry's
messaging conventions where they fit (``messaging.system`` ``pprunner``,
``messaging.operation.type`` ``send``/``process``, ``messaging.message.id`` the
invocation or call id, ``messaging.client.id`` the worker's runner id), plus
``pprunner.task.name``, ``pprunner.attempt`` (pull mode) and ``pprunner.outcome``:
``success``, ``failure``, ``retry`` (the attempt failed and another one follows)
or ``interrupted`` (the worker was stopped and handed the invocation back).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

import pprunner
from pprunner.invocation import Invocation, type_name
from pprunner.jobs import Call
from pprunner.retries import retry_delay
from pprunner.task import Task
from pprunner.worker import WorkerContext, WorkerTerminated

SYSTEM = "pprunner"


def _name(job: Invocation | Call) -> str:
    return job.task if isinstance(job, Invocation) else job.name


def _outcome(exc: BaseException, task: Task[..., Any] | None,
             invocation: Invocation | None) -> str:
    if isinstance(exc, WorkerTerminated):
        return "interrupted"
    if task is not None and invocation is not None and \
            retry_delay(task, invocation, exc) is not None:
        return "retry"
    return "failure"


class Tracing:
    """Spans around sending and running jobs, through the global tracer provider
    (a proxy until the application installs one)."""

    def __init__(self) -> None:
        self.tracer = trace.get_tracer("pprunner", pprunner.__version__)

    @pprunner.hookimpl(wrapper=True)
    def pprunner_enqueue(self, job: Invocation | Call,
                         headers: dict[str, str]) -> Generator[None, Any, Any]:
        name = _name(job)
        with self.tracer.start_as_current_span(
                f"send {name}", kind=SpanKind.PRODUCER, attributes={
                    "messaging.system": SYSTEM, "messaging.operation.type": "send",
                    "messaging.operation.name": "send", "messaging.message.id": job.id,
                    "pprunner.task.name": name}):
            propagate.inject(headers)
            return (yield)

    @pprunner.hookimpl(wrapper=True)
    def pprunner_execute(self, job: Invocation | Call, task: Task[..., Any] | None,
                         invocation: Invocation | None,
                         context: WorkerContext) -> Generator[None, Any, Any]:
        name = _name(job)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM, "messaging.operation.type": "process",
            "messaging.operation.name": "process", "messaging.message.id": job.id,
            "messaging.client.id": context.runner_id, "pprunner.task.name": name}
        if invocation is not None:
            attributes["pprunner.attempt"] = invocation.attempts
        with self.tracer.start_as_current_span(
                f"process {name}", context=propagate.extract(job.headers),
                kind=SpanKind.CONSUMER, attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            try:
                returned = yield
            except BaseException as exc:
                kind = type_name(exc)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{kind}: {exc}"))
                span.set_attributes({"error.type": kind,
                                     "pprunner.outcome": _outcome(exc, task, invocation)})
                raise
            span.set_attribute("pprunner.outcome", "success")
            return returned

    @pprunner.hookimpl
    def pprunner_worker_exit(self) -> None:
        """Spans a batching exporter still holds go out before the process ends (a forked
        worker leaves through ``os._exit``, past the SDK's atexit flush)."""
        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush()
