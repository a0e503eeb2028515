"""Helpers of the otlp_wire tests: the comparison with the stock OTLP encoder, and spans to encode.

assert_encodes_like_stock checks that our bytes parsed by the official ``ExportTraceServiceRequest``
equal the stock message, span by span first (for a readable failure), then whole, and are byte
for byte its deterministic serialization. Recorder makes real SDK spans, readable() builds a
ReadableSpan directly.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as stock_encode_spans,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState

from gunicorn_django_wide_events._export import otlp_wire

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
PARENT_SPAN_ID = 0x00F067AA0BA902B7
START = 1_700_000_000_123_456_789
END = START + 42_000_000
RESOURCE = Resource({"service.name": "wire-tests", "host.name": "h1"})


def assert_encodes_like_stock(spans: Sequence[ReadableSpan]) -> bytes:
    """Our bytes parse to the stock message and equal its deterministic serialization."""
    ours = otlp_wire.encode_spans(spans)
    stock = stock_encode_spans(spans)
    parsed = ExportTraceServiceRequest.FromString(ours)
    assert len(parsed.resource_spans) == len(stock.resource_spans)
    for our_resource, stock_resource in zip(
        parsed.resource_spans, stock.resource_spans, strict=True
    ):
        assert our_resource.resource == stock_resource.resource
        assert our_resource.schema_url == stock_resource.schema_url
        assert len(our_resource.scope_spans) == len(stock_resource.scope_spans)
        for our_scope, stock_scope in zip(
            our_resource.scope_spans, stock_resource.scope_spans, strict=True
        ):
            assert our_scope.scope == stock_scope.scope
            assert our_scope.schema_url == stock_scope.schema_url
            assert len(our_scope.spans) == len(stock_scope.spans)
            for our_span, stock_span in zip(our_scope.spans, stock_scope.spans, strict=True):
                assert our_span == stock_span
    assert parsed == stock
    assert ours == stock.SerializeToString(deterministic=True)
    return ours


class Recorder:
    """A real TracerProvider whose finished spans are kept in memory, not exported."""

    def __init__(
        self,
        resource: Resource = RESOURCE,
        span_limits: SpanLimits | None = None,
    ) -> None:
        self.provider = TracerProvider(
            resource=resource, span_limits=span_limits, shutdown_on_exit=False
        )
        self.exporter = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def span(self, attributes: Mapping[str, Any], name: str = "GET /x") -> ReadableSpan:
        """One finished SERVER span with ``attributes``, via the public tracing API."""
        tracer = self.provider.get_tracer("wire-tests", "1.0")
        tracer.start_span(name, kind=SpanKind.SERVER, attributes=attributes).end()
        return self.spans()[-1]


def context(
    span_id: int = SPAN_ID,
    *,
    remote: bool = False,
    trace_state: TraceState | None = None,
    trace_id: int = TRACE_ID,
) -> SpanContext:
    return SpanContext(
        trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(1), trace_state=trace_state
    )


def readable(**fields: Any) -> ReadableSpan:
    """A ReadableSpan built directly, for fields the tracing API would not leave unset."""
    defaults: dict[str, Any] = {
        "name": "direct",
        "context": context(),
        "resource": RESOURCE,
        "start_time": START,
        "end_time": END,
        "instrumentation_scope": InstrumentationScope("direct-scope"),
    }
    return ReadableSpan(**{**defaults, **fields})


class Color(enum.IntEnum):
    RED = 1


class Label(str):
    pass


class Ratio(float):
    pass
