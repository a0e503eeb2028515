"""WorkerSpanProcessor, a worker's span processor (batched and urgent exports), and build_exporter.

Every provider is local, never set as the global one, and shut down at the end of its test.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcOTLPSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpOTLPSpanExporter,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from gunicorn_django_wide_events._export.handover import ForkSafeExport
from gunicorn_django_wide_events._export.processor import WorkerSpanProcessor, build_exporter
from tests.unit.export.fakes import WAIT_S, RecordingSpanExporter, TimeoutSpanExporter, names

pytestmark = pytest.mark.usefixtures("clean_state")


# --- WorkerSpanProcessor -------------------------------------------------------------------


@pytest.fixture
def worker_provider(
    threads_before: set[threading.Thread],
) -> Iterator[Callable[[type[SpanExporter]], tuple[TracerProvider, WorkerSpanProcessor]]]:
    """A local TracerProvider whose only processor is a WorkerSpanProcessor."""
    providers: list[TracerProvider] = []

    def make(exporter_type: type[SpanExporter]) -> tuple[TracerProvider, WorkerSpanProcessor]:
        provider = TracerProvider(shutdown_on_exit=False)
        processor = WorkerSpanProcessor([exporter_type])
        provider.add_span_processor(processor)
        providers.append(provider)
        return provider, processor

    yield make
    for provider in providers:
        provider.shutdown()


def test_worker_processor_drops_spans_before_start(
    worker_provider: Callable[[type[SpanExporter]], tuple[TracerProvider, WorkerSpanProcessor]],
) -> None:
    """Before start() no exporter exists; spans are dropped and flushing succeeds."""
    provider, processor = worker_provider(RecordingSpanExporter)
    provider.get_tracer(__name__).start_span("dropped").end()
    assert processor.force_flush() is True
    assert RecordingSpanExporter.instances == []
    assert processor.exporters == ()
    fork_safe = ForkSafeExport()
    fork_safe.span_processor = processor
    assert fork_safe.shutdown_within(WAIT_S) is True


def test_worker_processor_shutdown_exports_the_queue(
    worker_provider: Callable[[type[SpanExporter]], tuple[TracerProvider, WorkerSpanProcessor]],
) -> None:
    """shutdown() exports what is queued, shuts the exporter down and stops the batch thread."""
    provider, processor = worker_provider(RecordingSpanExporter)
    processor.start()
    for index in range(3):
        provider.get_tracer(__name__).start_span(f"span-{index}").end()
    processor.shutdown()
    (exporter,) = RecordingSpanExporter.instances
    assert sorted(names(exporter.get_finished_spans())) == ["span-0", "span-1", "span-2"]
    assert exporter.shut_down


def test_mark_urgent_span_bypasses_the_batch(
    worker_provider: Callable[[type[SpanExporter]], tuple[TracerProvider, WorkerSpanProcessor]],
) -> None:
    """A span marked urgent is exported in on_end by an urgent exporter; others are batched."""
    provider, processor = worker_provider(TimeoutSpanExporter)
    processor.start(urgent_timeout_s=0.25)
    batch, urgent = RecordingSpanExporter.instances
    assert isinstance(batch, TimeoutSpanExporter)
    assert isinstance(urgent, TimeoutSpanExporter)
    assert (batch.timeout, urgent.timeout) == (None, 0.25)
    assert processor.exporters == (batch, urgent)
    tracer = provider.get_tracer(__name__)

    span = tracer.start_span("timeout")
    processor.mark_urgent(span.get_span_context().span_id)
    span.end()
    # Exported already, in this thread, without a flush.
    assert names(urgent.get_finished_spans()) == ["timeout"]
    assert urgent.export_threads == [threading.get_ident()]

    tracer.start_span("request").end()
    assert processor.force_flush()
    assert names(batch.get_finished_spans()) == ["request"]
    assert names(urgent.get_finished_spans()) == ["timeout"]


def test_mark_urgent_without_urgent_exporters_uses_the_batch(
    worker_provider: Callable[[type[SpanExporter]], tuple[TracerProvider, WorkerSpanProcessor]],
) -> None:
    """Started without an urgent timeout, the processor batches a marked span like any other."""
    provider, processor = worker_provider(TimeoutSpanExporter)
    processor.start()
    (batch,) = RecordingSpanExporter.instances
    assert processor.exporters == (batch,)
    span = provider.get_tracer(__name__).start_span("timeout")
    processor.mark_urgent(span.get_span_context().span_id)
    span.end()
    assert processor.force_flush()
    assert names(batch.get_finished_spans()) == ["timeout"]


# --- build_exporter ------------------------------------------------------------------------


def test_build_exporter_passes_the_timeout_when_accepted() -> None:
    """build_exporter hands timeout= to a constructor that takes it."""
    exporter = build_exporter(TimeoutSpanExporter, 0.25)
    assert isinstance(exporter, TimeoutSpanExporter)
    assert exporter.timeout == 0.25
    assert RecordingSpanExporter.instances == [exporter]


def test_build_exporter_without_a_timeout_passes_none() -> None:
    """With timeout_s None build_exporter calls the constructor without arguments."""
    exporter = build_exporter(TimeoutSpanExporter, None)
    assert isinstance(exporter, TimeoutSpanExporter)
    assert exporter.timeout is None


def test_build_exporter_falls_back_when_constructor_takes_no_timeout() -> None:
    """An exporter class without a timeout parameter is built without one."""
    exporter = build_exporter(RecordingSpanExporter, 0.25)
    assert type(exporter) is RecordingSpanExporter
    assert RecordingSpanExporter.instances == [exporter]


@pytest.mark.parametrize("exporter_type", [GrpcOTLPSpanExporter, HttpOTLPSpanExporter])
def test_otlp_span_exporters_take_a_timeout(exporter_type: type[SpanExporter]) -> None:
    """The OTLP span exporters accept timeout=, so build_exporter bounds their urgent exports."""
    assert "timeout" in inspect.signature(exporter_type).parameters
