"""ForkSafeExport and WorkerSpanProcessor, and the SDK internals export.py relies on.

Everything runs on local SDK providers handed to export.py through monkeypatched getters; the
global providers are never set. Every provider is shut down at the end of its test.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry._logs import LogRecord, NoOpLoggerProvider
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcOTLPSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpOTLPSpanExporter,
)
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

from gunicorn_django_wide_events._export import handover as export
from gunicorn_django_wide_events._export.exporters import WireGrpcSpanExporter, WireHttpSpanExporter
from gunicorn_django_wide_events._export.handover import (
    DEFAULT_SPAN_ATTRIBUTE_COUNT_LIMIT,
    ForkSafeExport,
    raise_span_attribute_limit,
)
from gunicorn_django_wide_events._export.log_routing import HANDOVER_LOGGERS, logging_silenced
from gunicorn_django_wide_events._export.processor import WorkerSpanProcessor, build_exporter
from gunicorn_django_wide_events._guard import LOGGER_NAME, forget_reports

# Names the SDK gives its export threads (BatchProcessor, PeriodicExportingMetricReader).
OTEL_THREAD_PREFIX = "Otel"
# The thread ForkSafeExport.shutdown_within runs the shutdown in.
SHUTDOWN_THREAD_NAME = "wide-events-shutdown"
WAIT_S = 30.0

# Shutdowns of the Ordered* exporters, processors and readers below, in the order they happened.
calls: list[str] = []


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


class TimeoutSpanExporter(RecordingSpanExporter):
    """A recording span exporter whose constructor takes a timeout, like the OTLP ones."""

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__()
        self.timeout = timeout
        self.export_threads: list[int] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.export_threads.append(threading.get_ident())
        return super().export(spans)


class OrderedSpanExporter(RecordingSpanExporter):
    """A recording span exporter that logs its shutdowns to ``calls``."""

    def shutdown(self) -> None:
        calls.append("span exporter shutdown")
        super().shutdown()


class OrderedBatchSpanProcessor(BatchSpanProcessor):
    """A batch span processor that logs its shutdown to ``calls``."""

    def shutdown(self) -> None:
        calls.append("span processor shutdown")
        super().shutdown()


class OrderedMetricExporter(RecordingMetricExporter):
    """A recording metric exporter that logs its shutdowns to ``calls``."""

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        calls.append("metric exporter shutdown")
        super().shutdown(timeout_millis, **kwargs)


class OrderedMetricReader(PeriodicExportingMetricReader):
    """A periodic metric reader that logs its shutdown to ``calls``."""

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        calls.append("metric reader shutdown")
        super().shutdown(timeout_millis, **kwargs)


class OrderedLogExporter(RecordingLogExporter):
    """A recording log exporter that logs its shutdowns to ``calls``."""

    def shutdown(self) -> None:
        calls.append("log exporter shutdown")
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
    calls.clear()
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
        ordered: bool = False,
    ) -> Sdk:
        """``ordered`` builds the Ordered* parts, which log their shutdowns to ``calls``."""
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        kept = KeptProcessor()
        exporter = span_exporter
        if exporter is None:
            exporter = OrderedSpanExporter() if ordered else RecordingSpanExporter()
        span_processor: SpanProcessor
        if simple:
            span_processor = SimpleSpanProcessor(exporter)
        elif ordered:
            span_processor = OrderedBatchSpanProcessor(exporter)
        else:
            span_processor = BatchSpanProcessor(exporter)
        tracer_provider.add_span_processor(span_processor)
        tracer_provider.add_span_processor(kept)
        reader_type = OrderedMetricReader if ordered else PeriodicExportingMetricReader
        metric_exporter = OrderedMetricExporter() if ordered else RecordingMetricExporter()
        reader = reader_type(metric_exporter, export_interval_millis=60_000)
        meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        logger_provider = LoggerProvider(shutdown_on_exit=False)
        log_exporter = OrderedLogExporter() if ordered else RecordingLogExporter()
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


@pytest.fixture
def fork_safe(make_sdk: Callable[..., Sdk]) -> Iterator[ForkSafeExport]:
    """A ForkSafeExport whose worker parts are stopped after the test, before the providers.

    MeterProvider.shutdown() does not reach the metric readers start_in_worker adds, so their
    threads would outlive the test. A test may have shut down already: the SDK's warnings about
    a second shutdown are muted.
    """
    fork_safe = ForkSafeExport()
    yield fork_safe
    with logging_silenced():
        assert fork_safe.shutdown_within(WAIT_S) is True


def names(spans: Sequence[ReadableSpan]) -> list[str]:
    return [span.name for span in spans]


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


def test_sdk_metric_reader_registration(threads_before: set[threading.Thread]) -> None:
    """add_metric_reader leaves _metric_readers alone; remove_metric_reader stops the reader."""
    provider = MeterProvider(shutdown_on_exit=False)
    try:
        reader = PeriodicExportingMetricReader(
            RecordingMetricExporter(), export_interval_millis=60_000
        )
        provider.add_metric_reader(reader)
        assert list(provider._metric_readers) == []
        assert new_otel_threads(threads_before) == ["OtelPeriodicExportingMetricReader"]
        provider.remove_metric_reader(reader)
        assert new_otel_threads(threads_before) == []
        assert RecordingMetricExporter.instances[0].shut_down
    finally:
        provider.shutdown()


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


@pytest.mark.parametrize(
    ("stock", "wire_encoder", "in_workers"),
    [
        (GrpcOTLPSpanExporter, True, WireGrpcSpanExporter),
        (HttpOTLPSpanExporter, True, WireHttpSpanExporter),
        (GrpcOTLPSpanExporter, False, GrpcOTLPSpanExporter),
        (HttpOTLPSpanExporter, False, HttpOTLPSpanExporter),
    ],
)
def test_take_over_swaps_stock_otlp_exporters_for_the_wire_encoder_ones(
    make_sdk: Callable[..., Sdk],
    stock: type[SpanExporter],
    wire_encoder: bool,
    in_workers: type[SpanExporter],
) -> None:
    """Workers build the otlp_wire twin of a stock OTLP exporter, unless turned off."""
    make_sdk(stock(endpoint="http://127.0.0.1:9"))  # type: ignore[call-arg]
    fork_safe = ForkSafeExport(wire_encoder=wire_encoder)
    fork_safe.take_over({})
    assert fork_safe.span_processor is not None
    assert list(fork_safe.span_processor.exporter_types) == [in_workers]


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


def test_take_over_shuts_span_exporter_down_before_its_processor(
    make_sdk: Callable[..., Sdk],
) -> None:
    """The handed-over span exporter is shut down first, so the queued span is not exported."""
    sdk = make_sdk(ordered=True)
    sdk.end_span("queued-in-master")
    ForkSafeExport().take_over({})
    span_calls = [call for call in calls if call.startswith("span")]
    assert span_calls[:2] == ["span exporter shutdown", "span processor shutdown"]
    (exporter,) = RecordingSpanExporter.instances
    assert exporter.get_finished_spans() == ()


def test_take_over_hands_logs_over_first_and_metric_exporters_before_readers(
    make_sdk: Callable[..., Sdk],
) -> None:
    """Logs are handed over before traces and metrics; a metric exporter stops before its reader."""
    make_sdk(ordered=True)
    ForkSafeExport().take_over({})
    assert calls[0] == "log exporter shutdown"
    assert "log exporter shutdown" not in calls[1:]
    metric_calls = [call for call in calls if call.startswith("metric")]
    assert metric_calls[:2] == ["metric exporter shutdown", "metric reader shutdown"]


def test_take_over_is_not_held_up_by_a_stuck_export(make_sdk: Callable[..., Sdk]) -> None:
    """An export stuck on the collector is aborted by shutting its exporter down first."""
    sdk = make_sdk(BlockingSpanExporter())
    (exporter,) = BlockingSpanExporter.instances
    sdk.end_span("stuck")
    flusher = threading.Thread(
        target=sdk.tracer_provider.force_flush, name="test-flusher", daemon=True
    )
    flusher.start()
    assert exporter.entered.wait(WAIT_S)
    started = time.monotonic()
    ForkSafeExport().take_over({})
    assert time.monotonic() - started < WAIT_S / 2
    assert exporter.shutdown_called.is_set()
    flusher.join(WAIT_S)
    assert not flusher.is_alive()


def test_take_over_mutes_the_sdk_and_unmutes_it_after(
    make_sdk: Callable[..., Sdk], caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's warnings caused by the hand-over are not logged; its loggers' filters return."""
    caplog.set_level(logging.DEBUG)
    filters = {name: list(logging.getLogger(name).filters) for name in HANDOVER_LOGGERS}
    sdk = make_sdk()
    sdk.end_span("queued-in-master")
    ForkSafeExport().take_over({})
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []
    assert {name: list(logging.getLogger(name).filters) for name in HANDOVER_LOGGERS} == filters


