"""Export across fork: the master hands its exporters over, each worker builds its own.

``opentelemetry-instrument`` sets the SDK up in the gunicorn master, exporters included: a gRPC
channel and an export thread per signal. Inherited by a fork, a gRPC channel can deadlock the
worker, and a thread alive at fork makes Python 3.12+ warn. So before the first fork the master
takes the exporting processors and readers out of the SDK providers and shuts them down,
remembering only the exporter classes; after fork each worker builds fresh exporters from those
classes (they read the same ``OTEL_EXPORTER_*`` variables) and its own batch processors.

The SDK offers no public way to list or remove span and log processors; the few private
attributes read here are pinned by ``tests/unit/test_export.py`` so an SDK change shows up there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from .._forking import wait_for_native_threads
from .._guard import log_once
from .exporters import wire_exporter_for

# Wide events carry far more than the SDK's default of 128 attributes, which drops the oldest.
DEFAULT_SPAN_ATTRIBUTE_COUNT_LIMIT: Final = 1024

# Wide events are large: the SDK's batch of 512 holds the GIL for milliseconds while it is
# encoded, and its buffers stay in the export thread's malloc arena for good (about 5 MiB).
DEFAULT_EXPORT_BATCH_SIZE: Final = 128
BATCH_SIZE_VARIABLE: Final = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"

# Exporters log every failed batch; a dead collector is worth one line per worker, not a stream.
EXPORTER_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
)


class FirstRecordOnly(logging.Filter):
    """Lets one record through per process, then one note saying the rest are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.seen += 1
        if self.seen == 1:
            record.msg = f"{record.msg} (further export errors of this process are not logged)"
        return self.seen == 1

    def reset(self) -> None:
        self.seen = 0


_first_record_only: Final = FirstRecordOnly()


def quiet_exporter_loggers() -> None:
    for name in EXPORTER_LOGGERS:
        exporter_logger = logging.getLogger(name)
        if _first_record_only not in exporter_logger.filters:
            exporter_logger.addFilter(_first_record_only)


def raise_span_attribute_limit(provider: TracerProvider, environ: dict[str, str]) -> None:
    """Lift the attribute-count limit unless the user set ``OTEL_*ATTRIBUTE_COUNT_LIMIT``."""
    if "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" in environ or "OTEL_ATTRIBUTE_COUNT_LIMIT" in environ:
        return
    limits = provider._span_limits
    provider._span_limits = SpanLimits(
        max_span_attributes=DEFAULT_SPAN_ATTRIBUTE_COUNT_LIMIT,
        max_events=limits.max_events,
        max_links=limits.max_links,
        max_event_attributes=limits.max_event_attributes,
        max_link_attributes=limits.max_link_attributes,
        max_attribute_length=limits.max_attribute_length,
        max_span_attribute_length=limits.max_span_attribute_length,
    )


def build_exporter(exporter_type: type[SpanExporter], timeout_s: float | None) -> SpanExporter:
    """An exporter of ``exporter_type``, bounded by ``timeout_s`` if its constructor allows."""
    if timeout_s is not None:
        try:
            return exporter_type(timeout=timeout_s)  # type: ignore[call-arg]
        except TypeError:
            pass
    return exporter_type()


