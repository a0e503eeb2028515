"""The worker's span processor: spools or batches spans, urgent spans exported at once.

It is put in the SDK tracer provider by the master (``handover.py``) in place of the processors
handed over, drops every span until a worker starts it after fork. Then each ended span goes,
for the first OTLP exporter, into the worker's spool in shared memory (``_spool.py``, as a
record of ``spooled.py``), which the master's exporting process sends
(``_master/spool_exporter.py``): the worker itself sends nothing, and one killed for any reason
leaves its spans there. Other exporters (the console exporter, your own) batch through the
SDK's ``BatchSpanProcessor`` in the worker, as without a spool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .._guard import log_once, never_raise
from .._spool import Kind, Record, Spool
from .exporters import EncodedSpans, spooled_exporter_index
from .otlp_wire import SpanSnapshot
from .spooled import encoded_request, record_of, record_of_snapshot

ExporterFactory = Callable[..., SpanExporter]
"""An exporter class, or a callable that builds one configured (see ``console.py``)."""

# Wide events are large: the SDK's batch of 512 holds the GIL for milliseconds while it is
# encoded, and its buffers stay in the export thread's malloc arena for good (about 5 MiB).
DEFAULT_EXPORT_BATCH_SIZE: Final = 128
BATCH_SIZE_VARIABLE: Final = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
SCHEDULE_DELAY_VARIABLE: Final = "OTEL_BSP_SCHEDULE_DELAY"
DEFAULT_SCHEDULE_DELAY_MS: Final = 5000.0
# A request to the collector carries at most this much (gRPC's default limit is 4 MiB).
MAX_REQUEST_BYTES: Final = 3 * 2**20
_send_guard: Final = never_raise("spool.send")


def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def export_batch_size() -> int:
    """Spans per export: ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, else the package's default."""
    return int(_env_number(BATCH_SIZE_VARIABLE, DEFAULT_EXPORT_BATCH_SIZE))


def schedule_delay_s() -> float:
    """The longest a finished span waits to be sent: ``OTEL_BSP_SCHEDULE_DELAY``."""
    return _env_number(SCHEDULE_DELAY_VARIABLE, DEFAULT_SCHEDULE_DELAY_MS) / 1e3


def send_at_once(spool: Spool, record: Record, exporter: SpanExporter) -> bool:
    """Export one spooled record now, held meanwhile; marked sent, or pending again for the
    exporting process if the export failed.

    A worker killed between the collector's answer and the mark leaves it held: the exporting
    process sends it again once the slot's next worker took over, so it can arrive twice in
    that one round trip, never not at all.
    """
    spool.hold([record])
    delivered = False
    try:
        payload, count = encoded_request([record.payload])
        delivered = not count or (
            exporter.export(EncodedSpans(payload, count)) is SpanExportResult.SUCCESS
        )
    finally:
        if delivered:
            spool.mark_sent([record])
        else:
            spool.release([record])
    return delivered


def build_exporter(exporter_type: ExporterFactory, timeout_s: float | None) -> SpanExporter:
    """An exporter of ``exporter_type``, bounded by ``timeout_s`` if its constructor allows."""
    if timeout_s is not None:
        try:
            return exporter_type(timeout=timeout_s)
        except TypeError:
            pass
    return exporter_type()


