"""ForkSafeExport and WorkerSpanProcessor, and the SDK internals export.py relies on.

Everything runs on local SDK providers handed to export.py through monkeypatched getters; the
global providers are never set. Every provider is shut down at the end of its test.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry._logs import LogRecord, NoOpLoggerProvider
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gunicorn_django_wide_events import export
from gunicorn_django_wide_events.export import (
    DEFAULT_SPAN_ATTRIBUTE_COUNT_LIMIT,
    ForkSafeExport,
    WorkerSpanProcessor,
    raise_span_attribute_limit,
)
from gunicorn_django_wide_events.guard import forget_reports

# Names the SDK gives its export threads (BatchProcessor, PeriodicExportingMetricReader).
OTEL_THREAD_PREFIX = "Otel"
WAIT_S = 30.0


class RecordingSpanExporter(InMemorySpanExporter):
    """An in-memory span exporter that remembers every instance built."""

    instances: ClassVar[list[RecordingSpanExporter]] = []

    def __init__(self) -> None:
        super().__init__()
        self.shut_down = False
        RecordingSpanExporter.instances.append(self)

    def shutdown(self) -> None:
        self.shut_down = True
        super().shutdown()


class RecordingMetricExporter(MetricExporter):
    """A metric exporter keeping what it receives, remembering every instance built."""

    instances: ClassVar[list[RecordingMetricExporter]] = []

    def __init__(self) -> None:
        super().__init__()
        self.exported: list[MetricsData] = []
        self.shut_down = False
        RecordingMetricExporter.instances.append(self)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shut_down = True


class RecordingLogExporter(InMemoryLogRecordExporter):
    """An in-memory log exporter that remembers every instance built."""

    instances: ClassVar[list[RecordingLogExporter]] = []

    def __init__(self) -> None:
        super().__init__()
        self.shut_down = False
        RecordingLogExporter.instances.append(self)

    def shutdown(self) -> None:
        self.shut_down = True
        super().shutdown()


class BlockingSpanExporter(SpanExporter):
    """A span exporter whose export blocks until shutdown() is called."""

    instances: ClassVar[list[BlockingSpanExporter]] = []

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.shutdown_called = threading.Event()
        BlockingSpanExporter.instances.append(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.released.wait(WAIT_S * 2)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shutdown_called.set()
        self.released.set()


class KeptProcessor(SpanProcessor):
    """A non-exporting processor of the user's own, which take_over must leave in place."""

    def __init__(self) -> None:
        self.ended: list[str] = []
        self.shut_down = False

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span.name)

    def shutdown(self) -> None:
        self.shut_down = True


