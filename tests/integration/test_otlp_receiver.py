"""Tests of the harness itself: the OTLP receiver and the gunicorn fixture.

Every other integration test trusts what the receiver decodes, so it is
checked against the real OpenTelemetry SDK exporters on both transports.
None of this needs the package under test.
"""

from __future__ import annotations

import gzip
import http.client
import math
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import grpc
import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.otlp_receiver import OtlpReceiver, latest_points

PROTOBUF = "application/x-protobuf"


def make_exporter(receiver: OtlpReceiver, protocol: str, compressed: bool) -> SpanExporter:
    """A real SDK exporter aimed at the receiver, as a user would configure it."""
    if protocol == "grpc":
        return GrpcSpanExporter(
            endpoint=receiver.grpc_endpoint,
            insecure=True,
            compression=grpc.Compression.Gzip if compressed else None,
        )
    return HttpSpanExporter(
        endpoint=receiver.http_endpoint + "/v1/traces",
        compression=HttpCompression.Gzip if compressed else HttpCompression.NoCompression,
    )


def post(
    receiver: OtlpReceiver,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, str, bytes]:
    """Raw HTTP call to the receiver's HTTP server."""
    address = urlsplit(receiver.http_endpoint)
    assert address.hostname is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.request(
            method, path, body=body, headers={"Content-Type": PROTOBUF, **(headers or {})}
        )
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


@pytest.fixture
def grpc_channel(receiver: OtlpReceiver) -> Iterator[grpc.Channel]:
    """A plaintext channel to the receiver's gRPC server."""
    channel = grpc.insecure_channel(receiver.grpc_endpoint.removeprefix("http://"))
    try:
        yield channel
    finally:
        channel.close()


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_receives_sdk_spans(receiver: OtlpReceiver, protocol: str, compressed: bool) -> None:
    """Spans exported by the SDK come back with every field intact."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": "receiver-test", "test.resource": "yes"})
    )
    provider.add_span_processor(SimpleSpanProcessor(make_exporter(receiver, protocol, compressed)))
    tracer = provider.get_tracer("receiver-test-scope")
    attributes = {
        "url.path": "/receiver-test/",
        "attr.str": "value",
        "attr.bool": True,
        "attr.int": 42,
        "attr.float": 1.5,
        "attr.list": ["a", "b"],
    }
    try:
        with (
            tracer.start_as_current_span(
                "GET /receiver-test/", kind=SpanKind.SERVER, attributes=attributes
            ) as parent,
            tracer.start_as_current_span("child") as child,
        ):
            child.set_status(Status(StatusCode.ERROR, "it broke"))
    finally:
        provider.shutdown()

    (event,) = receiver.wait_for_events("/receiver-test/", timeout=10)
    (child_span,) = [span for span in receiver.spans() if span.name == "child"]

    parent_context = parent.get_span_context()
    transport = "grpc" if protocol == "grpc" else "http"
    assert event.name == "GET /receiver-test/"
    assert event.kind == Span.SpanKind.SPAN_KIND_SERVER  # == 2, not SDK's SpanKind
    assert event.is_server
    assert event.trace_id == format(parent_context.trace_id, "032x")
    assert event.span_id == format(parent_context.span_id, "016x")
    assert event.parent_span_id == ""
    assert event.attributes == {**attributes, "attr.list": ("a", "b")}
    assert event.resource["service.name"] == "receiver-test"
    assert event.resource["test.resource"] == "yes"
    assert event.scope_name == "receiver-test-scope"
    assert event.transport == transport
    assert event.status_code == 0
    assert 0 < event.start_time_unix_nano <= event.end_time_unix_nano

    assert not child_span.is_server
    assert child_span.trace_id == event.trace_id
    assert child_span.parent_span_id == event.span_id
    assert child_span.is_error
    assert child_span.status_message == "it broke"
    assert child_span.transport == transport
    assert receiver.server_spans() == [event]


def test_http_gzip_body_without_sdk(receiver: OtlpReceiver) -> None:
    """A hand-built gzip request decodes, and the response is an empty Export*Response."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = "hand-made"
    span.kind = span.SPAN_KIND_SERVER
    span.trace_id = bytes(range(16))
    span.span_id = bytes(range(8))
    attribute = span.attributes.add()
    attribute.key = "attr.bytes"
    attribute.value.bytes_value = b"\x00\x01"
    nested = span.attributes.add()
    nested.key = "attr.kvlist"
    entry = nested.value.kvlist_value.values.add()
    entry.key = "inner"
    entry.value.int_value = 7

    status, content_type, body = post(
        receiver,
        "/v1/traces",
        gzip.compress(request.SerializeToString()),
        headers={"Content-Encoding": "gzip"},
    )

    assert (status, content_type) == (200, PROTOBUF)
    response = trace_service_pb2.ExportTraceServiceResponse()
    response.ParseFromString(body)
    assert response == trace_service_pb2.ExportTraceServiceResponse()
    (received,) = receiver.spans()
    assert received.trace_id == bytes(range(16)).hex()
    assert received.span_id == "0001020304050607"
    assert received.attributes == {"attr.bytes": b"\x00\x01", "attr.kvlist": {"inner": 7}}
    assert received.transport == "http"
    assert receiver.trace_requests == 1


