"""Details of the request event seen on real apps: headers gunicorn keeps outside ``HTTP_*``,
one redaction rule for headers and query keys, HEAD's body, gunicorn's 414, Django's 400s."""

from __future__ import annotations

import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.events import barrier, event_from_port, send, send_raw, the_event
from tests.integration.otlp_receiver import OtlpReceiver

STATUS_UNSET = 0


@pytest.fixture(
    scope="module",
    params=[("grpc", "sync"), ("http/protobuf", "gthread"), ("grpc", "gevent")],
    ids=lambda param: f"{param[0]}-{param[1]}",
)
def server(request: pytest.FixtureRequest, module_gunicorn_server: StartGunicorn) -> GunicornServer:
    protocol, worker_class = request.param
    return module_gunicorn_server(
        protocol=protocol,
        worker_class=worker_class,
        threads=4 if worker_class == "gthread" else 1,
        env={
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": (
                "content-type,content-length,x-csrftoken,x-api-key,x-tenant"
            ),
        },
    )


def test_content_type_and_length_can_be_captured(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """WSGI keeps these two without the HTTP_ prefix: asked for, they are captured all the same."""
    exchange = send(
        server, "/echo/", method="POST", body=b"{}", headers={"Content-Type": "application/json"}
    )
    event = the_event(server, receiver, exchange)

    assert event.attributes["http.request.header.content-type"] == ("application/json",)
    assert event.attributes["http.request.header.content-length"] == ("2",)


def test_headers_are_redacted_by_the_rule_of_query_keys(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A header whose name holds csrf, token, key, ... is REDACTED like such a query key."""
    exchange = send(
        server,
        "/ok/?csrftoken=q-secret",
        headers={"X-CSRFToken": "h-secret", "X-Api-Key": "k-secret", "X-Tenant": "acme"},
    )
    attributes = the_event(server, receiver, exchange).attributes

    assert attributes["url.query"] == "csrftoken=REDACTED"
    assert attributes["http.request.header.x-csrftoken"] == ("REDACTED",)
    assert attributes["http.request.header.x-api-key"] == ("REDACTED",)
    assert attributes["http.request.header.x-tenant"] == ("acme",)


@pytest.mark.parametrize(("method", "path"), [("HEAD", "/ok/"), ("GET", "/status/204/")])
def test_a_response_without_a_body_reports_no_body_bytes(
    server: GunicornServer, receiver: OtlpReceiver, method: str, path: str
) -> None:
    """HEAD (and 204) answers send no body, whatever the app yielded: the event says 0."""
    exchange = send(server, path, method=method)
    event = the_event(server, receiver, exchange)

    assert exchange.body == b""
    assert event.attributes["http.response.body.size"] == 0
    get = the_event(server, receiver, send(server, "/ok/"))
    assert get.attributes["http.response.body.size"] == 2


def test_a_request_line_too_long_keeps_its_method_and_counts_as_busy(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """gunicorn's 414 comes before it parsed a request: the method is read from the bytes it
    read, and the worker answering it is busy, this request counted."""
    answer, port = send_raw(
        server,
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    event = event_from_port(receiver, port)
    barrier(server, receiver)

    assert answer.startswith(b"HTTP/1.1 414")
    attributes = event.attributes
    assert attributes["http.response.status_code"] == 414
    assert attributes["http.request.method"] == "GET"
    assert event.name == "GET"
    assert attributes["error.type"] == "gunicorn.http.errors.LimitRequestLine"
    assert attributes["gunicorn.workers.busy"] >= 1
    assert attributes["gunicorn.workers.utilization"] > 0
    assert attributes["gunicorn.worker.requests"] >= 1
    assert "url.path" not in attributes


def test_a_disallowed_host_names_its_rejection(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Django's 400 for a Host outside ALLOWED_HOSTS says why: error.type = DisallowedHost."""
    exchange = send(server, "/ok/", headers={"Host": "evil.example"})
    event = the_event(server, receiver, exchange)

    assert exchange.status == 400
    assert event.attributes["error.type"] == "DisallowedHost"
    assert event.status_code == STATUS_UNSET  # a client error, not the server's
    assert "exception.type" not in event.attributes
