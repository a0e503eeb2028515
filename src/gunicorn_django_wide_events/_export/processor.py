"""The worker's span processor: spools or batches to this process's exporters, urgent spans at once.

It is put in the SDK tracer provider by the master (``handover.py``) in place of the processors
handed over, drops every span until a worker starts it after fork. Then each ended span goes,
for the OTLP exporters, into the worker's spool in shared memory (``_spool.py``, as a record of
``spooled.py``), encoded and sent from there by a thread of its own and marked once the
collector took it: a worker killed for any reason leaves its spans to the next worker of its
slot, or to the master. Other exporters (the console exporter, your own) batch through the
SDK's ``BatchSpanProcessor`` as before.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from .._guard import log_once, never_raise
from .._spool import Kind, Record, Spool
from .exporters import EncodedSpans, takes_encoded_spans
from .spooled import encoded_request, record_of

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


class SpoolSender:
    """Sends a spool's records to one exporter from a thread of its own; marks what arrived.

    It wakes every ``OTEL_BSP_SCHEDULE_DELAY``, or as soon as a batch's worth of spans ended
    or a quarter of the ring filled (busy workers must not fill it between two passes); a
    failed export leaves the records where they are, for the next pass.
    """

    def __init__(self, spool: Spool, exporter: SpanExporter, batch_size: int) -> None:
        self.spool = spool
        self.exporter = exporter
        self.batch_size = batch_size
        self.delay_s = _env_number(SCHEDULE_DELAY_VARIABLE, DEFAULT_SCHEDULE_DELAY_MS) / 1e3
        self._ended = 0  # spans appended since the last pass (a hint, read without the lock)
        self._ended_bytes = 0
        self._wake_at_bytes = spool.ring_size // 4
        self._wakeup = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="wide-events-spool", daemon=True)
        self._thread.start()

    def appended(self, size: int) -> None:
        self._ended += 1
        self._ended_bytes += size
        if (
            self._ended >= self.batch_size or self._ended_bytes >= self._wake_at_bytes
        ) and not self._wakeup.is_set():
            self._wakeup.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wakeup.wait(self.delay_s)
            self._wakeup.clear()
            self._ended = self._ended_bytes = 0
            with _send_guard:
                while self.send_once() and not self._stopping:
                    pass

    def send_once(self) -> bool:
        """Export one batch of pending records; True if it was a full one (more may be waiting).

        A pass goes on only while batches are full: under steady load, sending whatever
        trickled in during the last export would mean an export (and a wake-up of the
        exporter's threads) every request or two, not every batch.
        """
        records = self.spool.pending(MAX_REQUEST_BYTES, self.batch_size)
        if not records or not self.send(records, self.exporter):
            return False
        return len(records) >= self.batch_size or (
            sum(len(record.payload) for record in records) >= MAX_REQUEST_BYTES // 2
        )

    def send(self, records: list[Record], exporter: SpanExporter) -> bool:
        """Export ``records`` (held meanwhile); mark them sent, or pending again on failure.

        A worker killed between the collector's answer and the mark leaves them held: the
        master sends them again, so a batch can arrive twice in that one round trip, never
        not at all.
        """
        self.spool.hold(records)
        delivered = False
        try:
            payload, count = encoded_request(record.payload for record in records)
            delivered = not count or (
                exporter.export(EncodedSpans(payload, count)) is SpanExportResult.SUCCESS
            )
        finally:
            if delivered:
                self.spool.mark_sent(records)
            else:
                self.spool.release(records)
        return delivered

    def flush(self, deadline: float) -> bool:
        """Send everything pending, until ``deadline`` (monotonic); True if nothing is left."""
        while time.monotonic() < deadline:
            records = self.spool.pending(MAX_REQUEST_BYTES, self.batch_size)
            if not records:
                return True
            if not self.send(records, self.exporter):
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
        return not self.spool.pending(MAX_REQUEST_BYTES, 1)

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        self._thread.join(5)


def build_exporter(exporter_type: ExporterFactory, timeout_s: float | None) -> SpanExporter:
    """An exporter of ``exporter_type``, bounded by ``timeout_s`` if its constructor allows."""
    if timeout_s is not None:
        try:
            return exporter_type(timeout=timeout_s)
        except TypeError:
            pass
    return exporter_type()


class WorkerSpanProcessor(SpanProcessor):
    """Spools or batches spans to exporters built in this process; drops them until ``start()``.

    A span marked urgent (a timeout event, whose worker may be killed any moment) skips the
    wait: ``on_end`` exports it at once, in the ending thread, through exporters of its own
    whose timeout is short enough to finish before gunicorn's SIGKILL. In the spool it is
    precious: if that export fails it stays, for the next pass, worker or master.
    """

    def __init__(self, exporter_types: Sequence[ExporterFactory]) -> None:
        self.exporter_types = tuple(exporter_types)
        self._processors: tuple[BatchSpanProcessor, ...] = ()
        self._exporters: tuple[SpanExporter, ...] = ()
        self._urgent_exporters: tuple[SpanExporter, ...] = ()
        self._urgent: set[int] = set()
        self._sender: SpoolSender | None = None
        self._urgent_spooled: SpanExporter | None = None
        self.urgent_delivered: dict[int, bool] = {}
        """Whether each urgent span (by span id) reached the collector at once."""

    def start(self, urgent_timeout_s: float | None = None, spool: Spool | None = None) -> None:
        self._exporters = tuple(build_exporter(kind, None) for kind in self.exporter_types)
        batch_size = None if BATCH_SIZE_VARIABLE in os.environ else DEFAULT_EXPORT_BATCH_SIZE
        batched = list(self._exporters)
        spooled_index = next(
            (i for i, exporter in enumerate(batched) if takes_encoded_spans(exporter)), None
        )
        if spool is not None and spooled_index is not None:
            spooled = batched.pop(spooled_index)
            size = batch_size or int(_env_number(BATCH_SIZE_VARIABLE, DEFAULT_EXPORT_BATCH_SIZE))
            self._sender = SpoolSender(spool, spooled, size)
        self._processors = tuple(
            BatchSpanProcessor(exporter, max_export_batch_size=batch_size) for exporter in batched
        )
        if urgent_timeout_s is not None:
            self._urgent_exporters = tuple(
                build_exporter(kind, urgent_timeout_s) for kind in self.exporter_types
            )
            if self._sender is not None and spooled_index is not None:
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
        sender = self._sender
        if sender is not None:
            self._spool(sender, span, is_urgent)
        if is_urgent:
            for exporter in self._urgent_exporters:
                if exporter is not self._urgent_spooled:
                    exporter.export([span])
            return
        for processor in self._processors:
            processor.on_end(span)

    def _spool(self, sender: SpoolSender, span: ReadableSpan, is_urgent: bool) -> None:
        try:
            payload = record_of(span)
        except Exception:  # a span field the encoder rejects: the stock exporter fails it too
            log_once("spool.encode", "gunicorn-django-wide-events: a span could not be encoded",
                     exc_info=True)  # fmt: skip
            return
        kind = Kind.PRECIOUS if is_urgent else Kind.PLAIN
        held = is_urgent and self._urgent_spooled is not None
        position = sender.spool.append(payload, 1, kind, held=held)
        if position is None or sender.spool.has_dropped:
            log_once(
                "spool.full",
                "gunicorn-django-wide-events: the spool is full (is the collector reachable?); "
                "the oldest request events make room and are counted on the next event",
            )
        if not is_urgent:
            sender.appended(len(payload))
            return
        delivered = False
        if position is not None and self._urgent_spooled is not None:
            record = Record(position, kind, 1, payload)
            with _send_guard:  # on failure the record stays: the next pass sends it
                delivered = sender.send([record], self._urgent_spooled)
        if span.context is not None:
            self.urgent_delivered[span.context.span_id] = delivered

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        flushed = all(processor.force_flush(timeout_millis) for processor in self._processors)
        if self._sender is not None:
            flushed = self._sender.flush(time.monotonic() + timeout_millis / 1e3) and flushed
        return flushed

    def shutdown(self) -> None:
        processors, self._processors = self._processors, ()
        for processor in processors:
            processor.shutdown()  # type: ignore[no-untyped-call]
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.stop()
            sender.flush(time.monotonic() + sender.delay_s + 5.0)
            sender.exporter.shutdown()
        urgent_exporters, self._urgent_exporters = self._urgent_exporters, ()
        for exporter in urgent_exporters:
            exporter.shutdown()

    @property
    def exporters(self) -> tuple[SpanExporter, ...]:
        return self._exporters + self._urgent_exporters
