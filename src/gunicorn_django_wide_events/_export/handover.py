"""Export across fork: the master hands its exporters over, each worker builds its own.

``opentelemetry-instrument`` sets the SDK up in the gunicorn master, exporters included: a gRPC
channel and an export thread per signal. Inherited by a fork, a gRPC channel can deadlock the
worker, and a thread alive at fork makes Python 3.12+ warn. So before the first fork the master
takes the exporting processors and readers out of the SDK providers and shuts them down,
remembering only the exporter classes; after fork each worker builds fresh exporters from those
classes (they read the same ``OTEL_EXPORTER_*`` variables) and its own batch processors.

The SDK offers no public way to list or remove span and log processors; the few private
attributes read here are pinned by ``tests/unit/export/test_sdk_internals.py`` so that an SDK
change shows up there.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import Aggregation
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from .._forking import wait_for_native_threads
from .._guard import log_once
from .._os_threads import MAX_WAIT_S, let_earlier_threads_end_quietly, start_released_on_return
from .._spool import Spool
from .console import WideEventConsoleExporter
from .exporters import wire_exporter_for
from .log_routing import first_record_only, logging_silenced
from .processor import ExporterFactory, WorkerSpanProcessor

# Wide events carry far more than the SDK's default of 128 attributes, which drops the oldest.
DEFAULT_SPAN_ATTRIBUTE_COUNT_LIMIT: Final = 1024


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


@dataclass(frozen=True, slots=True)
class MetricExport:
    """A metric exporter the SDK built in the master, as the master's own metrics rebuild it:
    its class, and what its reader was told (temporality and aggregation per instrument kind,
    the export interval and timeout from ``OTEL_METRIC_EXPORT_*``)."""

    exporter_type: type[MetricExporter]
    preferred_temporality: dict[type, AggregationTemporality]
    preferred_aggregation: dict[type, Aggregation]
    interval_s: float
    timeout_s: float


class ForkSafeExport:
    """Moves the SDK's exporting parts from the master into each worker."""

    def __init__(self, wire_encoder: bool = True, console_format: str = "logfmt") -> None:
        # The stock OTLP span exporters become their otlp_wire twins in the workers.
        self.wire_encoder = wire_encoder
        # The console exporter the SDK built from OTEL_TRACES_EXPORTER knows no settings of ours.
        self.console_format = console_format
        self.span_processor: WorkerSpanProcessor | None = None
        self._metric_exporter_types: list[type[MetricExporter]] = []
        self.metric_exports: list[MetricExport] = []
        """The metric exporters handed over: the workers' and the master's metrics use them."""
        self._log_exporter_types: list[type[LogRecordExporter]] = []
        self._worker_metric_readers: list[PeriodicExportingMetricReader] = []
        self._worker_log_processors: list[BatchLogRecordProcessor] = []
        self._taken_over = False

    def take_over(self, environ: dict[str, str]) -> None:
        """In the master, before the first fork: stop every exporter and export thread."""
        if self._taken_over:
            return
        self._taken_over = True
        let_earlier_threads_end_quietly()  # a config file may have gevent-patched the master
        # Logs first, while their queue holds nothing the hand-over itself logged: shutting a
        # log exporter down early would make the SDK's logging handler log about itself.
        self._take_over_logs()
        with logging_silenced():
            self._take_over_traces(environ)
            self._take_over_metrics()
        wait_for_native_threads(timeout_s=1.0)

    def start_in_worker(
        self, urgent_timeout_s: float | None = None, spool: Spool | None = None
    ) -> None:
        """In a worker, right after fork: build this process's exporters."""
        first_record_only.reset()
        if self.span_processor is not None:
            self.span_processor.start(urgent_timeout_s, spool)
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

    def metrics_exported(self) -> bool:
        """Whether something exports this process's metrics: a reader handed over, or one of
        the user's the hand-over kept (the SDK built none for ``OTEL_METRICS_EXPORTER=none``)."""
        provider = metrics.get_meter_provider()
        if not isinstance(provider, MeterProvider):
            return False
        return bool(self._metric_exporter_types or provider._metric_readers)

    def flush_before_exit(self, timeout_s: float) -> bool:
        """A worker about to exit on its own (after a timeout event): its queued spans and its
        metric points out, side by side, waiting at most ``timeout_s`` for both.

        Neither SDK flush has a deadline of ours on a dead collector, so each runs in an OS
        thread of its own (a real one, also where gevent patched ``threading``), which the exit
        ends whatever it is doing.
        """
        flushes: list[Any] = [reader.force_flush for reader in self._worker_metric_readers]
        if self.span_processor is not None:
            flushes.append(self.span_processor.force_flush)
        done = [start_released_on_return(flush) for flush in flushes]
        deadline = time.monotonic() + timeout_s
        flushed = True
        for lock in done:
            wait_s = min(max(deadline - time.monotonic(), 0.0), MAX_WAIT_S)
            flushed = lock.acquire(True, wait_s) and flushed
        return flushed

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
        exporter_types = [self._worker_exporter(type(p.span_exporter)) for p in handed_over]
        self.span_processor = WorkerSpanProcessor(exporter_types)
        multi._span_processors = (*kept, self.span_processor)
        for processor in handed_over:
            processor.span_exporter.shutdown()  # first: no final export may wait on a collector
            processor.shutdown()

    def _worker_exporter(self, kind: type[Any]) -> ExporterFactory:
        """What a worker builds in place of an exporter of ``kind`` the SDK built."""
        if issubclass(kind, WideEventConsoleExporter):
            return kind.configured(self.console_format)
        return wire_exporter_for(kind) if self.wire_encoder else kind

    def _take_over_metrics(self) -> None:
        provider = metrics.get_meter_provider()
        if not isinstance(provider, MeterProvider):
            return
        kept = []
        for reader in provider._metric_readers:
            if isinstance(reader, PeriodicExportingMetricReader):
                exporter = reader._exporter
                self._metric_exporter_types.append(type(exporter))
                self.metric_exports.append(
                    MetricExport(
                        type(exporter),
                        dict(exporter._preferred_temporality or {}),
                        dict(exporter._preferred_aggregation or {}),
                        reader._export_interval_millis / 1e3,
                        reader._export_timeout_millis / 1e3,
                    )
                )
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
