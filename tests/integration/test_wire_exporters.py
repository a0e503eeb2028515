"""The otlp_wire exporters deliver what the stock exporters deliver, configured the same way.

Each exporter is configured only through the standard ``OTEL_EXPORTER_OTLP_*`` variables and
sends real SDK spans over the network: to the session's ``OtlpReceiver`` (what arrives must
equal what the stock exporter's request delivers), and to a capturing server that keeps each
request's raw body and headers (so the body can be compared byte for byte with the stock
exporter's and the headers and compression checked).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from gunicorn_django_wide_events._export.exporters import (
    WireGrpcSpanExporter,
    WireHttpSpanExporter,
    wire_exporter_for,
)
from gunicorn_django_wide_events._export.wire_grpc import EXPORT_METHOD
from tests.integration.conftest import LOOPBACK, free_port
from tests.integration.otlp_receiver import OtlpReceiver

PROTOCOLS = ["grpc", "http/protobuf"]
STOCK: dict[str, type[SpanExporter]] = {"grpc": GrpcSpanExporter, "http/protobuf": HttpSpanExporter}
WIRE: dict[str, type[SpanExporter]] = {
    "grpc": WireGrpcSpanExporter,
    "http/protobuf": WireHttpSpanExporter,
}
HEADERS = "x-api-key=s3cret,x-tenant=acme%20corp"
SENT_HEADERS = {"x-api-key": "s3cret", "x-tenant": "acme corp"}
EXPORT_TIMEOUT_S = 2


# -- spans ---------------------------------------------------------------------------------------


def sample_spans() -> tuple[ReadableSpan, ...]:
    """Real SDK spans covering what a wide event and its neighbours carry."""
    provider = TracerProvider(
        resource=Resource({"service.name": "wire-exporters", "deployment.environment": "test"}),
        shutdown_on_exit=False,
    )
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("wire-exporters", "1.0", schema_url="https://example.com/s")
    attributes: dict[str, Any] = {f"app.text_{n}": f"value {n} ✓" for n in range(20)}
    attributes.update({f"app.count_{n}": n * 1013 - 7 for n in range(12)})
    attributes.update({f"app.ratio_{n}": n / 3 for n in range(8)})
    attributes.update({"app.ok": True, "app.tags": ["a", "b"], "app.blob": b"\x00\xff"})
    attributes["exception.stacktrace"] = "Traceback (most recent call last):\n" * 60
    remote = SpanContext(
        0x1234,
        0x5678,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("v", "1")]),
    )
    with tracer.start_as_current_span(
        "GET /orders/{id}",
        context=set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes=attributes,
        links=[Link(remote, {"link.kind": "caller"})],
    ) as server:
        server.add_event("checkpoint", {"step": 3})
        with tracer.start_as_current_span("db query", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "timeout"))
    provider.get_tracer("other-scope").start_span("background").end()
    spans = memory.get_finished_spans()
    provider.shutdown()
    return spans


# -- a server that keeps raw requests ------------------------------------------------------------


@dataclass
class Captured:
    """One export request as it arrived: body (decompressed for HTTP) and headers."""

    body: bytes
    headers: dict[str, str]


@dataclass
class CapturingServer:
    """gRPC and HTTP trace endpoints that keep every request's raw body and headers."""

    requests: list[Captured] = field(default_factory=list)
    grpc_endpoint: str = ""
    http_endpoint: str = ""
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def record(self, captured: Captured) -> None:
        with self._arrived:
            self.requests.append(captured)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10) -> list[Captured]:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)


def grpc_export(server: CapturingServer) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        server.record(Captured(request, dict(context.invocation_metadata())))  # type: ignore[arg-type]
        return ExportTraceServiceResponse().SerializeToString()

    return export


class CapturingHttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    capture: CapturingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        self.capture.record(Captured(body, headers))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows stderr only on failure, and then this would be noise."""


@pytest.fixture
def capturing_server() -> Iterator[CapturingServer]:
    capture = CapturingServer()
    grpc_server = grpc.server(ThreadPoolExecutor(max_workers=4))
    service, method = EXPORT_METHOD.strip("/").split("/")
    # No (de)serializers: the handler sees the request bytes exactly as sent.
    handler = grpc.unary_unary_rpc_method_handler(grpc_export(capture))
    grpc_server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
    grpc_port = grpc_server.add_insecure_port(f"{LOOPBACK}:0")
    grpc_server.start()
    handler_class = type("Handler", (CapturingHttpHandler,), {"capture": capture})
    http_server = ThreadingHTTPServer((LOOPBACK, 0), handler_class)
    http_server.daemon_threads = True
    thread = threading.Thread(target=http_server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    capture.grpc_endpoint = f"http://{LOOPBACK}:{grpc_port}"
    capture.http_endpoint = f"http://{LOOPBACK}:{http_server.server_address[1]}"
    try:
        yield capture
    finally:
        http_server.shutdown()
        http_server.server_close()
        thread.join(5)
        grpc_server.stop(grace=None).wait(5)


# -- configuration -------------------------------------------------------------------------------


def configure(
    monkeypatch: pytest.MonkeyPatch, protocol: str, endpoint: str, compression: str | None
) -> None:
    """Set the standard variables the way a deployment would, and nothing else."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", HEADERS)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", str(EXPORT_TIMEOUT_S))
    if compression:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)


def export_once(exporter_type: type[SpanExporter], spans: tuple[ReadableSpan, ...]) -> None:
    exporter = exporter_type()
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


# -- delivery ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "gzip"], ids=["plain", "gzip"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_receiver_gets_what_the_stock_exporter_delivers(
    receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    compression: str | None,
) -> None:
    """Spans sent by our exporter arrive at the OTLP receiver exactly as the stock one's do."""
    configure(monkeypatch, protocol, receiver.endpoint(protocol), compression)
    spans = sample_spans()

    export_once(STOCK[protocol], spans)
    from_stock = receiver.wait_for(lambda received: len(received) == len(spans), timeout=10)
    receiver.clear()
    export_once(WIRE[protocol], spans)
    from_wire = receiver.wait_for(lambda received: len(received) == len(spans), timeout=10)

    assert from_wire == from_stock
    assert receiver.trace_requests == 1
    (server,) = [span for span in from_wire if span.is_server]
    assert server.attributes["app.count_11"] == 11 * 1013 - 7
    assert server.events[0].attributes == {"step": 3}


