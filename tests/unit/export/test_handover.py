"""ForkSafeExport: take_over in the master, start_in_worker, shutdown_within, the attribute limit.

Everything runs on local SDK providers handed to handover.py through monkeypatched getters
(conftest.py); the global providers are never set. Every provider is shut down at the end of
its test.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

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
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gunicorn_django_wide_events._export import handover as export
from gunicorn_django_wide_events._export.exporters import WireGrpcSpanExporter, WireHttpSpanExporter
from gunicorn_django_wide_events._export.handover import (
    DEFAULT_SPAN_ATTRIBUTE_COUNT_LIMIT,
    ForkSafeExport,
    raise_span_attribute_limit,
)
from gunicorn_django_wide_events._export.log_routing import HANDOVER_LOGGERS, logging_silenced
from gunicorn_django_wide_events._export.processor import WorkerSpanProcessor
from gunicorn_django_wide_events._guard import LOGGER_NAME
from tests.unit.export.fakes import (
    SHUTDOWN_THREAD_NAME,
    WAIT_S,
    BlockingSpanExporter,
    RecordingLogExporter,
    RecordingMetricExporter,
    RecordingSpanExporter,
    Sdk,
    TimeoutSpanExporter,
    calls,
    log_processors_of,
    names,
    new_otel_threads,
    span_processors_of,
)

pytestmark = pytest.mark.usefixtures("clean_state")


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


# --- metrics: what the master and each worker rebuild --------------------------------------


def test_take_over_remembers_each_metric_exporter_and_its_reader_settings(
    make_sdk: Callable[..., Sdk], fork_safe: ForkSafeExport
) -> None:
    """The exporter's class, temporality and aggregation, and the reader's interval and timeout:
    what the master's own metrics are collected and exported with."""
    sdk = make_sdk()
    (reader,) = sdk.metric_readers
    exporter = RecordingMetricExporter.instances[0]
    fork_safe.take_over({})
    (export,) = fork_safe.metric_exports
    assert export.exporter_type is RecordingMetricExporter
    assert export.preferred_temporality == dict(exporter._preferred_temporality or {})
    assert export.preferred_aggregation == dict(exporter._preferred_aggregation or {})
    assert export.interval_s == reader._export_interval_millis / 1e3 == 60.0
    assert export.timeout_s == reader._export_timeout_millis / 1e3


def test_metrics_are_exported_where_a_reader_was_handed_over(
    make_sdk: Callable[..., Sdk], fork_safe: ForkSafeExport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A metric exporter handed over: exported; no SDK meter provider, or none with readers
    (OTEL_METRICS_EXPORTER=none): not."""
    make_sdk()
    fork_safe.take_over({})
    assert fork_safe.metrics_exported() is True
    monkeypatch.setattr(export.metrics, "get_meter_provider", NoOpMeterProvider)
    assert fork_safe.metrics_exported() is False
    without_readers = MeterProvider(shutdown_on_exit=False)
    monkeypatch.setattr(export.metrics, "get_meter_provider", lambda: without_readers)
    assert ForkSafeExport().metrics_exported() is False


def test_flush_before_exit_sends_the_metric_points_and_spans(
    make_sdk: Callable[..., Sdk], fork_safe: ForkSafeExport
) -> None:
    sdk = make_sdk()
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    sdk.meter_provider.get_meter(__name__).create_counter("requests").add(1)
    sdk.end_span("last")
    assert fork_safe.flush_before_exit(WAIT_S) is True
    _, worker_metric_exporter = RecordingMetricExporter.instances
    assert worker_metric_exporter.exported
    _, worker_span_exporter = RecordingSpanExporter.instances
    assert names(worker_span_exporter.get_finished_spans()) == ["last"]


def test_flush_before_exit_waits_no_longer_than_told(
    make_sdk: Callable[..., Sdk], fork_safe: ForkSafeExport
) -> None:
    """A span export stuck on the collector does not hold a timed-out worker's exit."""
    sdk = make_sdk(BlockingSpanExporter())
    fork_safe.take_over({})
    fork_safe.start_in_worker()
    sdk.end_span("stuck")
    started = time.monotonic()
    assert fork_safe.flush_before_exit(0.3) is False
    assert time.monotonic() - started < WAIT_S / 2
    for exporter in BlockingSpanExporter.instances:
        exporter.shutdown()
