"""Secrets in the path: which segments a route parameter's value spans, and where else it goes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind

from gunicorn_django_wide_events._board import Board
from gunicorn_django_wide_events._worker.event import scrub_secrets
from gunicorn_django_wide_events._worker.http import SecretNames, redact_path
from gunicorn_django_wide_events._worker.slot import WorkerSlot

TOKEN = "c4x9-0123456789abcdef"  # noqa: S105 (a made-up one)


@pytest.mark.parametrize(
    ("path", "secrets", "redacted"),
    [
        (f"/reset/MQ/{TOKEN}/", (TOKEN,), "/reset/MQ/REDACTED/"),
        # As sent: a percent-encoded token is matched decoded, replaced whole.
        ("/reset/MQ/c4x9%2D0123456789abcdef/", (TOKEN,), "/reset/MQ/REDACTED/"),
        # <path:key> spans several segments.
        ("/files/a/b/c/raw/", ("a/b/c",), "/files/REDACTED/REDACTED/REDACTED/raw/"),
        # <key>.json: the segment that holds it.
        (f"/keys/{TOKEN}.json", (TOKEN,), "/keys/REDACTED"),
        # The same value in two places: both go.
        (f"/{TOKEN}/x/{TOKEN}/", (TOKEN,), "/REDACTED/x/REDACTED/"),
        # A converter rewrote the value: no telling which part is secret, so all of it.
        ("/k/ABC/", ("abc",), "REDACTED"),
    ],
)
def test_redact_path(path: str, secrets: tuple[str, ...], redacted: str) -> None:
    assert redact_path(path, secrets) == redacted


def test_one_rule_names_secrets_case_insensitively() -> None:
    names = SecretNames(("token", "key", "pk"))

    assert names("uidb64") is False
    assert names("token")
    assert names("X-API-Key")
    assert names("PK")


def test_scrub_takes_the_secret_out_of_every_string_attribute() -> None:
    """Raw and percent-encoded, in strings and string arrays; short values are left alone."""
    attributes: dict[str, object] = {"exception.message": f"bad token {TOKEN}", "n": 3}
    on_span = {
        "http.request.header.x-original-uri": (f"/reset/MQ/{TOKEN.replace('-', '%2D')}/",),
        "network.protocol.version": "1.1",
    }

    scrub_secrets((TOKEN, "1"), attributes, on_span)  # type: ignore[arg-type]

    assert attributes == {
        "exception.message": "bad token REDACTED",
        "n": 3,
        "http.request.header.x-original-uri": ("/reset/MQ/REDACTED/",),
    }


@pytest.fixture
def span() -> Iterator[Span]:
    provider = TracerProvider()
    made = provider.get_tracer("test_path_secrets").start_span("GET", kind=SpanKind.SERVER)
    yield made
    made.end()
    provider.shutdown()


def test_the_board_entry_takes_the_redacted_path(span: Span) -> None:
    """What the master's fallback and the live view read; the rest of the entry stays."""
    board = Board(1, 2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    entry = worker.request_started(span, "GET", f"/reset/MQ/{TOKEN}/", "next=/")
    entry.route_resolved("reset/<uidb64>/<token>/", "app.views.reset")

    entry.path_redacted("/reset/MQ/REDACTED/")

    request = board.read_request(0, 0)
    assert request.path == "/reset/MQ/REDACTED/"
    assert (request.method, request.query) == ("GET", "next=/")
    assert (request.route, request.view) == ("reset/<uidb64>/<token>/", "app.views.reset")
    assert request.span_id == span.get_span_context().span_id.to_bytes(8, "big")
    entry.finished()