class WorkerSpanProcessor(SpanProcessor):
    """Batches spans to exporters built in this process; drops them until ``start()``.

    A span marked urgent (a timeout event, whose worker may be killed any moment) skips the
    batch: ``on_end`` exports it at once, in the ending thread, through exporters of its own
    whose timeout is short enough to finish before gunicorn's SIGKILL.
    """

    def __init__(self, exporter_types: Sequence[type[SpanExporter]]) -> None:
        self.exporter_types = tuple(exporter_types)
        self._processors: tuple[BatchSpanProcessor, ...] = ()
        self._exporters: tuple[SpanExporter, ...] = ()
        self._urgent_exporters: tuple[SpanExporter, ...] = ()
        self._urgent: set[int] = set()

    def start(self, urgent_timeout_s: float | None = None) -> None:
        self._exporters = tuple(build_exporter(kind, None) for kind in self.exporter_types)
        batch_size = None if BATCH_SIZE_VARIABLE in os.environ else DEFAULT_EXPORT_BATCH_SIZE
        self._processors = tuple(
            BatchSpanProcessor(exporter, max_export_batch_size=batch_size)
            for exporter in self._exporters
        )
        if urgent_timeout_s is not None:
            self._urgent_exporters = tuple(
                build_exporter(kind, urgent_timeout_s) for kind in self.exporter_types
            )

    def mark_urgent(self, span_id: int) -> None:
        self._urgent.add(span_id)

    def unmark_urgent(self, span_id: int) -> None:
        self._urgent.discard(span_id)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        urgent = self._urgent
        if urgent and span.context is not None and span.context.span_id in urgent:
            urgent.discard(span.context.span_id)
            if self._urgent_exporters:
                for exporter in self._urgent_exporters:
                    exporter.export([span])
                return
        for processor in self._processors:
            processor.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(processor.force_flush(timeout_millis) for processor in self._processors)

    def shutdown(self) -> None:
        processors, self._processors = self._processors, ()
        for processor in processors:
            processor.shutdown()  # type: ignore[no-untyped-call]
        urgent_exporters, self._urgent_exporters = self._urgent_exporters, ()
        for exporter in urgent_exporters:
            exporter.shutdown()

    @property
    def exporters(self) -> tuple[SpanExporter, ...]:
        return self._exporters + self._urgent_exporters


# What the SDK logs when it is handed over: "already shut down", "not registered".
HANDOVER_LOGGERS: Final = (
    *EXPORTER_LOGGERS,
    "opentelemetry.sdk.metrics._internal",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk._shared_internal",
)


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def logging_silenced() -> Iterator[None]:
    """Mute the SDK's own loggers while the master hands its exporters over.

    Shutting down exporters first (so that no final export can block start-up on a dead
    collector) makes the SDK log "already shut down" and "not registered" warnings that are
    consequences of the hand-over, not news for the user.
    """
    drop_all = _DropAll()
    loggers = [logging.getLogger(name) for name in HANDOVER_LOGGERS]
    for sdk_logger in loggers:
        sdk_logger.addFilter(drop_all)
    try:
        yield
    finally:
        for sdk_logger in loggers:
            sdk_logger.removeFilter(drop_all)


