"""Secrets in the path: what a route parameter with a secret-looking name captured never leaves.

The test app's ``reset/<uidb64>/<token>/`` is shaped like Django's password-reset confirmation
link: ``token`` is a live credential, ``uidb64`` is not. The token must be ``REDACTED`` in
``url.path`` and appear nowhere else, on request, timeout and master fallback events alike.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from typing import Any

import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.events import send, the_event
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.integration.test_live_view import run, wait_for
from tests.integration.test_timeout_events import GUNICORN_TIMEOUT, stuck_request, wait_for_log

CAPTURE_ENV = {
    # A proxy's copy of the request target is a captured header that holds the token too.
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-original-uri,x-tenant",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "location",
}


def new_token() -> str:
    """A token shaped like Django's (``<timestamp>-<hash>``)."""
    return f"c4{secrets.token_hex(2)}-{secrets.token_hex(16)}"


def assert_nowhere(token: str, event: ReceivedSpan) -> None:
    assert token not in event.name
    assert token not in repr(sorted(event.attributes.items()))
    assert token not in repr(sorted(event.resource.items()))
    assert token not in event.status_message
    assert all(token not in repr(span_event) for span_event in event.events)


@pytest.fixture(scope="module")
def server(module_gunicorn_server: StartGunicorn) -> GunicornServer:
    # The user adds a name of their own: book ids are secret here.
    return module_gunicorn_server(env={**CAPTURE_ENV, "WIDE_EVENTS_REDACT_QUERY_KEYS": "pk"})


def test_a_token_captured_by_a_route_parameter_is_redacted_everywhere(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """url.path keeps the rest of the path; span name, headers and the rest never see it."""
    token = new_token()
    path = f"/reset/MQ/{token}/"
    exchange = send(server, path, headers={"X-Original-URI": path, "X-Tenant": "acme"})
    event = the_event(server, receiver, exchange)

    assert exchange.status == 302
    attributes = event.attributes
    assert attributes["url.path"] == "/reset/MQ/REDACTED/"
    assert attributes["http.route"] == "reset/<uidb64>/<token>/"
    assert event.name == "GET reset/<uidb64>/<token>/"
    assert attributes["http.request.header.x-original-uri"] == ("/reset/MQ/REDACTED/",)
    assert attributes["http.request.header.x-tenant"] == ("acme",)
    assert attributes["http.response.header.location"] == ("/reset/MQ/set-password/",)
    assert_nowhere(token, event)


def test_a_percent_encoded_token_is_redacted_too(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """The path is reported as sent: a token the client percent-encoded goes as well."""
    token = new_token()
    encoded = token.replace("-", "%2D")
    path = f"/reset/MQ/{encoded}/"
    event = the_event(server, receiver, send(server, path, headers={"X-Original-URI": path}))

    assert event.attributes["url.path"] == "/reset/MQ/REDACTED/"
    assert event.attributes["http.request.header.x-original-uri"] == ("/reset/MQ/REDACTED/",)
    assert_nowhere(token, event)
    assert_nowhere(encoded, event)


def test_users_add_parameter_names_of_their_own(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """WIDE_EVENTS_REDACT_QUERY_KEYS names route parameters too (here the viewset's pk)."""
    event = the_event(server, receiver, send(server, "/api/books/2/"))

    assert event.attributes["url.path"] == "/api/books/REDACTED/"
    plain = the_event(server, receiver, send(server, "/items/42/"))
    assert plain.attributes["url.path"] == "/items/42/"


def test_a_timeout_event_carries_no_token(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """The watchdog's event (and its log line) show the redacted path only."""
    server = gunicorn_server(timeout=GUNICORN_TIMEOUT, env=CAPTURE_ENV)
    token = new_token()
    path = f"/reset/MQ/{token}/"
    _, event = stuck_request_with_path(server, receiver, path, "?then=sleep")

    assert event.attributes["wide_event.type"] == "timeout"
    assert event.attributes["url.path"] == "/reset/MQ/REDACTED/"
    assert event.name == "GET reset/<uidb64>/<token>/"
    assert_nowhere(token, event)
    line = wait_for_log(server, r"ran past its .* deadline").group(0)
    assert token not in line


def test_the_master_fallback_event_carries_no_token(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """A worker killed mid-request: the master's event is made from the board, which holds the
    redacted path since Django resolved the URL."""
    server = gunicorn_server(env=CAPTURE_ENV)
    token = new_token()
    _, event = stuck_request_with_path(server, receiver, f"/reset/MQ/{token}/", "?then=crash")

    assert event.attributes["wide_event.type"] == "crash"
    assert event.attributes["wide_event.reported_by"] == "master"
    assert event.attributes["url.path"] == "/reset/MQ/REDACTED/"
    assert_nowhere(token, event)


def test_the_live_view_shows_the_redacted_path(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """``wide-events status`` reads the board entry: route, view and path, no token."""
    server = gunicorn_server(timeout=60, extra_args=("--graceful-timeout", "1"))
    server.wait_for_workers(1)
    token = new_token()

    def stuck() -> None:
        with contextlib.suppress(OSError):  # the server stops under it at the test's end
            server.request("GET", f"/reset/MQ/{token}/?then=sleep")

    threading.Thread(target=stuck, daemon=True).start()

    def routed() -> tuple[str, dict[str, Any]] | None:
        result = run("status", "--pid", str(server.pid), "--json")
        assert result.returncode == 0, result.stderr
        for worker in json.loads(result.stdout)["workers"]:
            request = worker["request"]
            if request and request["route"]:
                return result.stdout, request
        return None

    text, request = wait_for(routed)
    assert request["route"] == "reset/<uidb64>/<token>/"
    assert request["path"] == "/reset/MQ/REDACTED/"
    assert token not in text
    plain = run("status", "--pid", str(server.pid))
    assert plain.returncode == 0, plain.stderr
    assert token not in plain.stdout


def stuck_request_with_path(
    server: GunicornServer, receiver: OtlpReceiver, path: str, query: str
) -> tuple[object, ReceivedSpan]:
    """``stuck_request`` for a path whose event shows it redacted: found by route instead."""
    server.wait_for_workers(1)
    return stuck_request(server, receiver, "/reset/MQ/REDACTED/", query, sent_path=path)