@dataclass
class Sdk:
    """Local SDK providers, as opentelemetry-instrument would have configured them."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    kept: KeptProcessor
    span_processors: list[SpanProcessor] = field(default_factory=list)
    metric_readers: list[PeriodicExportingMetricReader] = field(default_factory=list)
    log_processors: list[Any] = field(default_factory=list)

    def end_span(self, name: str) -> None:
        self.tracer_provider.get_tracer(__name__).start_span(name).end()


def new_otel_threads(before: set[threading.Thread]) -> list[str]:
    """Names of live SDK export threads that were not running before the test."""
    return [
        thread.name
        for thread in threading.enumerate()
        if thread not in before and thread.name.startswith(OTEL_THREAD_PREFIX)
    ]


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    """Forget exporter instances and log_once reports around each test."""
    for cls in (
        RecordingSpanExporter,
        RecordingMetricExporter,
        RecordingLogExporter,
        BlockingSpanExporter,
    ):
        cls.instances.clear()
    forget_reports()
    yield
    forget_reports()


@pytest.fixture
def threads_before() -> Iterator[set[threading.Thread]]:
    """Threads alive before the test; after it, every thread it started must be gone."""
    before = set(threading.enumerate())
    yield before
    for thread in threading.enumerate():
        if thread not in before:
            thread.join(WAIT_S)
    assert [thread.name for thread in threading.enumerate() if thread not in before] == []


@pytest.fixture
def make_sdk(
    monkeypatch: pytest.MonkeyPatch, threads_before: set[threading.Thread]
) -> Iterator[Callable[..., Sdk]]:
    """Build local providers with exporting parts and make export.py see them as global."""
    built: list[Sdk] = []

    def make(
        span_exporter: SpanExporter | None = None,
        *,
        simple: bool = False,
        simple_logs: bool = False,
    ) -> Sdk:
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        kept = KeptProcessor()
        exporter = span_exporter if span_exporter is not None else RecordingSpanExporter()
        span_processor: SpanProcessor = (
            SimpleSpanProcessor(exporter) if simple else BatchSpanProcessor(exporter)
        )
        tracer_provider.add_span_processor(span_processor)
        tracer_provider.add_span_processor(kept)
        reader = PeriodicExportingMetricReader(
            RecordingMetricExporter(), export_interval_millis=60_000
        )
        meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        logger_provider = LoggerProvider(shutdown_on_exit=False)
        log_exporter = RecordingLogExporter()
        log_processor = (
            SimpleLogRecordProcessor(log_exporter)
            if simple_logs
            else BatchLogRecordProcessor(log_exporter)
        )
        logger_provider.add_log_record_processor(log_processor)
        monkeypatch.setattr(export.trace, "get_tracer_provider", lambda: tracer_provider)
        monkeypatch.setattr(export.metrics, "get_meter_provider", lambda: meter_provider)
        monkeypatch.setattr(export, "get_logger_provider", lambda: logger_provider)
        sdk = Sdk(
            tracer_provider,
            meter_provider,
            logger_provider,
            kept,
            [span_processor],
            [reader],
            [log_processor],
        )
        built.append(sdk)
        return sdk

    yield make
    for sdk in built:
        sdk.tracer_provider.shutdown()
        sdk.meter_provider.shutdown()
        sdk.logger_provider.shutdown()


def span_processors_of(provider: TracerProvider) -> tuple[SpanProcessor, ...]:
    return tuple(provider._active_span_processor._span_processors)


def log_processors_of(provider: LoggerProvider) -> tuple[Any, ...]:
    return tuple(provider._multi_log_record_processor._log_record_processors)


# --- SDK internals export.py reads ---------------------------------------------------------


def test_sdk_internals_export_relies_on(make_sdk: Callable[..., Sdk]) -> None:
    """The private SDK attributes export.py reads exist and hold what it expects."""
    sdk = make_sdk()
    (batch,) = sdk.span_processors
    assert span_processors_of(sdk.tracer_provider) == (batch, sdk.kept)
    assert isinstance(batch, BatchSpanProcessor)
    assert batch.span_exporter is RecordingSpanExporter.instances[0]
    assert isinstance(sdk.tracer_provider._span_limits, SpanLimits)
    (reader,) = sdk.metric_readers
    assert list(sdk.meter_provider._metric_readers) == [reader]
    assert reader._exporter is RecordingMetricExporter.instances[0]
    (log_processor,) = sdk.log_processors
    assert log_processors_of(sdk.logger_provider) == (log_processor,)
    assert log_processor._batch_processor._exporter is RecordingLogExporter.instances[0]


def test_sdk_export_thread_names(
    make_sdk: Callable[..., Sdk], threads_before: set[threading.Thread]
) -> None:
    """The SDK's export threads are named Otel*, which the no-thread checks below rely on."""
    make_sdk()
    assert sorted(new_otel_threads(threads_before)) == [
        "OtelBatchLogRecordProcessor",
        "OtelBatchSpanRecordProcessor",
        "OtelPeriodicExportingMetricReader",
    ]


# --- take_over -----------------------------------------------------------------------------


def test_take_over_replaces_batch_processor_and_keeps_custom(
    make_sdk: Callable[..., Sdk],
) -> None:
    """The BatchSpanProcessor becomes one WorkerSpanProcessor; the custom processor stays."""
    sdk = make_sdk(InMemorySpanExporter())
    fork_safe = ForkSafeExport()
    fork_safe.take_over({})
    processors = span_processors_of(sdk.tracer_provider)
    assert len(processors) == 2
    assert processors[0] is sdk.kept
    worker = processors[1]
    assert isinstance(worker, WorkerSpanProcessor)
    assert worker is fork_safe.span_processor
    assert list(worker.exporter_types) == [InMemorySpanExporter]


def test_take_over_hands_over_simple_processors(make_sdk: Callable[..., Sdk]) -> None:
    """A SimpleSpanProcessor's exporter is handed over and shut down like a batch one."""
    sdk = make_sdk(simple=True, simple_logs=True)
    fork_safe = ForkSafeExport()
    fork_safe.take_over({})
    processors = span_processors_of(sdk.tracer_provider)
    assert processors[0] is sdk.kept
    assert isinstance(processors[1], WorkerSpanProcessor)
    assert list(processors[1].exporter_types) == [RecordingSpanExporter]
    assert RecordingSpanExporter.instances[0].shut_down
    assert log_processors_of(sdk.logger_provider) == ()
    assert RecordingLogExporter.instances[0].shut_down


def test_take_over_stops_every_export_thread(
    make_sdk: Callable[..., Sdk], threads_before: set[threading.Thread]
) -> None:
    """After take_over no OpenTelemetry export thread is alive and old exporters are shut down."""
    make_sdk()
    assert new_otel_threads(threads_before)
    ForkSafeExport().take_over({})
    assert new_otel_threads(threads_before) == []
    assert RecordingSpanExporter.instances[0].shut_down
    assert RecordingMetricExporter.instances[0].shut_down
    assert RecordingLogExporter.instances[0].shut_down


