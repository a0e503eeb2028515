"""Fake exporters and processors for the export tests, the Sdk they make up, and SDK probes.

The Recording* exporters remember every instance built, the Ordered* parts log their shutdowns
to ``calls``, and BlockingSpanExporter blocks its export until shut down; the clean_state
fixture (conftest.py) forgets all of it around each test.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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


def names(spans: Sequence[ReadableSpan]) -> list[str]:
    return [span.name for span in spans]


def span_processors_of(provider: TracerProvider) -> tuple[SpanProcessor, ...]:
    return tuple(provider._active_span_processor._span_processors)


def log_processors_of(provider: LoggerProvider) -> tuple[Any, ...]:
    return tuple(provider._multi_log_record_processor._log_record_processors)
