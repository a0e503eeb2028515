"""A local SDK tracer for the worker's unit tests, never set as the global one.

Shared by the tests of RequestEvent (test_event.py) and of the record factory (test_logs.py);
the ``tracing`` fixture is in this package's conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from gunicorn_django_wide_events._worker.event import RequestEvent

SQL_MAX = 2048


@dataclass
class Tracing:
    """A local SDK tracer whose ended spans land in ``exporter``."""

    tracer: Tracer
    exporter: InMemorySpanExporter

    def event(self, method: str = "GET", **attributes: object) -> RequestEvent:
        """A RequestEvent around a fresh SERVER span named ``method``."""
        span = self.tracer.start_span(method, kind=SpanKind.SERVER)
        event = RequestEvent(span, method, sql_max_length=SQL_MAX)
        event.attributes.update(attributes)  # type: ignore[arg-type]
        return event

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def only_span(self) -> ReadableSpan:
        spans = self.finished()
        assert len(spans) == 1
        return spans[0]
