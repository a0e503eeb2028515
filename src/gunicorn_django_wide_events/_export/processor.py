"""The worker's span processor: batches to this process's exporters, urgent spans at once.

It is put in the SDK tracer provider by the master (``handover.py``) in place of the processors
handed over, drops every span until a worker starts it after fork, then batches through the
SDK's ``BatchSpanProcessor``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

ExporterFactory = Callable[..., SpanExporter]
"""An exporter class, or a callable that builds one configured (see ``console.py``)."""

# Wide events are large: the SDK's batch of 512 holds the GIL for milliseconds while it is
# encoded, and its buffers stay in the export thread's malloc arena for good (about 5 MiB).
DEFAULT_EXPORT_BATCH_SIZE: Final = 128
BATCH_SIZE_VARIABLE: Final = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"


def build_exporter(exporter_type: ExporterFactory, timeout_s: float | None) -> SpanExporter:
    """An exporter of ``exporter_type``, bounded by ``timeout_s`` if its constructor allows."""
    if timeout_s is not None:
        try:
            return exporter_type(timeout=timeout_s)
        except TypeError:
            pass
    return exporter_type()


class WorkerSpanProcessor(SpanProcessor):
    """Batches spans to exporters built in this process; drops them until ``start()``.

    A span marked urgent (a timeout event, whose worker may be killed any moment) skips the
    batch: ``on_end`` exports it at once, in the ending thread, through exporters of its own
    whose timeout is short enough to finish before gunicorn's SIGKILL.
    """

    def __init__(self, exporter_types: Sequence[ExporterFactory]) -> None:
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