def test_http_errors(receiver: OtlpReceiver) -> None:
    """Unknown paths are 404; wrong method, media type or body are refused."""
    assert post(receiver, "/v1/nope", b"")[0] == 404
    assert post(receiver, "/", b"")[0] == 404
    assert post(receiver, "/v1/traces", b"", method="GET")[0] == 405
    assert post(receiver, "/v1/traces", b"{}", {"Content-Type": "application/json"})[0] == 415
    assert post(receiver, "/v1/traces", b"\xff\xff\xff")[0] == 400
    assert post(receiver, "/v1/traces", b"junk", {"Content-Encoding": "gzip"})[0] == 400
    assert receiver.spans() == []
    assert receiver.trace_requests == 0


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_log_records_from_the_sdk_exporters_are_decoded(
    receiver: OtlpReceiver, protocol: str
) -> None:
    """A log record sent by a real SDK log exporter arrives with its body, level and ids."""
    exporter: LogRecordExporter = (
        GrpcLogExporter(endpoint=receiver.grpc_endpoint, insecure=True)
        if protocol == "grpc"
        else HttpLogExporter(endpoint=receiver.http_endpoint + "/v1/logs")
    )
    provider = LoggerProvider(resource=Resource.create({"service.name": "receiver-logs"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    span_context = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(1)
    )
    try:
        provider.get_logger("receiver.test").emit(
            body="payment declined",
            severity_number=SeverityNumber.ERROR,
            severity_text="ERROR",
            attributes={"otelSpanID": "b7ad6b7169203331"},
            context=trace.set_span_in_context(NonRecordingSpan(span_context)),
        )
    finally:
        provider.shutdown()

    (record,) = receiver.wait_for_log_records(bool)
    assert record.body == "payment declined"
    assert record.severity_number == SeverityNumber.ERROR.value
    assert record.severity_text == "ERROR"
    assert record.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert record.span_id == "b7ad6b7169203331"
    assert record.attributes == {"otelSpanID": "b7ad6b7169203331"}
    assert record.resource["service.name"] == "receiver-logs"
    assert record.scope_name == "receiver.test"
    assert record.transport == ("grpc" if protocol == "grpc" else "http")
    assert receiver.logs_requests == 1


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_metric_points_from_the_sdk_exporters_are_decoded(
    receiver: OtlpReceiver, protocol: str
) -> None:
    """A counter, a gauge and a histogram sent by a real SDK metric exporter arrive as points
    with their kind, unit, values, buckets and resource; the last one per series is found."""
    exporter: MetricExporter = (
        GrpcMetricExporter(endpoint=receiver.grpc_endpoint, insecure=True)
        if protocol == "grpc"
        else HttpMetricExporter(endpoint=receiver.http_endpoint + "/v1/metrics")
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "receiver-metrics", "service.instance.id": "a"}),
        shutdown_on_exit=False,
    )
    try:
        meter = provider.get_meter("receiver.test")
        counter = meter.create_counter("requests", unit="{request}")
        histogram = meter.create_histogram(
            "duration", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0]
        )
        meter.create_observable_gauge(
            "workers", callbacks=[lambda options: [Observation(3, {"state": "idle"})]]
        )
        counter.add(2, {"route": "a/"})
        histogram.record(0.05, {"route": "a/"})
        histogram.record(0.5, {"route": "a/"})
        assert reader.force_flush()
        counter.add(1, {"route": "a/"})
        assert reader.force_flush()
    finally:
        provider.shutdown()

    transport = "grpc" if protocol == "grpc" else "http"
    points = receiver.wait_for_metric_points(lambda points: len(points) >= 6)
    assert {point.transport for point in points} == {transport}
    sums = [point for point in points if point.name == "requests"]
    assert [point.value for point in sums] == [2, 3]
    assert sums[0].kind == "sum" and sums[0].is_monotonic and sums[0].temporality == 2
    assert sums[0].unit == "{request}" and sums[0].attributes == {"route": "a/"}
    assert sums[0].resource["service.name"] == "receiver-metrics"
    assert sums[0].instance == "a"
    assert sums[0].scope_name == "receiver.test"
    (last,) = [point for point in latest_points(points) if point.name == "requests"]
    assert last.value == 3
    duration = [point for point in points if point.name == "duration"][-1]
    assert duration.kind == "histogram"
    assert (duration.count, duration.explicit_bounds, duration.bucket_counts) == (
        2,
        (0.1, 1.0),
        (1, 1, 0),
    )
    assert duration.sum == pytest.approx(0.55)
    gauge = [point for point in points if point.name == "workers"][-1]
    assert (gauge.kind, gauge.value, gauge.attributes) == ("gauge", 3, {"state": "idle"})
    assert receiver.metrics_requests == 2