def test_logging_silenced_drops_records_of_the_sdk_loggers_only_inside(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """logging_silenced drops what the hand-over loggers log inside the block, not after."""
    caplog.set_level(logging.WARNING)
    sdk_logger = logging.getLogger("opentelemetry.sdk.metrics._internal")
    with logging_silenced():
        sdk_logger.warning("inside")
    sdk_logger.warning("after")
    assert [record.getMessage() for record in caplog.records] == ["after"]


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
    assert fork_safe.shutdown_within(WAIT_S) is True
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "no OpenTelemetry SDK tracer provider" in messages[0]


# --- start_in_worker -----------------------------------------------------------------------


def test_start_in_worker_exports_spans_to_a_new_exporter(
    make_sdk: Callable[..., Sdk], fork_safe: ForkSafeExport
) -> None:
    """start_in_worker builds a new exporter; spans ended afterwards reach it."""
    sdk = make_sdk()
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


@pytest.mark.parametrize(
    ("environ", "batch_size"), [({}, 128), ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "300"}, 300)]
)
def test_worker_batches_are_smaller_than_the_sdks_unless_set(
    make_sdk: Callable[..., Sdk],
    fork_safe: ForkSafeExport,
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    batch_size: int,
) -> None:
    """Batches of 128 wide events by default; OTEL_BSP_MAX_EXPORT_BATCH_SIZE still wins."""
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    make_sdk()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    assert fork_safe.span_processor is not None
    (processor,) = fork_safe.span_processor._processors
    assert processor._batch_processor._max_export_batch_size == batch_size