def test_take_over_removes_metric_readers_and_log_processors(
    make_sdk: Callable[..., Sdk],
) -> None:
    """The periodic metric reader and the batch log processor are taken out of the providers."""
    sdk = make_sdk()
    ForkSafeExport().take_over({})
    assert list(sdk.meter_provider._metric_readers) == []
    assert log_processors_of(sdk.logger_provider) == ()


def test_take_over_twice_is_a_no_op(make_sdk: Callable[..., Sdk]) -> None:
    """A second take_over (gunicorn HUP) does not wrap the worker processor again."""
    sdk = make_sdk()
    fork_safe = ForkSafeExport()
    fork_safe.take_over({})
    first = span_processors_of(sdk.tracer_provider)
    fork_safe.take_over({})
    assert span_processors_of(sdk.tracer_provider) == first


def test_spans_are_dropped_until_start_in_worker(make_sdk: Callable[..., Sdk]) -> None:
    """Between take_over and start_in_worker spans reach only the kept processor."""
    sdk = make_sdk()
    fork_safe = ForkSafeExport()
    fork_safe.take_over({})
    sdk.end_span("in-master")
    assert sdk.tracer_provider.force_flush()
    assert sdk.kept.ended == ["in-master"]
    assert RecordingSpanExporter.instances[0].get_finished_spans() == ()
    assert len(RecordingSpanExporter.instances) == 1