@pytest.mark.parametrize("compression", [None, "gzip"], ids=["plain", "gzip"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_requests_are_the_stock_bytes_with_the_configured_headers(
    capturing_server: CapturingServer,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    compression: str | None,
) -> None:
    """Request bodies equal the stock exporter's byte for byte, with OTEL_*_HEADERS sent."""
    endpoint = (
        capturing_server.grpc_endpoint if protocol == "grpc" else capturing_server.http_endpoint
    )
    configure(monkeypatch, protocol, endpoint, compression)
    spans = sample_spans()

    export_once(STOCK[protocol], spans)
    export_once(WIRE[protocol], spans)
    stock, wire = capturing_server.wait_for(2)

    assert wire.body == stock.body
    assert ExportTraceServiceRequest.FromString(wire.body) == ExportTraceServiceRequest.FromString(
        stock.body
    )
    for name, value in SENT_HEADERS.items():
        assert wire.headers[name] == value
    if protocol == "http/protobuf":
        assert wire.headers["content-type"] == "application/x-protobuf"
        assert wire.headers.get("content-encoding") == stock.headers.get("content-encoding")
        assert wire.headers.get("content-encoding") == compression


def test_grpc_compression_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_COMPRESSION=gzip gives our gRPC channel gzip, as it does stock's."""
    configure(monkeypatch, "grpc", f"http://{LOOPBACK}:{free_port()}", "gzip")
    exporter = WireGrpcSpanExporter()
    try:
        assert exporter._compression is grpc.Compression.Gzip
    finally:
        exporter.shutdown()


# -- failure -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_closed_port_fails_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """With nothing listening, export returns FAILURE within OTEL_EXPORTER_OTLP_TIMEOUT."""
    configure(monkeypatch, protocol, f"http://{LOOPBACK}:{free_port()}", None)
    exporter = WIRE[protocol]()
    spans = sample_spans()
    try:
        started = time.monotonic()
        result = exporter.export(spans)
        elapsed = time.monotonic() - started
        assert result is SpanExportResult.FAILURE
        assert elapsed < EXPORT_TIMEOUT_S + 1
        if protocol == "grpc":
            # UNAVAILABLE rebuilt the channel: the new stub must still send our bytes.
            assert type(exporter._client).__name__ == "_WireTraceServiceStub"  # type: ignore[attr-defined]
    finally:
        exporter.shutdown()


def test_a_rebuilt_grpc_channel_still_sends_our_bytes(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channel and stub the mixin rebuilds on UNAVAILABLE deliver as the first did."""
    configure(monkeypatch, "grpc", receiver.grpc_endpoint, None)
    exporter = WireGrpcSpanExporter()
    spans = sample_spans()
    try:
        exporter._initialize_channel_and_stub()  # what _export does after UNAVAILABLE
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        receiver.wait_for(lambda received: len(received) == len(spans), timeout=10)
    finally:
        exporter.shutdown()


def test_http_keeps_the_request_size_limit(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch over max_request_size is dropped as FAILURE before sending, as stock does."""
    configure(monkeypatch, "http/protobuf", receiver.http_endpoint, None)
    exporter = WireHttpSpanExporter(max_request_size=100)
    try:
        assert exporter.export(sample_spans()) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert receiver.trace_requests == 0


def test_an_exporter_after_shutdown_fails_like_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exporting after shutdown returns FAILURE without sending, on both transports."""
    for protocol in PROTOCOLS:
        configure(monkeypatch, protocol, f"http://{LOOPBACK}:{free_port()}", None)
        exporter = WIRE[protocol]()
        exporter.shutdown()
        assert exporter.export(sample_spans()) is SpanExportResult.FAILURE


# -- exporter metrics ----------------------------------------------------------------------------


def exported_points(reader: InMemoryMetricReader) -> list[tuple[str, Any, dict[str, Any]]]:
    """(metric, value, attributes without the per-instance component name) of every point."""
    points = []
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    attributes.pop("otel.component.name", None)
                    value = getattr(point, "value", None)
                    points.append((metric.name, value, attributes))
    return sorted(points, key=repr)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_exporter_metrics_are_those_of_the_stock_exporter(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """With the SDK's own metrics on, ours records the same span counts and attributes."""
    configure(monkeypatch, protocol, receiver.endpoint(protocol), None)
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    spans = sample_spans()
    recorded = []
    for exporter_type in (STOCK[protocol], WIRE[protocol]):
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        exporter = exporter_type(meter_provider=meter_provider)  # type: ignore[call-arg]
        try:
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        points = exported_points(reader)
        meter_provider.shutdown()
        # Durations differ run to run; their presence and attributes must not.
        recorded.append([(n, v if "duration" not in n else None, a) for n, v, a in points])
    stock, wire = recorded
    assert wire == stock
    assert any(value == len(spans) for _, value, _ in wire)


# -- class mapping -------------------------------------------------------------------------------


def test_wire_exporter_for_maps_exactly_the_stock_classes() -> None:
    """The two stock exporters map to ours; their subclasses and other exporters to themselves."""

    class CustomGrpc(GrpcSpanExporter):
        pass

    class CustomHttp(HttpSpanExporter):
        pass

    assert wire_exporter_for(GrpcSpanExporter) is WireGrpcSpanExporter
    assert wire_exporter_for(HttpSpanExporter) is WireHttpSpanExporter
    for other in (CustomGrpc, CustomHttp, InMemorySpanExporter, WireGrpcSpanExporter):
        assert wire_exporter_for(other) is other
