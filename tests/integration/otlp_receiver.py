"""A real OTLP receiver (gRPC and HTTP/protobuf) that runs inside the test process.

The integration tests start real gunicorn servers whose OpenTelemetry SDK
exports over the network, exactly as in production.  Instead of mocking the
exporter, the tests point it at this receiver, which speaks the actual OTLP
wire protocols and decodes what arrives into plain Python objects that are
easy to assert on.

Both transports are served at the same time because the package must work
with whichever protocol ``OTEL_EXPORTER_OTLP_PROTOCOL`` selects, and a bug
that only shows on one of them (for example a gRPC channel created before
gunicorn forks) is exactly what these tests exist to catch.

Spans are recorded as soon as an export request arrives.  ``set_delay`` only
delays the *acknowledgement*, which is what a slow or overloaded collector
looks like from the exporter's side: the export call blocks.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "OtlpReceiver",
    "ReceivedExemplar",
    "ReceivedLogRecord",
    "ReceivedMetricPoint",
    "ReceivedSpan",
    "ReceivedSpanEvent",
    "latest_points",
    "to_python",
]

Item = TypeVar("Item")  # what the receiver keeps: spans, log records, metric points

LOOPBACK = "127.0.0.1"
PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
SPAN_KIND_SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
STATUS_CODE_ERROR = trace_pb2.Status.StatusCode.STATUS_CODE_ERROR


def to_python(value: AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` into the Python value a test would write.

    Arrays become tuples (hashable, and distinguishable from a stringified
    list that a buggy exporter might send), key/value lists become dicts.
    """
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(to_python(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_to_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """Turn a repeated ``KeyValue`` field into a plain dict."""
    return {item.key: to_python(item.value) for item in attributes}


@dataclass(frozen=True)
class ReceivedSpanEvent:
    """A span event (for example a recorded exception) as received."""

    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived over the wire, decoded into Python values.

    Ids are lowercase hex so they compare directly with
    ``format(span_context.trace_id, "032x")`` and with log lines.
    """

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    transport: str
    events: tuple[ReceivedSpanEvent, ...] = field(default=())

    @property
    def is_server(self) -> bool:
        """True for SERVER spans, which is what the wide events are."""
        return self.kind == SPAN_KIND_SERVER

    @property
    def is_error(self) -> bool:
        """True when the span status is ERROR."""
        return self.status_code == STATUS_CODE_ERROR

    @property
    def duration_ns(self) -> int:
        """Span duration in nanoseconds."""
        return self.end_time_unix_nano - self.start_time_unix_nano


def spans_from_request(
    request: trace_service_pb2.ExportTraceServiceRequest, transport: str
) -> list[ReceivedSpan]:
    """Flatten an export request (resource -> scope -> spans) into spans."""
    received: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = attributes_to_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            for span in scope_spans.spans:
                received.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=int(span.kind),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        status_code=int(span.status.code),
                        status_message=span.status.message,
                        attributes=attributes_to_dict(span.attributes),
                        resource=resource,
                        scope_name=scope_name,
                        transport=transport,
                        events=tuple(
                            ReceivedSpanEvent(
                                name=event.name,
                                time_unix_nano=event.time_unix_nano,
                                attributes=attributes_to_dict(event.attributes),
                            )
                            for event in span.events
                        ),
                    )
                )
    return received


@dataclass(frozen=True)
class ReceivedLogRecord:
    """One log record as it arrived, its ids in lowercase hex ("" when it carries none)."""

    body: Any
    severity_number: int
    severity_text: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    transport: str


def log_records_from_request(
    request: logs_service_pb2.ExportLogsServiceRequest, transport: str
) -> list[ReceivedLogRecord]:
    """Flatten an export request (resource -> scope -> log records) into records."""
    received: list[ReceivedLogRecord] = []
    for resource_logs in request.resource_logs:
        resource = attributes_to_dict(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                received.append(
                    ReceivedLogRecord(
                        body=to_python(record.body),
                        severity_number=int(record.severity_number),
                        severity_text=record.severity_text,
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                        attributes=attributes_to_dict(record.attributes),
                        resource=resource,
                        scope_name=scope_logs.scope.name,
                        transport=transport,
                    )
                )
    return received


@dataclass(frozen=True)
class ReceivedExemplar:
    """An exemplar of a metric point: a measurement and the span it was made in ("" if none)."""

    value: float
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class ReceivedMetricPoint:
    """One data point of one metric, as it arrived, with its metric's name, kind and resource.

    ``kind`` is ``gauge``, ``sum``, ``histogram`` or ``exponential_histogram``; ``value`` is
    set for gauges and sums, ``count``, ``sum`` and the buckets for histograms.
    ``temporality`` is OTLP's (1 delta, 2 cumulative; 0 for gauges).
    """

    name: str
    kind: str
    unit: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    transport: str
    start_time_unix_nano: int
    time_unix_nano: int
    temporality: int = 0
    is_monotonic: bool = False
    value: float | None = None
    count: int | None = None
    sum: float | None = None
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()
    exemplars: tuple[ReceivedExemplar, ...] = ()

    @property
    def instance(self) -> str:
        """The ``service.instance.id`` of the process that sent it (one per worker, master)."""
        return str(self.resource.get("service.instance.id", ""))


def _exemplars(point: Any) -> tuple[ReceivedExemplar, ...]:
    return tuple(
        ReceivedExemplar(
            value=exemplar.as_double if exemplar.HasField("as_double") else exemplar.as_int,
            trace_id=exemplar.trace_id.hex(),
            span_id=exemplar.span_id.hex(),
        )
        for exemplar in point.exemplars
    )


def _number(point: metrics_pb2.NumberDataPoint) -> float:
    return point.as_double if point.HasField("as_double") else point.as_int


def metric_points_from_request(
    request: metrics_service_pb2.ExportMetricsServiceRequest, transport: str
) -> list[ReceivedMetricPoint]:
    """Flatten an export request (resource -> scope -> metric -> points) into points."""
    received: list[ReceivedMetricPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = attributes_to_dict(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data") or ""
                common = {
                    "name": metric.name,
                    "kind": kind,
                    "unit": metric.unit,
                    "resource": resource,
                    "scope_name": scope_metrics.scope.name,
                    "transport": transport,
                }
                data = getattr(metric, kind)
                for point in data.data_points:
                    fields: dict[str, Any] = {
                        "attributes": attributes_to_dict(point.attributes),
                        "start_time_unix_nano": point.start_time_unix_nano,
                        "time_unix_nano": point.time_unix_nano,
                        "exemplars": _exemplars(point),
                    }
                    if kind in ("gauge", "sum"):
                        fields["value"] = _number(point)
                    else:
                        fields["count"] = point.count
                        fields["sum"] = point.sum
                    if kind == "histogram":
                        fields["bucket_counts"] = tuple(point.bucket_counts)
                        fields["explicit_bounds"] = tuple(point.explicit_bounds)
                    if kind != "gauge":
                        fields["temporality"] = int(data.aggregation_temporality)
                    if kind == "sum":
                        fields["is_monotonic"] = data.is_monotonic
                    received.append(ReceivedMetricPoint(**common, **fields))
    return received


def latest_points(points: Iterable[ReceivedMetricPoint]) -> list[ReceivedMetricPoint]:
    """The last point of each series: per metric, sending process and attributes.

    With cumulative temporality (the SDK's default) that is each series' running total.
    """
    latest: dict[tuple[str, str, frozenset[tuple[str, Any]]], ReceivedMetricPoint] = {}
    for point in points:
        key = (point.name, point.instance, frozenset(point.attributes.items()))
        seen = latest.get(key)
        if seen is None or point.time_unix_nano >= seen.time_unix_nano:
            latest[key] = point
    return list(latest.values())


def describe(span: ReceivedSpan) -> str:
    """One summary line per span, used in timeout messages."""
    return (
        f"  {span.name!r} path={span.attributes.get('url.path')!r} "
        f"wide_event.type={span.attributes.get('wide_event.type')!r} "
        f"kind={span.kind} transport={span.transport}"
    )


class OtlpReceiver:
    """Receives OTLP traces, metrics and logs over gRPC and HTTP/protobuf.

    Trace spans and log records are stored (thread-safely, behind a
    ``threading.Condition`` so tests can block until data arrives instead of
    sleeping): the events are spans, the app's log records must carry
    their trace context, and the metrics' data points are checked by value.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._log_records: list[ReceivedLogRecord] = []
        self._metric_points: list[ReceivedMetricPoint] = []
        self._trace_requests = 0
        self._metrics_requests = 0
        self._logs_requests = 0
        self._delay = 0.0
        self._unavailable = False
        # Set on stop() so that delayed exports wake up instead of keeping
        # server threads (and therefore the test session) alive.
        self._stopping = threading.Event()
        self._grpc_server: grpc.Server | None = None
        self._grpc_port: int | None = None
        self._http_server: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life

    def start(self) -> OtlpReceiver:
        """Start both servers on free loopback ports; returns ``self``."""
        if self._grpc_server is not None:
            raise RuntimeError("OtlpReceiver already started")
        self._stopping.clear()

        server = grpc.server(ThreadPoolExecutor(max_workers=16, thread_name_prefix="otlp-grpc"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsServicer(self), server
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)
        # Port 0 lets the OS choose; add_insecure_port returns the real port.
        port = server.add_insecure_port(f"{LOOPBACK}:0")
        if port == 0:
            raise RuntimeError("gRPC server could not bind a loopback port")
        server.start()
        self._grpc_server = server
        self._grpc_port = port

        http_server = _OtlpHttpServer((LOOPBACK, 0), _OtlpHttpHandler, self)
        self._http_server = http_server
        self._http_thread = threading.Thread(
            target=http_server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-http",
            daemon=True,
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        """Stop both servers; safe to call more than once."""
        self._stopping.set()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------- endpoints

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the gRPC server (plaintext)."""
        if self._grpc_port is None:
            raise RuntimeError("OtlpReceiver not started")
        return f"http://{LOOPBACK}:{self._grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` base URL of the HTTP/protobuf server.

        Signal paths (``/v1/traces`` ...) are appended by the SDK when the
        generic ``OTEL_EXPORTER_OTLP_ENDPOINT`` is used.
        """
        if self._http_server is None:
            raise RuntimeError("OtlpReceiver not started")
        return f"http://{LOOPBACK}:{self._http_server.server_address[1]}"

    def endpoint(self, protocol: str) -> str:
        """Endpoint for an ``OTEL_EXPORTER_OTLP_PROTOCOL`` value."""
        if protocol == "grpc":
            return self.grpc_endpoint
        if protocol == "http/protobuf":
            return self.http_endpoint
        raise ValueError(f"unsupported OTLP protocol {protocol!r}")

    # ------------------------------------------------------------ slowness

    @property
    def delay(self) -> float:
        """Seconds each trace export waits before being acknowledged."""
        return self._delay

    def set_delay(self, seconds: float) -> None:
        """Make trace exports on both transports slow (0 restores speed).

        Spans are still recorded on arrival; only the response is held back,
        so the exporter experiences a slow collector.
        """
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._delay = float(seconds)

    @property
    def unavailable(self) -> bool:
        return self._unavailable

    def set_unavailable(self, unavailable: bool) -> None:
        """Refuse trace exports on both transports (gRPC UNAVAILABLE, HTTP 503), recording
        nothing, as a collector that is down; False takes them again."""
        self._unavailable = unavailable

    def _apply_delay(self) -> None:
        if self._delay > 0:
            self._stopping.wait(self._delay)

    # ------------------------------------------------------------- recording

    def _record_traces(
        self, request: trace_service_pb2.ExportTraceServiceRequest, transport: str
    ) -> None:
        spans = spans_from_request(request, transport)
        with self._condition:
            self._trace_requests += 1
            self._spans.extend(spans)
            self._condition.notify_all()

    def _record_metrics(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, transport: str
    ) -> None:
        points = metric_points_from_request(request, transport)
        with self._condition:
            self._metrics_requests += 1
            self._metric_points.extend(points)
            self._condition.notify_all()

    def _record_logs(
        self, request: logs_service_pb2.ExportLogsServiceRequest, transport: str
    ) -> None:
        records = log_records_from_request(request, transport)
        with self._condition:
            self._logs_requests += 1
            self._log_records.extend(records)
            self._condition.notify_all()

    # --------------------------------------------------------------- queries

    @property
    def trace_requests(self) -> int:
        """Number of trace export requests received (both transports)."""
        with self._condition:
            return self._trace_requests

    @property
    def metrics_requests(self) -> int:
        """Number of metrics export requests received (both transports)."""
        with self._condition:
            return self._metrics_requests

    @property
    def logs_requests(self) -> int:
        """Number of logs export requests received (both transports)."""
        with self._condition:
            return self._logs_requests

    def spans(self) -> list[ReceivedSpan]:
        """A copy of every span received since the last ``clear()``."""
        with self._condition:
            return list(self._spans)

    def log_records(self) -> list[ReceivedLogRecord]:
        """A copy of every log record received since the last ``clear()``."""
        with self._condition:
            return list(self._log_records)

    def wait_for_log_records(
        self,
        predicate: Callable[[list[ReceivedLogRecord]], bool],
        timeout: float = 30.0,
    ) -> list[ReceivedLogRecord]:
        """Block until ``predicate(log_records)`` is true; return those records."""
        met, snapshot = self._wait(self._log_records, predicate, timeout)
        if met:
            return snapshot
        bodies = [record.body for record in snapshot[-20:]]
        raise AssertionError(
            f"timed out after {timeout:.1f}s; {len(snapshot)} log record(s) received, "
            f"the last: {bodies}"
        )

    def metric_points(self, name: str | None = None) -> list[ReceivedMetricPoint]:
        """A copy of every metric data point received since the last ``clear()`` (of the
        metric ``name`` only, if given)."""
        with self._condition:
            return [point for point in self._metric_points if name is None or point.name == name]

    def wait_for_metric_points(
        self,
        predicate: Callable[[list[ReceivedMetricPoint]], bool],
        timeout: float = 30.0,
    ) -> list[ReceivedMetricPoint]:
        """Block until ``predicate(points)`` is true; return those points."""
        met, snapshot = self._wait(self._metric_points, predicate, timeout)
        if met:
            return snapshot
        names = sorted({point.name for point in snapshot})
        raise AssertionError(
            f"timed out after {timeout:.1f}s; {len(snapshot)} metric point(s) received, of {names}"
        )

    def server_spans(self) -> list[ReceivedSpan]:
        """Only the SERVER spans."""
        return [span for span in self.spans() if span.is_server]

    def events_for(self, path: str) -> list[ReceivedSpan]:
        """SERVER spans whose ``url.path`` attribute equals ``path``."""
        return _events_for(self.spans(), path)

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 30.0,
    ) -> list[ReceivedSpan]:
        """Block until ``predicate(spans)`` is true; return those spans.

        Waits on the condition variable, so it returns as soon as the
        matching export lands.  On timeout it raises ``AssertionError`` that
        lists what *did* arrive, which is usually enough to see why.
        """
        met, snapshot = self._wait(self._spans, predicate, timeout)
        if met:
            return snapshot
        raise AssertionError(self._timeout_message(snapshot, timeout))

    def _wait(
        self, received: list[Item], predicate: Callable[[list[Item]], bool], timeout: float
    ) -> tuple[bool, list[Item]]:
        """Wait on the condition until ``predicate`` holds for a copy of ``received``.

        Returns whether it did, and the last copy it was given (for the timeout message).
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                snapshot = list(received)
                if predicate(snapshot):
                    return True, snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False, snapshot
                self._condition.wait(remaining)

    def wait_for_events(
        self, path: str, count: int = 1, timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        """Wait until at least ``count`` SERVER spans for ``path`` arrived."""
        spans = self.wait_for(lambda spans: len(_events_for(spans, path)) >= count, timeout=timeout)
        return _events_for(spans, path)

    def clear(self) -> None:
        """Forget all spans and reset the counters."""
        with self._condition:
            self._spans.clear()
            self._log_records.clear()
            self._metric_points.clear()
            self._trace_requests = 0
            self._metrics_requests = 0
            self._logs_requests = 0
            self._unavailable = False

    @staticmethod
    def _timeout_message(spans: list[ReceivedSpan], timeout: float) -> str:
        shown = spans[-50:]
        lines = [f"timed out after {timeout:.1f}s; {len(spans)} span(s) received"]
        if len(spans) > len(shown):
            lines.append(f"  (showing the last {len(shown)})")
        lines.extend(describe(span) for span in shown)
        return "\n".join(lines)


def _events_for(spans: list[ReceivedSpan], path: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.is_server and s.attributes.get("url.path") == path]


# ---------------------------------------------------------------------- gRPC


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        if self._receiver.unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the collector is down")
        self._receiver._record_traces(request, "grpc")
        self._receiver._apply_delay()
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.ServicerContext,
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._receiver._record_metrics(request, "grpc")
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self,
        request: logs_service_pb2.ExportLogsServiceRequest,
        context: grpc.ServicerContext,
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        self._receiver._record_logs(request, "grpc")
        return logs_service_pb2.ExportLogsServiceResponse()


# ---------------------------------------------------------------------- HTTP


class _OtlpHttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its receiver.

    Daemon threads: a keep-alive connection left open by an exporter must not
    block interpreter exit at the end of the session.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        receiver: OtlpReceiver,
    ) -> None:
        super().__init__(address, handler)
        self.receiver = receiver


_HTTP_ROUTES: dict[str, tuple[type[Message], type[Message]]] = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    """OTLP/HTTP binary-protobuf handler (the JSON encoding is not supported)."""

    # HTTP/1.1 so the exporter's keep-alive session behaves as with a real
    # collector; every response therefore carries a Content-Length.
    protocol_version = "HTTP/1.1"
    server: _OtlpHttpServer

    def do_POST(self) -> None:
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        route = _HTTP_ROUTES.get(path)
        if route is None:
            self._reply(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != PROTOBUF_CONTENT_TYPE:
            self._reply(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                b"only application/x-protobuf is supported",
                "text/plain",
            )
            return
        request_type, response_type = route
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                raise ValueError(f"unsupported Content-Encoding {encoding!r}")
            message = request_type()
            message.ParseFromString(body)
        except (OSError, EOFError, zlib.error, ValueError, DecodeError) as exc:
            self._reply(HTTPStatus.BAD_REQUEST, str(exc).encode(), "text/plain")
            return

        receiver = self.server.receiver
        if path == "/v1/traces" and receiver.unavailable:
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, b"the collector is down", "text/plain")
            return
        if path == "/v1/traces":
            assert isinstance(message, trace_service_pb2.ExportTraceServiceRequest)
            receiver._record_traces(message, "http")
            receiver._apply_delay()
        elif path == "/v1/metrics":
            assert isinstance(message, metrics_service_pb2.ExportMetricsServiceRequest)
            receiver._record_metrics(message, "http")
        else:
            assert isinstance(message, logs_service_pb2.ExportLogsServiceRequest)
            receiver._record_logs(message, "http")
        self._reply(HTTPStatus.OK, response_type().SerializeToString(), PROTOBUF_CONTENT_TYPE)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in _HTTP_ROUTES:
            self._reply(HTTPStatus.METHOD_NOT_ALLOWED, b"use POST", "text/plain")
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        """Decode a chunked body; exporters may stream instead of sizing it."""
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Skip optional trailers up to the terminating blank line.
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: pytest captures stderr and the noise hides real errors."""