def test_take_over_without_sdk_providers_logs_and_start_is_harmless(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without SDK providers take_over logs once and start_in_worker does nothing."""
    caplog.set_level(logging.WARNING, logger="gunicorn_django_wide_events")
    monkeypatch.setattr(export.trace, "get_tracer_provider", trace.NoOpTracerProvider)
    monkeypatch.setattr(export.metrics, "get_meter_provider", NoOpMeterProvider)
    monkeypatch.setattr(export, "get_logger_provider", NoOpLoggerProvider)
    fork_safe = ForkSafeExport()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    assert fork_safe.span_processor is None
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "no OpenTelemetry SDK tracer provider" in messages[0]


# --- start_in_worker -----------------------------------------------------------------------


def test_start_in_worker_exports_spans_to_a_new_exporter(make_sdk: Callable[..., Sdk]) -> None:
    """start_in_worker builds a new exporter; spans ended afterwards reach it."""
    sdk = make_sdk()
    fork_safe = ForkSafeExport()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    assert len(RecordingSpanExporter.instances) == 2
    old, new = RecordingSpanExporter.instances
    assert not new.shut_down
    sdk.end_span("in-worker")
    assert sdk.tracer_provider.force_flush()
    assert [span.name for span in new.get_finished_spans()] == ["in-worker"]
    assert old.get_finished_spans() == ()
    assert sdk.kept.ended == ["in-worker"]


def test_start_in_worker_adds_a_fresh_metric_reader(make_sdk: Callable[..., Sdk]) -> None:
    """start_in_worker registers a new periodic reader whose new exporter receives metrics."""
    sdk = make_sdk()
    fork_safe = ForkSafeExport()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    assert len(RecordingMetricExporter.instances) == 2
    old, new = RecordingMetricExporter.instances
    (reader,) = sdk.meter_provider._metric_readers
    assert isinstance(reader, PeriodicExportingMetricReader)
    assert reader is not sdk.metric_readers[0]
    assert reader._exporter is new
    sdk.meter_provider.get_meter(__name__).create_counter("requests").add(1)
    assert sdk.meter_provider.force_flush()
    assert new.exported
    assert old.exported == []


def test_start_in_worker_adds_a_fresh_log_processor(make_sdk: Callable[..., Sdk]) -> None:
    """start_in_worker adds a batch log processor whose new exporter receives log records."""
    sdk = make_sdk()
    fork_safe = ForkSafeExport()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    assert len(RecordingLogExporter.instances) == 2
    old, new = RecordingLogExporter.instances
    (processor,) = log_processors_of(sdk.logger_provider)
    assert isinstance(processor, BatchLogRecordProcessor)
    assert processor._batch_processor._exporter is new
    sdk.logger_provider.get_logger(__name__).emit(LogRecord(body="hello"))
    assert sdk.logger_provider.force_flush()
    logs: tuple[ReadableLogRecord, ...] = new.get_finished_logs()
    assert [log.log_record.body for log in logs] == ["hello"]
    assert old.get_finished_logs() == ()


def test_start_in_worker_restarts_export_threads(
    make_sdk: Callable[..., Sdk], threads_before: set[threading.Thread]
) -> None:
    """After start_in_worker each signal has its own export thread again."""
    make_sdk()
    fork_safe = ForkSafeExport()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    assert sorted(new_otel_threads(threads_before)) == [
        "OtelBatchLogRecordProcessor",
        "OtelBatchSpanRecordProcessor",
        "OtelPeriodicExportingMetricReader",
    ]


# --- span attribute limit ------------------------------------------------------------------


def test_raise_span_attribute_limit_sets_1024_and_keeps_the_rest() -> None:
    """Without OTEL_*ATTRIBUTE_COUNT_LIMIT the limit becomes 1024; other limits are kept."""
    provider = TracerProvider(
        shutdown_on_exit=False,
        span_limits=SpanLimits(max_events=7, max_links=5, max_span_attribute_length=99),
    )
    try:
        raise_span_attribute_limit(provider, {})
        limits = provider._span_limits
        assert limits.max_span_attributes == DEFAULT_SPAN_ATTRIBUTE_COUNT_LIMIT == 1024
        assert limits.max_events == 7
        assert limits.max_links == 5
        assert limits.max_span_attribute_length == 99
        span = provider.get_tracer(__name__).start_span("wide")
        span.set_attributes({f"field.{index}": index for index in range(1000)})
        span.end()
        assert isinstance(span, ReadableSpan)
        assert len(span.attributes or {}) == 1000
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    "variable", ["OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT"]
)
def test_raise_span_attribute_limit_respects_user_setting(variable: str) -> None:
    """With OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT or OTEL_ATTRIBUTE_COUNT_LIMIT the limits stay."""
    provider = TracerProvider(shutdown_on_exit=False)
    try:
        before = provider._span_limits
        raise_span_attribute_limit(provider, {variable: "50"})
        assert provider._span_limits is before
        assert provider._span_limits.max_span_attributes == 128
    finally:
        provider.shutdown()


def test_take_over_raises_the_attribute_limit(make_sdk: Callable[..., Sdk]) -> None:
    """take_over lifts the span attribute limit of the SDK provider."""
    sdk = make_sdk()
    ForkSafeExport().take_over({"PATH": "/bin"})
    assert sdk.tracer_provider._span_limits.max_span_attributes == 1024


def test_take_over_passes_the_environ_to_the_limit(make_sdk: Callable[..., Sdk]) -> None:
    """take_over leaves the limit alone when the environ it gets sets one."""
    sdk = make_sdk()
    ForkSafeExport().take_over({"OTEL_ATTRIBUTE_COUNT_LIMIT": "64"})
    assert sdk.tracer_provider._span_limits.max_span_attributes == 128


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
    assert processor.shutdown_within(WAIT_S) is True


def test_shutdown_within_returns_true_quickly_with_fast_exporter(
    worker_provider: Callable[[type[SpanExporter]], tuple[TracerProvider, WorkerSpanProcessor]],
) -> None:
    """With a fast exporter shutdown_within exports the queue and returns True well in time."""
    provider, processor = worker_provider(RecordingSpanExporter)
    processor.start()
    for index in range(3):
        provider.get_tracer(__name__).start_span(f"span-{index}").end()
    started = time.monotonic()
    assert processor.shutdown_within(WAIT_S) is True
    assert time.monotonic() - started < WAIT_S / 2
    (exporter,) = RecordingSpanExporter.instances
    assert sorted(span.name for span in exporter.get_finished_spans()) == [
        "span-0",
        "span-1",
        "span-2",
    ]
    assert exporter.shut_down


def test_shutdown_within_gives_up_on_blocked_exporter(
    worker_provider: Callable[[type[SpanExporter]], tuple[TracerProvider, WorkerSpanProcessor]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stuck export makes shutdown_within return False after ~timeout and shut the exporter."""
    caplog.set_level(logging.WARNING, logger="gunicorn_django_wide_events")
    provider, processor = worker_provider(BlockingSpanExporter)
    processor.start()
    (exporter,) = BlockingSpanExporter.instances
    provider.get_tracer(__name__).start_span("stuck").end()
    flusher = threading.Thread(target=processor.force_flush, name="test-flusher", daemon=True)
    flusher.start()
    assert exporter.entered.wait(WAIT_S)

    timeout_s = 0.5
    started = time.monotonic()
    assert processor.shutdown_within(timeout_s) is False
    elapsed = time.monotonic() - started

    assert elapsed >= timeout_s * 0.9
    assert elapsed < timeout_s + WAIT_S / 2
    assert exporter.shutdown_called.is_set()
    flusher.join(WAIT_S)
    assert not flusher.is_alive()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "not exported within 0.5s" in messages[0]