def test_metrics_and_logs_are_counted(receiver: OtlpReceiver, grpc_channel: grpc.Channel) -> None:
    """Metrics and (empty) logs requests are accepted on both transports and counted."""
    metrics = metrics_service_pb2.ExportMetricsServiceRequest()
    logs = logs_service_pb2.ExportLogsServiceRequest()

    status, content_type, body = post(receiver, "/v1/metrics", metrics.SerializeToString())
    assert (status, content_type) == (200, PROTOBUF)
    metrics_service_pb2.ExportMetricsServiceResponse().ParseFromString(body)
    assert post(receiver, "/v1/logs", logs.SerializeToString())[:2] == (200, PROTOBUF)

    metrics_service_pb2_grpc.MetricsServiceStub(grpc_channel).Export(metrics, timeout=10)
    logs_service_pb2_grpc.LogsServiceStub(grpc_channel).Export(logs, timeout=10)
    logs_service_pb2_grpc.LogsServiceStub(grpc_channel).Export(logs, timeout=10)

    assert receiver.metrics_requests == 2
    assert receiver.logs_requests == 3
    assert receiver.spans() == []


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_delay_slows_trace_exports(
    receiver: OtlpReceiver, grpc_channel: grpc.Channel, transport: str
) -> None:
    """set_delay holds back the acknowledgement; the spans are recorded at once."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add().name = "delayed"
    receiver.set_delay(0.5)
    assert receiver.delay == 0.5

    started = time.monotonic()
    if transport == "grpc":
        trace_service_pb2_grpc.TraceServiceStub(grpc_channel).Export(request, timeout=10)
    else:
        assert post(receiver, "/v1/traces", request.SerializeToString())[0] == 200
    elapsed = time.monotonic() - started

    assert elapsed >= 0.5
    assert [span.name for span in receiver.spans()] == ["delayed"]
    assert receiver.spans()[0].transport == transport


def test_stop_does_not_wait_for_delayed_exports() -> None:
    """A receiver stopped mid-delay returns promptly instead of hanging teardown."""
    receiver = OtlpReceiver().start()
    receiver.set_delay(60)
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add().name = "stuck"
    endpoint = receiver.http_endpoint
    results: list[BaseException | int] = []

    def export() -> None:
        address = urlsplit(endpoint)
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
        try:
            connection.request(
                "POST",
                "/v1/traces",
                body=request.SerializeToString(),
                headers={"Content-Type": PROTOBUF},
            )
            results.append(connection.getresponse().status)
        except (OSError, http.client.HTTPException) as exc:
            results.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=export)
    thread.start()
    receiver.wait_for(lambda spans: len(spans) == 1, timeout=10)

    started = time.monotonic()
    receiver.stop()
    thread.join(10)

    assert time.monotonic() - started < 10
    assert not thread.is_alive()
    assert results == [200]


def test_wait_for_timeout_lists_what_arrived(receiver: OtlpReceiver) -> None:
    """A timed-out wait says which spans did arrive, to make failures readable."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = "GET /seen/"
    span.kind = span.SPAN_KIND_SERVER
    for key, value in (("url.path", "/seen/"), ("wide_event.type", "http.request")):
        attribute = span.attributes.add()
        attribute.key = key
        attribute.value.string_value = value
    assert post(receiver, "/v1/traces", request.SerializeToString())[0] == 200

    started = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        receiver.wait_for_events("/never/", timeout=0.3)

    assert time.monotonic() - started >= 0.3
    message = str(failure.value)
    assert "1 span(s) received" in message
    assert "'GET /seen/'" in message
    assert "path='/seen/'" in message
    assert "wide_event.type='http.request'" in message
    assert receiver.wait_for_events("/seen/", timeout=1)[0].name == "GET /seen/"


