"""The OpenTelemetry plugin: a producer span at enqueue (or submit), a worker span
that is its child in a real worker process, attributes and outcomes, and nothing
registered while the ``tracing`` setting is off.

The test process records its spans (the producer's) with the SDK's in-memory
exporter; workers cannot share that memory, so each writes its spans as JSON
lines to a file the test reads (``tests.apps_traced``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pprunner_plugins.otel
from pprunner import App, ConfigError, Executor, Handle, TaskFailed
from pprunner.config import resolve
from pprunner.plugins import CORE, install_extra
from pprunner_plugins.otel import TRACING
from tests import apps_traced
from tests.conftest import REPO, cli_env, on_fresh_store, run_cli


@pytest.fixture(scope="session")
def producer_exporter() -> InMemorySpanExporter:
    """The test process's tracer provider (a process has one): spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def _hex(number: int, width: int) -> str:
    return f"0x{number:0{width}x}"


@attrs.frozen
class Spans:
    """The producer's spans (in memory) and the workers' (JSON lines in a file)."""

    exporter: InMemorySpanExporter
    file: Path

    def sent(self, job_id: str) -> ReadableSpan:
        (span,) = [s for s in self.exporter.get_finished_spans()
                   if s.name.startswith("send ") and s.attributes is not None
                   and s.attributes["messaging.message.id"] == job_id]
        return span

    def processed(self, job_id: str) -> list[dict[str, Any]]:
        """The workers' spans for one job, in the order they ended."""
        lines = self.file.read_text().splitlines()
        return [span for span in map(json.loads, lines)
                if span["attributes"]["messaging.message.id"] == job_id]

    def assert_child(self, worker_span: dict[str, Any], parent: ReadableSpan) -> None:
        assert parent.context is not None
        assert worker_span["context"]["trace_id"] == _hex(parent.context.trace_id, 32)
        assert worker_span["parent_id"] == _hex(parent.context.span_id, 16)


@pytest.fixture
def spans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          producer_exporter: InMemorySpanExporter) -> Spans:
    file = tmp_path / "worker-spans.jsonl"
    file.touch()
    monkeypatch.setenv(apps_traced.SPAN_FILE, str(file))  # workers inherit it
    producer_exporter.clear()
    return Spans(producer_exporter, file)


@pytest.fixture
def app(db_url: str, spans: Spans) -> Iterator[App]:
    """The traced app on a fresh store: conftest's ``supervise`` runs it."""
    with on_fresh_store(apps_traced.app, db_url) as app:
        yield app


@pytest.fixture
def supervise_traced(supervise: Any) -> Any:
    """One worker that exports its spans (``tests.apps_traced`` as its plugin)."""
    return lambda: supervise(processes=1, plugins=[apps_traced])


def _traceparent(span: ReadableSpan) -> str:
    assert span.context is not None
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


@pytest.mark.slow
def test_the_worker_span_is_a_child_of_the_producer_span(
        supervise_traced: Any, spans: Spans, app: App) -> None:
    supervisor = supervise_traced()
    handle = apps_traced.ok.enqueue(42)
    assert handle.result(timeout=30) == 42
    sent = spans.sent(handle.id)
    assert sent.kind is trace.SpanKind.PRODUCER and sent.name == "send tests.apps_traced.ok"
    assert dict(sent.attributes or {}) == {
        "messaging.system": "pprunner", "messaging.operation.type": "send",
        "messaging.operation.name": "send", "messaging.message.id": handle.id,
        "pprunner.task.name": "tests.apps_traced.ok"}
    assert handle.invocation().headers == {"traceparent": _traceparent(sent)}

    (processed,) = spans.processed(handle.id)
    spans.assert_child(processed, sent)
    assert processed["name"] == "process tests.apps_traced.ok"
    assert processed["kind"] == "SpanKind.CONSUMER"
    assert processed["status"]["status_code"] == "UNSET" and processed["events"] == []
    (worker,) = [runner.id for runner in supervisor.live_runners()[1:]]
    assert processed["attributes"] == {
        "messaging.system": "pprunner", "messaging.operation.type": "process",
        "messaging.operation.name": "process", "messaging.message.id": handle.id,
        "messaging.client.id": worker, "pprunner.task.name": "tests.apps_traced.ok",
        "pprunner.attempt": 1, "pprunner.outcome": "success"}


