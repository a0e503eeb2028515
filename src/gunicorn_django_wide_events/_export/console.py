"""The canonical log line: one line per wide event on stderr, no collector needed.

Selected with ``OTEL_TRACES_EXPORTER=wide_events_console``; ``WIDE_EVENTS_CONSOLE_FORMAT`` picks
logfmt (the default, for people) or JSON lines (for log pipelines): the SDK builds the exporter
without arguments, so the fork handover gives the workers one ``configured`` with the setting.
Keys come in a stable order: what the request was and how it ended first, then every other
attribute sorted by name. Only the wide events (SERVER spans) are printed; child spans of other
instrumentations are not.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final, TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

LEADING_KEYS: Final = (
    "wide_event.type",
    "http.request.method",
    "url.path",
    "http.route",
    "http.response.status_code",
    "duration_ms",
    "error.type",
)


def event_fields(span: ReadableSpan) -> dict[str, Any]:
    """The event as one flat mapping, in the order it is printed."""
    attributes = dict(span.attributes or {})
    fields: dict[str, Any] = {}
    if span.start_time is not None and span.end_time is not None:
        attributes["duration_ms"] = round((span.end_time - span.start_time) / 1e6, 3)
    for key in LEADING_KEYS:
        if key in attributes:
            fields[key] = attributes.pop(key)
    fields.update(sorted(attributes.items()))
    service = span.resource.attributes.get("service.name")
    if service is not None:
        fields["service.name"] = service
    context = span.get_span_context()
    if context is not None:
        fields["trace_id"] = format_trace_id(context.trace_id)
        fields["span_id"] = format_span_id(context.span_id)
    return fields


def _logfmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        value = ",".join(str(item) for item in value)
    text = str(value)
    if text and not any(char in text for char in ' "=\\\n\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped.replace(chr(9), chr(92) + "t")}"'


def format_logfmt(fields: dict[str, Any]) -> str:
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


def format_json(fields: dict[str, Any]) -> str:
    return json.dumps(fields, default=list, ensure_ascii=False, separators=(",", ":"))


FORMATTERS: Final[dict[str, Callable[[dict[str, Any]], str]]] = {
    "logfmt": format_logfmt,
    "json": format_json,
}


class WideEventConsoleExporter(SpanExporter):
    """Writes each wide event as one line to stderr (or ``stream``)."""

    def __init__(self, stream: TextIO | None = None, line_format: str = "logfmt") -> None:
        self._stream = stream
        self._format = FORMATTERS[line_format]
        self._lock = threading.Lock()

    @classmethod
    def configured(cls, line_format: str) -> Callable[[], WideEventConsoleExporter]:
        """A factory of exporters writing ``line_format`` (for the workers' processor)."""
        return partial(cls, line_format=line_format)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [
            self._format(event_fields(span)) + "\n"
            for span in spans
            if span.kind is SpanKind.SERVER
        ]
        if lines:
            stream = self._stream or sys.stderr
            with self._lock:
                stream.write("".join(lines))
                stream.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