def test_start_in_worker_adds_a_fresh_metric_reader(
    make_sdk: Callable[..., Sdk], fork_safe: ForkSafeExport
) -> None:
    """start_in_worker registers a new periodic reader whose new exporter receives metrics."""
    sdk = make_sdk()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    assert len(RecordingMetricExporter.instances) == 2
    old, new = RecordingMetricExporter.instances
    # Registered with add_metric_reader only: the provider's list stays as take_over left it.
    assert list(sdk.meter_provider._metric_readers) == []
    (reader,) = fork_safe._worker_metric_readers
    assert isinstance(reader, PeriodicExportingMetricReader)
    assert reader is not sdk.metric_readers[0]
    assert reader._exporter is new
    sdk.meter_provider.get_meter(__name__).create_counter("requests").add(1)
    assert reader.force_flush()
    assert new.exported
    assert old.exported == []


def test_start_in_worker_adds_a_fresh_log_processor(
    make_sdk: Callable[..., Sdk], fork_safe: ForkSafeExport
) -> None:
    """start_in_worker adds a batch log processor whose new exporter receives log records."""
    sdk = make_sdk()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    assert len(RecordingLogExporter.instances) == 2
    old, new = RecordingLogExporter.instances
    (processor,) = log_processors_of(sdk.logger_provider)
    assert isinstance(processor, BatchLogRecordProcessor)
    assert fork_safe._worker_log_processors == [processor]
    assert processor._batch_processor._exporter is new
    sdk.logger_provider.get_logger(__name__).emit(LogRecord(body="hello"))
    assert sdk.logger_provider.force_flush()
    logs: tuple[ReadableLogRecord, ...] = new.get_finished_logs()
    assert [log.log_record.body for log in logs] == ["hello"]
    assert old.get_finished_logs() == ()


def test_start_in_worker_restarts_export_threads(
    make_sdk: Callable[..., Sdk],
    fork_safe: ForkSafeExport,
    threads_before: set[threading.Thread],
) -> None:
    """After start_in_worker each signal has its own export thread again."""
    make_sdk()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    assert sorted(new_otel_threads(threads_before)) == [
        "OtelBatchLogRecordProcessor",
        "OtelBatchSpanRecordProcessor",
        "OtelPeriodicExportingMetricReader",
    ]


def test_start_in_worker_builds_urgent_exporters_with_the_timeout(
    make_sdk: Callable[..., Sdk], fork_safe: ForkSafeExport
) -> None:
    """start_in_worker(urgent_timeout_s) gives the span processor urgent exporters with it."""
    make_sdk(TimeoutSpanExporter())
    fork_safe.take_over({})
    fork_safe.start_in_worker(urgent_timeout_s=0.25)
    _master, batch, urgent = RecordingSpanExporter.instances
    assert isinstance(batch, TimeoutSpanExporter)
    assert isinstance(urgent, TimeoutSpanExporter)
    assert batch.timeout is None
    assert urgent.timeout == 0.25
    assert fork_safe.span_processor is not None
    assert fork_safe.span_processor.exporters == (batch, urgent)


