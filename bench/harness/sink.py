"""A counting OTLP gRPC collector in the benchmark's process.

It walks the protobuf wire format just deep enough to count the spans of each export request
and decodes nothing else, so that the collector's own work stays out of the measurement.
Metrics export requests (with ``--metrics``) are taken and counted, never decoded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import grpc

from harness import LOOPBACK

TRACE_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
METRICS_SERVICE: Final = "opentelemetry.proto.collector.metrics.v1.MetricsService"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _length_delimited(buf: bytes, start: int, end: int, wanted: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each length-delimited field number ``wanted`` in ``buf[start:end]``;
    every other field is skipped by its wire type, never decoded."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        wire_type = tag & 7
        if wire_type == 2:
            length, pos = _varint(buf, pos)
            if tag >> 3 == wanted:
                yield pos, pos + length
            pos += length
        elif wire_type == 0:
            _, pos = _varint(buf, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected wire type {wire_type}")


def count_spans(request: bytes) -> int:
    """Spans in a serialised ``ExportTraceServiceRequest``.

    ``resource_spans`` is field 1 of the request, ``scope_spans`` field 2 of ``ResourceSpans``,
    ``spans`` field 2 of ``ScopeSpans``; a span's own bytes are skipped over by their length.
    """
    spans = 0
    for rs_start, rs_end in _length_delimited(request, 0, len(request), 1):
        for ss_start, ss_end in _length_delimited(request, rs_start, rs_end, 2):
            for _ in _length_delimited(request, ss_start, ss_end, 2):
                spans += 1
    return spans


def check_count_spans() -> None:
    """``count_spans`` against messages built with the official protobuf classes, if installed."""
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
        from opentelemetry.proto.trace.v1 import trace_pb2
    except ImportError:
        return
    request = trace_service_pb2.ExportTraceServiceRequest()
    expected = 0
    for resource_index in range(3):
        resource_spans = request.resource_spans.add()
        resource_spans.schema_url = "https://example.test/schema"
        resource_spans.resource.attributes.append(
            KeyValue(key="service.name", value=AnyValue(string_value=f"svc{resource_index}"))
        )
        for scope_index in range(resource_index + 1):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = f"scope{scope_index}"
            for span_index in range(scope_index + 2):
                span = scope_spans.spans.add()
                span.trace_id = bytes(range(16))
                span.span_id = bytes(range(8))
                span.name = "GET hello/"
                span.kind = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
                span.start_time_unix_nano = 1_700_000_000_000_000_000 + span_index
                span.attributes.append(KeyValue(key="k", value=AnyValue(double_value=1.5)))
                span.attributes.append(KeyValue(key="n", value=AnyValue(int_value=-3)))
                span.events.add().name = "event"
                expected += 1
    counted = count_spans(request.SerializeToString())
    if counted != expected:
        raise SystemExit(f"count_spans is wrong: {counted} counted, {expected} built")


class SpanSink:
    """A gRPC ``TraceService`` on loopback that counts spans and acknowledges (after
    ``delay_s``, to play a slow collector); and a ``MetricsService`` that counts requests."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.spans = 0
        self.exports = 0
        self.bytes = 0
        self.metric_exports = 0
        self.metric_bytes = 0
        self._lock = threading.Lock()
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="span-sink"),
            options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)],
        )
        handler = grpc.unary_unary_rpc_method_handler(
            self._export, request_deserializer=None, response_serializer=None
        )
        metrics_handler = grpc.unary_unary_rpc_method_handler(
            self._export_metrics, request_deserializer=None, response_serializer=None
        )
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": handler}),
                grpc.method_handlers_generic_handler(METRICS_SERVICE, {"Export": metrics_handler}),
            )
        )
        self.port = self._server.add_insecure_port(f"{LOOPBACK}:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        spans = count_spans(request)
        with self._lock:
            self.spans += spans
            self.exports += 1
            self.bytes += len(request)
        if self.delay_s:
            time.sleep(self.delay_s)
        return b""  # an empty ExportTraceServiceResponse: everything accepted

    def _export_metrics(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.metric_exports += 1
            self.metric_bytes += len(request)
        return b""  # an empty ExportMetricsServiceResponse: everything accepted

    def count(self) -> int:
        with self._lock:
            return self.spans

    def stop(self) -> None:
        self._server.stop(grace=1).wait(5)


def bsp_schedule_delay_s(server_env: dict[str, str]) -> float:
    """The batch span processor's export interval in a server's environment: a partial batch
    reaches the sink only this long after its first span, so waits for spans start from it."""
    raw = server_env.get("OTEL_BSP_SCHEDULE_DELAY", "5000")
    try:
        return float(raw) / 1000
    except ValueError:
        return 5.0


def wait_for_spans(sink: SpanSink, before: int, expected: int, timeout_s: float) -> int:
    """Wait until ``expected`` spans arrived since ``before`` and no more came for a moment (the
    requests wrk cut off at the end of its run still end a span each)."""
    deadline = time.monotonic() + timeout_s
    last, last_change = sink.count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now_count = sink.count()
        if now_count != last:
            last, last_change = now_count, time.monotonic()
        if now_count - before >= expected and time.monotonic() - last_change >= 0.3:
            break
    return sink.count() - before
