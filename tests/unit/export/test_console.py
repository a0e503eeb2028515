"""The console exporter: one stable, readable line per wide event."""

from __future__ import annotations

import io
import json

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from gunicorn_django_wide_events._export.console import (
    WideEventConsoleExporter,
    format_logfmt,
)


def export_two_spans(line_format: str) -> str:
    stream = io.StringIO()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(WideEventConsoleExporter(stream, line_format)))
    tracer = provider.get_tracer("test")
    server = tracer.start_span("GET items/", kind=SpanKind.SERVER)
    child = tracer.start_span("SELECT", kind=SpanKind.CLIENT)
    child.end()
    server.set_attributes(
        {
            "zeta": "last",
            "wide_event.type": "request",
            "url.path": "/items/",
            "http.request.method": "GET",
            "http.response.status_code": 200,
            "note": 'say "hi" = ok',
        }
    )
    server.end()
    provider.shutdown()
    return stream.getvalue()


def test_logfmt_line_starts_with_what_happened_then_sorted_keys() -> None:
    """Only the SERVER span is printed; leading keys first, the rest by name, values quoted."""
    output = export_two_spans("logfmt")

    (line,) = output.splitlines()
    keys = [part.split("=", 1)[0] for part in line.split(" ") if "=" in part]
    assert keys[:5] == [
        "wide_event.type",
        "http.request.method",
        "url.path",
        "http.response.status_code",
        "duration_ms",
    ]
    assert line.index("note=") < line.index("zeta=") < line.index("service.name=shop")
    assert 'note="say \\"hi\\" = ok"' in line


def test_json_lines_parse_back() -> None:
    """JSON mode writes one parseable object per event, with trace and span ids."""
    (line,) = export_two_spans("json").splitlines()

    event = json.loads(line)
    assert event["url.path"] == "/items/"
    assert event["service.name"] == "shop"
    assert len(event["trace_id"]) == 32
    assert len(event["span_id"]) == 16


def test_logfmt_values() -> None:
    """Booleans, numbers and lists are written plainly; empty strings are quoted."""
    assert (
        format_logfmt({"a": True, "b": 1.5, "c": ("x", "y"), "d": ""}) == 'a=true b=1.5 c=x,y d=""'
    )