class ForkSafeExport:
    """Moves the SDK's exporting parts from the master into each worker."""

    def __init__(self, wire_encoder: bool = True) -> None:
        # The stock OTLP span exporters become their otlp_wire twins in the workers.
        self.wire_encoder = wire_encoder
        self.span_processor: WorkerSpanProcessor | None = None
        self._metric_exporter_types: list[type[MetricExporter]] = []
        self._log_exporter_types: list[type[LogRecordExporter]] = []
        self._worker_metric_readers: list[PeriodicExportingMetricReader] = []
        self._worker_log_processors: list[BatchLogRecordProcessor] = []
        self._taken_over = False

    def take_over(self, environ: dict[str, str]) -> None:
        """In the master, before the first fork: stop every exporter and export thread."""
        if self._taken_over:
            return
        self._taken_over = True
        # Logs first, while their queue holds nothing the hand-over itself logged: shutting a
        # log exporter down early would make the SDK's logging handler log about itself.
        self._take_over_logs()
        with logging_silenced():
            self._take_over_traces(environ)
            self._take_over_metrics()
        wait_for_native_threads(timeout_s=1.0)

    def start_in_worker(self, urgent_timeout_s: float | None = None) -> None:
        """In a worker, right after fork: build this process's exporters."""
        _first_record_only.reset()
        if self.span_processor is not None:
            self.span_processor.start(urgent_timeout_s)
        meter_provider = metrics.get_meter_provider()
        if isinstance(meter_provider, MeterProvider):
            for metric_exporter_type in self._metric_exporter_types:
                reader = PeriodicExportingMetricReader(metric_exporter_type())
                meter_provider.add_metric_reader(reader)
                self._worker_metric_readers.append(reader)
        logger_provider = get_logger_provider()
        if isinstance(logger_provider, LoggerProvider):
            for log_exporter_type in self._log_exporter_types:
                processor = BatchLogRecordProcessor(log_exporter_type())
                logger_provider.add_log_record_processor(processor)
                self._worker_log_processors.append(processor)

    def shutdown_within(self, timeout_s: float) -> bool:
        """In a stopping worker: export what is queued, waiting at most ``timeout_s``.

        The SDK bounds neither its flushes nor its shutdowns by a timeout of ours (a dead
        collector holds a log processor for 30 s), so they run in a helper thread; past the
        deadline the exporters are shut down, which aborts an export stuck on the collector.
        """
        stopper = threading.Thread(target=self._shutdown, name="wide-events-shutdown", daemon=True)
        stopper.start()
        stopper.join(timeout_s)
        if not stopper.is_alive():
            return True
        log_once(
            "export.shutdown",
            "gunicorn-django-wide-events: telemetry not exported within %.1fs of worker exit "
            "was dropped (is the collector reachable?)",
            timeout_s,
        )
        with logging_silenced():
            for exporter in self._exporters():
                exporter.shutdown()
        return False

    def _exporters(self) -> list[Any]:
        exporters: list[Any] = list(self.span_processor.exporters if self.span_processor else ())
        exporters += [reader._exporter for reader in self._worker_metric_readers]
        exporters += [p._batch_processor._exporter for p in self._worker_log_processors]
        return exporters

    def _shutdown(self) -> None:
        if self.span_processor is not None:
            self.span_processor.shutdown()
        for processor in self._worker_log_processors:
            processor.shutdown()  # type: ignore[no-untyped-call]
        meter_provider = metrics.get_meter_provider()
        for reader in self._worker_metric_readers:
            reader.force_flush()  # the last export, while the reader can still collect
            if isinstance(meter_provider, MeterProvider):
                # Removing unhooks the reader first, so its own final collection only warns.
                with logging_silenced():
                    meter_provider.remove_metric_reader(reader)

    def _take_over_traces(self, environ: dict[str, str]) -> None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            log_once(
                "export.no_sdk",
                "gunicorn-django-wide-events: no OpenTelemetry SDK tracer provider is set, so "
                "wide events are not exported; start gunicorn with `opentelemetry-instrument`",
            )
            return
        raise_span_attribute_limit(provider, environ)
        multi = provider._active_span_processor
        kept: list[SpanProcessor] = []
        handed_over: list[BatchSpanProcessor | SimpleSpanProcessor] = []
        for processor in multi._span_processors:
            if isinstance(processor, (BatchSpanProcessor, SimpleSpanProcessor)):
                handed_over.append(processor)
            else:
                kept.append(processor)
        exporter_types = [type(processor.span_exporter) for processor in handed_over]
        if self.wire_encoder:
            exporter_types = [wire_exporter_for(kind) for kind in exporter_types]
        self.span_processor = WorkerSpanProcessor(exporter_types)
        multi._span_processors = (*kept, self.span_processor)
        for processor in handed_over:
            processor.span_exporter.shutdown()  # first: no final export may wait on a collector
            processor.shutdown()

    def _take_over_metrics(self) -> None:
        provider = metrics.get_meter_provider()
        if not isinstance(provider, MeterProvider):
            return
        kept = []
        for reader in provider._metric_readers:
            if isinstance(reader, PeriodicExportingMetricReader):
                self._metric_exporter_types.append(type(reader._exporter))
                reader._exporter.shutdown()  # first: no final export may wait on a collector
                provider.remove_metric_reader(reader)  # also shuts it down
            else:
                kept.append(reader)
        # MeterProvider.shutdown() walks this list; readers added later register on their own.
        provider._metric_readers = kept

    def _take_over_logs(self) -> None:
        provider = get_logger_provider()
        if not isinstance(provider, LoggerProvider):
            return
        multi: Any = provider._multi_log_record_processor
        kept = []
        for processor in multi._log_record_processors:
            if isinstance(processor, BatchLogRecordProcessor):
                exporter = processor._batch_processor._exporter
            elif isinstance(processor, SimpleLogRecordProcessor):
                exporter = processor._exporter
            else:
                kept.append(processor)
                continue
            self._log_exporter_types.append(type(exporter))  # type: ignore[arg-type]
            processor.shutdown()
        multi._log_record_processors = tuple(kept)
