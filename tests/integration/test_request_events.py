"""The request event: one SERVER span per request, carrying the contract's attributes.

Each test runs against every combination of OTLP protocol and worker class (sync, gthread,
gevent), each served by one real gunicorn worker process under ``opentelemetry-instrument``
(with the contrib Django and sqlite3 instrumentations installed and active, as
``opentelemetry-bootstrap`` leaves them).
"""

from __future__ import annotations

import math
import time

import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.djangoapp.views import SLOW_COUNT
from tests.integration.events import (
    barrier,
    event_from_port,
    send,
    send_raw,
    spans_of,
    the_event,
)
from tests.integration.otlp_receiver import OtlpReceiver

STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
STATUS_UNSET = 0
SPAN_KIND_SERVER = 2

SERVER_ENV = {
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-tenant,authorization,cookie",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type,x-frame-.*",
    "WIDE_EVENTS_CAPTURE_USER_ID": "true",
}


@pytest.fixture(
    scope="module",
    params=[
        ("grpc", "sync"),
        ("http/protobuf", "sync"),
        ("grpc", "gthread"),
        ("http/protobuf", "gthread"),
        ("grpc", "gevent"),
        ("http/protobuf", "gevent"),
    ],
    ids=lambda param: f"{param[0]}-{param[1]}",
)
def server(request: pytest.FixtureRequest, module_gunicorn_server: StartGunicorn) -> GunicornServer:
    protocol, worker_class = request.param
    return module_gunicorn_server(
        protocol=protocol,
        worker_class=worker_class,
        threads=4 if worker_class == "gthread" else 1,
        env=SERVER_ENV,
    )


