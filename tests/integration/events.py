"""Sending requests that can be told apart, and finding their one event.

Every request carries a fresh W3C ``traceparent``: its trace id finds the request's spans in the
shared receiver, and its span id must come back as the event's parent. "Exactly one" is checked
behind a barrier: a second request to the same single worker process is sent afterwards and
awaited, and a worker exports its spans in the order they ended.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass

from tests.integration.conftest import GunicornServer, Headers
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan

EVENT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Exchange:
    status: int
    headers: Headers
    body: bytes
    trace_id: str
    parent_span_id: str


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def send(
    server: GunicornServer,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Exchange:
    traceparent, trace_id, span_id = new_traceparent()
    status, response_headers, response_body = server.request(
        method, path, headers={"traceparent": traceparent, **(headers or {})}, body=body
    )
    return Exchange(status, response_headers, response_body, trace_id, span_id)


def spans_of(receiver: OtlpReceiver, trace_id: str) -> list[ReceivedSpan]:
    return [span for span in receiver.spans() if span.trace_id == trace_id]


def server_spans_of(receiver: OtlpReceiver, trace_id: str) -> list[ReceivedSpan]:
    return [span for span in spans_of(receiver, trace_id) if span.is_server]


def wait_for_trace(receiver: OtlpReceiver, trace_id: str) -> None:
    receiver.wait_for(
        lambda spans: any(s.trace_id == trace_id and s.is_server for s in spans),
        timeout=EVENT_TIMEOUT,
    )


def barrier(server: GunicornServer, receiver: OtlpReceiver) -> None:
    """Return once everything the (single) worker ended before now has been received."""
    exchange = send(server, "/ok/")
    wait_for_trace(receiver, exchange.trace_id)


def the_event(server: GunicornServer, receiver: OtlpReceiver, exchange: Exchange) -> ReceivedSpan:
    """The one SERVER span of ``exchange``; fails on zero or on two."""
    wait_for_trace(receiver, exchange.trace_id)
    barrier(server, receiver)
    (event,) = server_spans_of(receiver, exchange.trace_id)
    return event


def send_raw(server: GunicornServer, data: bytes) -> tuple[bytes, int]:
    """Send bytes as they are; return the answer and the client port that identifies them.

    A server that answers before reading everything sent (gunicorn's 414 under gevent) resets
    the connection once its answer is out: what arrived until then is the answer.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks), client_port


def event_from_port(receiver: OtlpReceiver, client_port: int) -> ReceivedSpan:
    """The one SERVER span of a raw request, found by its client port."""

    def from_port(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.is_server and s.attributes.get("client.port") == client_port]

    receiver.wait_for(lambda spans: bool(from_port(spans)), timeout=EVENT_TIMEOUT)
    (event,) = from_port(receiver.spans())
    return event