def test_endpoint_by_protocol(receiver: OtlpReceiver) -> None:
    """endpoint() maps OTEL_EXPORTER_OTLP_PROTOCOL values to the right server."""
    assert receiver.endpoint("grpc") == receiver.grpc_endpoint
    assert receiver.endpoint("http/protobuf") == receiver.http_endpoint
    assert receiver.grpc_endpoint.startswith("http://127.0.0.1:")
    assert receiver.http_endpoint.startswith("http://127.0.0.1:")
    assert receiver.grpc_endpoint != receiver.http_endpoint
    with pytest.raises(ValueError, match="http/json"):
        receiver.endpoint("http/json")


def check_djangoapp_routes(server: GunicornServer) -> None:
    """The test project's routes behave as the other tests expect."""
    assert server.get("/ok/")[::2] == (200, b"ok")
    status, headers, body = server.get("/items/7/")
    assert (status, headers["content-type"], body) == (200, "application/json", b'{"id": 7}')
    assert server.get("/raise/")[0] == 500
    assert server.get("/sql/")[::2] == (200, b"sql")
    assert server.get("/slow/?seconds=0.01")[::2] == (200, b"slow")
    assert server.get("/stream/")[::2] == (200, b"chunk\n" * 5)
    assert server.get("/attrs/")[::2] == (200, b"attrs")
    assert server.get("/status/418/")[0] == 418
    assert server.request("POST", "/echo/", body=b"x" * 123)[::2] == (200, b"123")
    assert server.get("/missing/")[0] == 404
    assert server.get("/ok/", headers={"Host": "evil.example"})[0] == 400
    # Headers may come back in any case; lookups ignore it.
    assert server.get("/ok/")[1]["Content-Type"].startswith("text/plain")


def test_gunicorn_fixture_serves_djangoapp(gunicorn_server: StartGunicorn) -> None:
    """opentelemetry-instrument + gunicorn serve the project and stop cleanly."""
    server = gunicorn_server(launcher="instrument")

    check_djangoapp_routes(server)
    (worker,) = server.wait_for_workers(1)
    assert worker != server.pid

    # A streamed body that fails half way: headers went out, body is cut.
    response = server.send_raw(
        b"GET /stream-raise/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"chunk\n" in response
    assert "mid-stream" in server.log_text()

    assert server.stop() == 0
    assert "Booting worker" in server.log_text()


def test_gunicorn_config_launcher(gunicorn_server: StartGunicorn) -> None:
    """Plain gunicorn with -c runs the test's config file (hooks included)."""
    server = gunicorn_server(
        launcher="config",
        worker_class="gthread",
        threads=2,
        config_source=(
            "def post_fork(server, worker):\n"
            "    server.log.info('config hook ran in %s', worker.pid)\n"
        ),
    )

    assert server.get("/ok/")[::2] == (200, b"ok")
    assert server.send_raw(
        b"GET /ok/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    ).endswith(b"\r\n\r\nok")
    assert server.stop() == 0
    assert "config hook ran in" in server.log_text()