def test_request_becomes_one_server_span_with_the_http_contract(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A routed request is one SERVER span with the stable HTTP attributes and Django's facts."""
    exchange = send(server, "/items/7/?page=2", headers={"User-Agent": "contract-test/1.0"})
    event = the_event(server, receiver, exchange)

    assert exchange.status == 200
    assert event.kind == SPAN_KIND_SERVER
    assert event.name == "GET items/<int:item_id>/"
    assert event.parent_span_id == exchange.parent_span_id
    assert event.status_code == STATUS_UNSET
    attributes = event.attributes
    assert attributes["wide_event.type"] == "request"
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == "/items/7/"
    assert attributes["url.query"] == "page=2"
    assert attributes["url.scheme"] == "http"
    assert attributes["http.route"] == "items/<int:item_id>/"
    assert attributes["http.response.status_code"] == 200
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == server.port
    assert attributes["user_agent.original"] == "contract-test/1.0"
    assert attributes["network.protocol.version"] == "1.1"
    assert attributes["http.response.body.size"] == len(exchange.body)
    assert attributes["django.view"] == "djangoapp.views.item_detail"
    assert attributes["django.url_name"] == "item-detail"
    if "gevent" in server.command:
        # One thread serves every greenlet: its CPU time is no figure of the request's.
        assert "wide_event.cpu_time_ms" not in attributes
    else:
        assert attributes["wide_event.cpu_time_ms"] > 0
    assert attributes["http.response.header.content-type"] == ("application/json",)
    assert event.resource["service.name"] == "djangoapp-tests"


def test_other_instrumentations_add_children_not_a_second_server_span(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Contrib Django and sqlite3 spans hang under the event; only the event is SERVER."""
    exchange = send(server, "/sql/")
    event = the_event(server, receiver, exchange)

    others = [span for span in spans_of(receiver, exchange.trace_id) if span is not event]
    assert others, "the contrib instrumentations should have made spans"
    assert not any(span.is_server for span in others)
    span_ids = {event.span_id} | {span.span_id for span in others}
    assert all(span.parent_span_id in span_ids for span in others)
    assert any(span.parent_span_id == event.span_id for span in others)


def test_database_work_is_counted_without_parameters(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Queries are counted and timed; duplicates found; statement text never holds parameters."""
    event = the_event(server, receiver, send(server, "/sql/"))

    attributes = event.attributes
    assert attributes["django.db.query_count"] == 4
    assert attributes["django.db.duplicate_query_count"] == 1
    assert attributes["django.db.duration_ms"] > 0
    assert 0 < attributes["django.db.slowest_query_ms"] <= attributes["django.db.duration_ms"]
    assert attributes["django.db.slowest_query"] == SLOW_COUNT
    assert "300000" not in repr(sorted(attributes.items()))


def test_unhandled_exception_is_an_error_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A view that raises gives a 500 event with the exception's type, message and stack."""
    exchange = send(server, "/raise/")
    event = the_event(server, receiver, exchange)

    assert exchange.status == 500
    assert event.status_code == STATUS_ERROR
    attributes = event.attributes
    assert attributes["http.response.status_code"] == 500
    assert attributes["error.type"] == "RuntimeError"
    assert attributes["exception.type"] == "RuntimeError"
    assert attributes["exception.message"] == "boom"
    assert "raise_error" in attributes["exception.stacktrace"]


@pytest.mark.parametrize(("code", "status"), [(503, STATUS_ERROR), (418, STATUS_UNSET)])
def test_status_codes_decide_the_span_status(
    server: GunicornServer, receiver: OtlpReceiver, code: int, status: int
) -> None:
    """A 5xx without an exception is an error named by its code; a 4xx is not an error."""
    event = the_event(server, receiver, send(server, f"/status/{code}/"))

    assert event.attributes["http.response.status_code"] == code
    assert event.status_code == status
    assert event.attributes.get("error.type") == (str(code) if code >= 500 else None)


def test_not_found_has_no_route(server: GunicornServer, receiver: OtlpReceiver) -> None:
    """A 404 still gets its event, without an http.route it never had."""
    exchange = send(server, "/no/such/page/")
    event = the_event(server, receiver, exchange)

    assert exchange.status == 404
    assert event.attributes["http.response.status_code"] == 404
    assert "http.route" not in event.attributes
    assert event.name == "GET"


def test_streaming_span_ends_after_the_last_byte(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A streamed body is part of the event: the span lasts while the chunks are produced."""
    exchange = send(server, "/stream/")
    event = the_event(server, receiver, exchange)

    assert exchange.body == b"chunk\n" * 5
    assert event.attributes["http.response.body.size"] == 30
    # The view sleeps 0.05 s between its five chunks, all of it inside the span.
    assert event.duration_ns >= 4 * 50_000_000
    assert "wide_event.response_incomplete" not in event.attributes


def test_failure_mid_stream_is_one_incomplete_error_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A body that raises after the headers went out is one error event, marked incomplete."""
    from http.client import IncompleteRead

    with pytest.raises(IncompleteRead):
        send(server, "/stream-raise/")
    event = receiver.wait_for_events("/stream-raise/")[0]
    barrier(server, receiver)
    (event,) = [s for s in receiver.events_for("/stream-raise/") if s.trace_id == event.trace_id]

    assert event.status_code == STATUS_ERROR
    assert event.attributes["http.response.status_code"] == 200
    assert event.attributes["error.type"] == "RuntimeError"
    assert event.attributes["wide_event.response_incomplete"] is True


def test_fields_set_by_the_app_land_on_the_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Attributes from the plain OpenTelemetry API and from add_fields() are on the event."""
    event = the_event(server, receiver, send(server, "/attrs/"))

    assert event.attributes["app.cart_size"] == 3
    assert event.attributes["app.plan"] == "pro"


def test_wide_events_are_not_cut_at_128_attributes(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """The SDK's default limit of 128 attributes is raised: 200 app fields all arrive."""
    event = the_event(server, receiver, send(server, "/attrs/?many=200"))

    assert all(f"app.field_{index:03d}" in event.attributes for index in range(200))
    assert event.attributes["wide_event.type"] == "request"
    assert event.attributes["url.path"] == "/attrs/"


def test_secrets_never_leave_the_process(server: GunicornServer, receiver: OtlpReceiver) -> None:
    """Secret query values, credentials and cookies are redacted; the rest is kept."""
    exchange = send(
        server,
        "/ok/?password=hunter2&page=3&api_key=sk-live-123&sessionid=s3cr3t",
        headers={
            "Authorization": "Bearer tok-abc",
            "Cookie": "sessionid=cookie-val",
            "X-Tenant": "acme",
        },
    )
    event = the_event(server, receiver, exchange)

    attributes = event.attributes
    assert attributes["url.query"] == "password=REDACTED&page=3&api_key=REDACTED&sessionid=REDACTED"
    assert attributes["http.request.header.x-tenant"] == ("acme",)
    assert attributes["http.request.header.authorization"] == ("REDACTED",)
    assert attributes["http.request.header.cookie"] == ("REDACTED",)
    everything = repr(sorted(attributes.items()))
    for secret in ("hunter2", "sk-live-123", "s3cr3t", "tok-abc", "cookie-val"):
        assert secret not in everything


def test_user_id_is_captured_when_turned_on(server: GunicornServer, receiver: OtlpReceiver) -> None:
    """With WIDE_EVENTS_CAPTURE_USER_ID on, the user's id is user.id, not enduser.id."""
    logged_in = the_event(server, receiver, send(server, "/ok/", headers={"X-Test-User": "42"}))
    anonymous = the_event(server, receiver, send(server, "/ok/"))

    assert logged_in.attributes["user.id"] == "42"
    assert "user.id" not in anonymous.attributes
    assert "enduser.id" not in logged_in.attributes


def test_request_body_size_and_queue_time(server: GunicornServer, receiver: OtlpReceiver) -> None:
    """Body sizes both ways, and the queue time a proxy's X-Request-Start stamp reveals."""
    # Milliseconds, as nginx stamps them, rounded down: rounding to nearest could put the stamp
    # up to half a millisecond later and the wait under 250 ms.
    stamp = f"t={math.floor((time.time() - 0.25) * 1000) / 1000:.3f}"
    exchange = send(
        server, "/echo/", method="POST", body=b"x" * 1234, headers={"X-Request-Start": stamp}
    )
    event = the_event(server, receiver, exchange)

    assert exchange.body == b"1234"
    assert event.attributes["http.request.body.size"] == 1234
    assert event.attributes["http.response.body.size"] == 4
    assert 250 <= event.attributes["wide_event.queue_time_ms"] < 60_000


def test_disallowed_host_is_an_event(server: GunicornServer, receiver: OtlpReceiver) -> None:
    """Django's 400 for a Host outside ALLOWED_HOSTS still gets its event, Host sanitized."""
    exchange = send(server, "/ok/", headers={"Host": "evil.example:1234"})
    event = the_event(server, receiver, exchange)

    assert exchange.status == 400
    assert event.attributes["http.response.status_code"] == 400
    assert event.attributes["server.address"] == "evil.example"
    assert event.attributes["server.port"] == 1234


def test_malformed_traceparent_starts_a_new_trace(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A garbage traceparent is ignored: the request still gets exactly one root event."""
    status, _, _ = server.request(
        "GET", "/items/991/", headers={"traceparent": "00-zzzz-not-a-trace-01"}
    )
    (event,) = receiver.wait_for_events("/items/991/")
    barrier(server, receiver)

    assert status == 200
    assert event.parent_span_id == ""
    assert len(receiver.events_for("/items/991/")) == 1


def test_undecodable_path_is_kept_percent_encoded(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A path that is not UTF-8 once decoded is reported as the client sent it."""
    answer, port = send_raw(
        server, b"GET /%ff%fe/caf%C3%A9 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    event = event_from_port(receiver, port)
    barrier(server, receiver)

    assert answer.startswith(b"HTTP/1.1 404")
    assert event.attributes["url.path"] == "/%ff%fe/caf%C3%A9"
    assert event.attributes["http.response.status_code"] == 404
    assert event_from_port(receiver, port) == event


def test_invalid_request_line_answered_by_gunicorn_is_an_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """gunicorn's own 400 for a request line it cannot parse is an event too."""
    answer, port = send_raw(server, b"GARBAGE\r\n\r\n")
    event = event_from_port(receiver, port)
    barrier(server, receiver)

    assert answer.startswith(b"HTTP/1.1 400")
    assert event.attributes["http.response.status_code"] == 400
    assert event.attributes["error.type"] == "gunicorn.http.errors.InvalidRequestLine"
    assert event.attributes["wide_event.type"] == "request"
    assert event_from_port(receiver, port) == event


def test_headers_over_gunicorn_limits_are_an_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """gunicorn's 431 for too many headers is an event carrying what could be parsed."""
    headers = b"".join(b"X-Filler-%d: %d\r\n" % (index, index) for index in range(150))
    answer, port = send_raw(
        server, b"GET /ok/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"Connection: close\r\n\r\n"
    )
    event = event_from_port(receiver, port)
    barrier(server, receiver)

    assert answer.startswith(b"HTTP/1.1 431")
    assert event.attributes["http.response.status_code"] == 431
    assert event.attributes["error.type"] == "gunicorn.http.errors.LimitRequestHeaders"
    assert event.attributes["client.address"] == "127.0.0.1"
    assert event_from_port(receiver, port) == event