# --- ForkSafeExport.shutdown_within --------------------------------------------------------


def test_shutdown_within_before_take_over_returns_true() -> None:
    """With nothing taken over or started, shutdown_within has nothing to wait for."""
    assert ForkSafeExport().shutdown_within(WAIT_S) is True


def test_shutdown_within_exports_and_stops_every_worker_part(
    make_sdk: Callable[..., Sdk],
    fork_safe: ForkSafeExport,
    threads_before: set[threading.Thread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With fast exporters it exports spans and logs, stops every worker part and returns True."""
    sdk = make_sdk()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    removed: list[Any] = []
    remove_metric_reader = sdk.meter_provider.remove_metric_reader

    def recording_remove(reader: Any) -> None:
        removed.append(reader)
        remove_metric_reader(reader)

    monkeypatch.setattr(sdk.meter_provider, "remove_metric_reader", recording_remove)
    for index in range(3):
        sdk.end_span(f"span-{index}")
    sdk.logger_provider.get_logger(__name__).emit(LogRecord(body="bye"))

    started = time.monotonic()
    assert fork_safe.shutdown_within(WAIT_S) is True
    assert time.monotonic() - started < WAIT_S / 2

    _, span_exporter = RecordingSpanExporter.instances
    assert sorted(names(span_exporter.get_finished_spans())) == ["span-0", "span-1", "span-2"]
    assert span_exporter.shut_down
    _, log_exporter = RecordingLogExporter.instances
    assert [log.log_record.body for log in log_exporter.get_finished_logs()] == ["bye"]
    assert log_exporter.shut_down
    _, metric_exporter = RecordingMetricExporter.instances
    assert metric_exporter.shut_down
    assert removed == fork_safe._worker_metric_readers
    assert len(removed) == 1
    assert new_otel_threads(threads_before) == []


def test_shutdown_within_exports_the_last_metrics(
    make_sdk: Callable[..., Sdk], fork_safe: ForkSafeExport
) -> None:
    """Metrics recorded since the last periodic export are exported when the worker stops."""
    sdk = make_sdk()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    sdk.meter_provider.get_meter(__name__).create_counter("requests").add(1)
    assert fork_safe.shutdown_within(WAIT_S) is True
    _, metric_exporter = RecordingMetricExporter.instances
    assert metric_exporter.exported


def test_shutdown_within_gives_up_on_blocked_exporter(
    make_sdk: Callable[..., Sdk], caplog: pytest.LogCaptureFixture
) -> None:
    """A stuck export makes shutdown_within return False after ~timeout and shut exporters."""
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    sdk = make_sdk(BlockingSpanExporter())
    fork_safe = ForkSafeExport()
    fork_safe.take_over({})
    fork_safe.start_in_worker(urgent_timeout_s=0.25)
    # BlockingSpanExporter takes no timeout: its urgent instance is built without one.
    _master, batch, urgent = BlockingSpanExporter.instances
    assert fork_safe.span_processor is not None
    sdk.end_span("stuck")
    flusher = threading.Thread(
        target=fork_safe.span_processor.force_flush, name="test-flusher", daemon=True
    )
    flusher.start()
    assert batch.entered.wait(WAIT_S)

    timeout_s = 0.5
    started = time.monotonic()
    assert fork_safe.shutdown_within(timeout_s) is False
    elapsed = time.monotonic() - started

    assert elapsed >= timeout_s * 0.9
    assert elapsed < timeout_s + WAIT_S / 2
    assert batch.shutdown_called.is_set()
    assert urgent.shutdown_called.is_set()
    assert RecordingMetricExporter.instances[1].shut_down
    assert RecordingLogExporter.instances[1].shut_down
    flusher.join(WAIT_S)
    assert not flusher.is_alive()
    # Unblocked, the helper thread finishes the shutdown, metric reader included.
    for thread in threading.enumerate():
        if thread.name == SHUTDOWN_THREAD_NAME:
            thread.join(WAIT_S)
            assert not thread.is_alive()
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert len(messages) == 1
    assert "telemetry not exported within 0.5s" in messages[0]


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