class WorkerSpanProcessor(SpanProcessor):
    """Spools spans, or batches them to exporters built in this process; drops them until
    ``start()``.

    A span marked urgent (a timeout event, whose worker may be killed any moment) skips the
    wait: ``on_end`` exports it at once, in the ending thread, through exporters of its own
    whose timeout is short enough to finish before gunicorn's SIGKILL. In the spool it is
    precious: if that export fails it stays, for the exporting process to send.
    """

    def __init__(self, exporter_types: Sequence[ExporterFactory]) -> None:
        self.exporter_types = tuple(exporter_types)
        self._processors: tuple[BatchSpanProcessor, ...] = ()
        self._exporters: tuple[SpanExporter, ...] = ()
        self._urgent_exporters: tuple[SpanExporter, ...] = ()
        self._urgent: set[int] = set()
        self._spool: Spool | None = None
        self._urgent_spooled: SpanExporter | None = None
        self.urgent_delivered: dict[int, bool] = {}
        """Whether each urgent span (by span id) reached the collector at once."""

    def start(self, urgent_timeout_s: float | None = None, spool: Spool | None = None) -> None:
        """Build this worker's exporters; with a ``spool``, the first OTLP one's spans go there
        instead, for the master's exporting process to send (``spool_exporter.py``)."""
        spooled_index = spooled_exporter_index(self.exporter_types) if spool is not None else None
        self._spool = spool if spooled_index is not None else None
        self._exporters = tuple(
            build_exporter(kind, None)
            for index, kind in enumerate(self.exporter_types)
            if index != spooled_index
        )
        batch_size = None if BATCH_SIZE_VARIABLE in os.environ else DEFAULT_EXPORT_BATCH_SIZE
        self._processors = tuple(
            BatchSpanProcessor(exporter, max_export_batch_size=batch_size)
            for exporter in self._exporters
        )
        if urgent_timeout_s is not None:
            self._urgent_exporters = tuple(
                build_exporter(kind, urgent_timeout_s) for kind in self.exporter_types
            )
            if spooled_index is not None:
                self._urgent_spooled = self._urgent_exporters[spooled_index]

    def mark_urgent(self, span_id: int) -> None:
        self._urgent.add(span_id)

    def unmark_urgent(self, span_id: int) -> None:
        self._urgent.discard(span_id)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        urgent = self._urgent
        is_urgent = False
        if urgent and span.context is not None and span.context.span_id in urgent:
            urgent.discard(span.context.span_id)
            is_urgent = bool(self._urgent_exporters)
        spool = self._spool
        if spool is not None:
            self._to_spool(spool, span, is_urgent)
        if is_urgent:
            for exporter in self._urgent_exporters:
                if exporter is not self._urgent_spooled:
                    exporter.export([span])
            return
        for processor in self._processors:
            processor.on_end(span)

    def spools_as_it_is(self, span_id: int) -> Spool | None:
        """The spool, if a span ending now needs nothing else of this processor: spooled,
        not urgent, no batch processor beside (the package's server span then skips the
        ``ReadableSpan``, see ``ServerSpan.end``)."""
        if self._processors or span_id in self._urgent:
            return None
        return self._spool

    def spool_snapshot(
        self,
        spool: Spool,
        span: SpanSnapshot,
        resource: Resource,
        scope: InstrumentationScope | None,
    ) -> None:
        """Spool a span ending now, as ``otlp_wire.snapshot_of`` gives it."""
        try:
            payload = record_of_snapshot(span, resource, scope)
        except Exception:
            log_once("spool.encode", "gunicorn-django-wide-events: a span could not be encoded",
                     exc_info=True)  # fmt: skip
            return
        self._append(spool, payload, is_urgent=False)

    def _to_spool(self, spool: Spool, span: ReadableSpan, is_urgent: bool) -> None:
        try:
            payload = record_of(span)
        except Exception:  # a span field the encoder rejects: the stock exporter fails it too
            log_once("spool.encode", "gunicorn-django-wide-events: a span could not be encoded",
                     exc_info=True)  # fmt: skip
            return
        position = self._append(spool, payload, is_urgent)
        if not is_urgent:
            return
        delivered = False
        if position is not None and self._urgent_spooled is not None:
            record = Record(position, Kind.PRECIOUS, 1, payload)
            with _send_guard:  # on failure the record stays: the exporting process sends it
                delivered = send_at_once(spool, record, self._urgent_spooled)
        if span.context is not None:
            self.urgent_delivered[span.context.span_id] = delivered

    def _append(self, spool: Spool, payload: bytes, is_urgent: bool) -> int | None:
        kind = Kind.PRECIOUS if is_urgent else Kind.PLAIN
        held = is_urgent and self._urgent_spooled is not None
        position = spool.append(payload, 1, kind, held=held)
        if position is None or spool.has_dropped:
            log_once(
                "spool.full",
                "gunicorn-django-wide-events: the spool is full (is the collector reachable?); "
                "the oldest request events make room and are counted on the next event",
            )
        return position

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """The batch processors' spans out; the spool's are in shared memory already."""
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