@pytest.mark.slow
def test_a_failure_records_the_exception_and_an_error_status(
        supervise_traced: Any, spans: Spans) -> None:
    supervise_traced()
    handle = apps_traced.boom.enqueue("no luck")
    with pytest.raises(TaskFailed):
        handle.result(timeout=30)
    (processed,) = spans.processed(handle.id)
    spans.assert_child(processed, spans.sent(handle.id))
    assert processed["status"] == {"status_code": "ERROR",
                                   "description": "ValueError: no luck"}
    assert processed["attributes"]["pprunner.outcome"] == "failure"
    assert processed["attributes"]["error.type"] == "ValueError"
    (event,) = processed["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "no luck"
    assert "in boom" in event["attributes"]["exception.stacktrace"]


@pytest.mark.slow
def test_each_attempt_is_a_span_with_its_number_under_the_same_producer(
        supervise_traced: Any, spans: Spans) -> None:
    supervise_traced()
    handle = apps_traced.retried_once.enqueue()
    assert handle.result(timeout=30) == 2
    first, second = spans.processed(handle.id)
    for span in (first, second):
        spans.assert_child(span, spans.sent(handle.id))
    assert [first["attributes"]["pprunner.attempt"], second["attributes"]["pprunner.attempt"]] \
        == [1, 2]
    assert first["attributes"]["pprunner.outcome"] == "retry"
    assert first["attributes"]["error.type"] == "pprunner.errors.Retry"
    assert second["attributes"]["pprunner.outcome"] == "success"


@pytest.mark.slow
def test_the_headers_survive_a_sigkilled_workers_reroute(
        supervise_traced: Any, spans: Spans) -> None:
    supervise_traced()
    handle = apps_traced.killed_on_first_attempt.enqueue()
    assert handle.result(timeout=60) == 2
    sent = spans.sent(handle.id)
    invocation = handle.invocation()
    assert invocation.history[0].type == "WorkerDied"  # it was rerouted
    assert invocation.headers == {"traceparent": _traceparent(sent)}
    (processed,) = spans.processed(handle.id)  # the killed attempt's span never ended
    spans.assert_child(processed, sent)
    assert processed["attributes"]["pprunner.attempt"] == 2


@pytest.mark.slow
def test_a_task_that_enqueues_continues_its_own_trace(
        supervise_traced: Any, spans: Spans, app: App) -> None:
    supervise_traced()
    parent = apps_traced.enqueues_a_child.enqueue()
    child = Handle(app, parent.result(timeout=30))
    assert child.result(timeout=30) == "child"
    (parent_span,) = spans.processed(parent.id)
    child_sent, child_span = [span for span in map(json.loads, spans.file.read_text()
                                                   .splitlines())
                              if span["attributes"]["messaging.message.id"] == child.id]
    assert child_sent["name"] == "send tests.apps_traced.ok"  # by the parent's worker
    assert child_sent["parent_id"] == parent_span["context"]["span_id"]
    assert child_span["parent_id"] == child_sent["context"]["span_id"]
    assert {parent_span["context"]["trace_id"], child_span["context"]["trace_id"]} == \
        {_hex(spans.sent(parent.id).context.trace_id, 32)}  # type: ignore[union-attr]


@pytest.mark.slow
def test_push_mode_carries_the_submitters_context_into_the_worker(
        spans: Spans) -> None:
    with Executor(max_workers=1, tracing=True, initializer=apps_traced.export_spans_to,
                  initargs=(str(spans.file),)) as executor:
        future = executor.submit(apps_traced.headers_of_this_call)
        headers = future.result(timeout=60)
    (sent,) = [span for span in spans.exporter.get_finished_spans()
               if span.name == "send headers_of_this_call"]  # the Executor's name for it
    assert headers == {"traceparent": _traceparent(sent)}
    assert sent.attributes is not None
    (processed,) = spans.processed(str(sent.attributes["messaging.message.id"]))
    spans.assert_child(processed, sent)
    assert processed["attributes"]["pprunner.outcome"] == "success"
    assert "pprunner.attempt" not in processed["attributes"]


def _impl_owners(app: App, hook: str) -> list[str]:
    return [impl.plugin_name for impl in
            getattr(app.plugins.manager.hook, hook).get_hookimpls()]


def test_tracing_off_registers_no_per_job_hook() -> None:
    """The entry point's module is a switch: pprunner_configure is all it implements."""
    app = App(backend="memory://")
    manager = app.plugins.manager
    switch = manager.get_plugin("otel")
    assert switch is pprunner_plugins.otel
    assert [caller.name for caller in manager.get_hookcallers(switch) or ()] == \
        ["pprunner_configure"]
    assert manager.get_plugin(TRACING) is None
    for hook in ("pprunner_enqueue", "pprunner_execute", "pprunner_worker_exit"):
        assert set(_impl_owners(app, hook)) <= {CORE}, hook


def test_the_setting_registers_and_unregisters_the_tracing_hooks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPRUNNER_TRACING", "yes")
    app = App(backend="memory://")
    assert TRACING in _impl_owners(app, "pprunner_enqueue")
    assert TRACING in _impl_owners(app, "pprunner_execute")
    app.configure(source="the test", tracing=False)  # the command line's layer wins
    assert TRACING not in _impl_owners(app, "pprunner_enqueue")
    assert app.plugins.manager.get_plugin(TRACING) is None


@pytest.mark.slow
@pytest.mark.parametrize("tracing", [False, True])
def test_each_worker_registers_the_tracing_hooks_only_when_tracing_is_on(
        supervise_traced: Any, app: App, tracing: bool) -> None:
    app.configure(source="the test", tracing=tracing)
    supervise_traced()
    names = apps_traced.registered_plugins.enqueue().result(timeout=30)
    assert "otel" in names
    assert (TRACING in names) is tracing


@pytest.mark.parametrize("value, expected", [("1", True), ("on", True), ("no", False),
                                             ("0", False), (True, True)])
def test_the_tracing_setting_reads_switch_words(value: Any, expected: bool) -> None:
    assert resolve([("environment", {"tracing": value})]).tracing is expected


def test_a_tracing_setting_that_is_no_switch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"setting 'tracing' from environment "
                                          r"PPRUNNER_TRACING: expected true or false"):
        resolve([("environment", {"tracing": "sometimes"})])


def test_tracing_without_opentelemetry_is_one_line_naming_the_extra(
        tmp_path: Path, db_url: str) -> None:
    hidden = tmp_path / "hidden" / "opentelemetry"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ImportError('hidden by the test', name='opentelemetry')\n")
    env = cli_env(db_url, PPRUNNER_TRACING="1", PYTHONPATH=f"{hidden.parent}:{REPO}")
    done = run_cli("enqueue", "--app", "tests.apps:app", "tests.apps.add", "--args", "[1, 2]",
                   env=env)
    assert done.returncode == 3, done
    assert done.stderr.strip().splitlines() == [
        "pprunner: error: setting 'tracing' is on, but opentelemetry cannot be imported; "
        f"install the extra: {install_extra('otel')}"]
