"""otlp_wire.encode_spans on span fields, grouping and what the stock encoder rejects.

Each test builds real SDK spans, encodes them with both encoders and compares the two with
wire.assert_encodes_like_stock: the same message, and byte for byte its deterministic encoding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as stock_encode_spans,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanKind,
    Status,
    StatusCode,
    TraceState,
    set_span_in_context,
)

from gunicorn_django_wide_events._export import otlp_wire
from tests.unit.export.wire import (
    END,
    PARENT_SPAN_ID,
    RESOURCE,
    START,
    Recorder,
    assert_encodes_like_stock,
    context,
    readable,
)

# -- span fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SpanKind), ids=lambda kind: kind.name)
def test_every_span_kind_encodes_like_stock(kind: SpanKind) -> None:
    """Each SpanKind maps to the same OTLP kind."""
    assert_encodes_like_stock([readable(kind=kind)])


@pytest.mark.parametrize(
    "status",
    [
        Status(StatusCode.UNSET),
        Status(StatusCode.OK),
        Status(StatusCode.ERROR),
        Status(StatusCode.ERROR, "it broke: ünïcode"),
        Status(StatusCode.ERROR, ""),
        Status(StatusCode.UNSET, "ignored by the SDK"),
        None,
    ],
    ids=["unset", "ok", "error", "error-described", "error-empty", "unset-described", "none"],
)
def test_every_status_encodes_like_stock(status: Status | None) -> None:
    """Status code and message are kept or omitted exactly as the stock encoder does."""
    assert_encodes_like_stock([readable(status=status)])


def test_statuses_set_through_the_api_encode_like_stock(recorder: Recorder) -> None:
    """Statuses and exceptions recorded on real spans encode identically."""
    tracer = recorder.provider.get_tracer("status")
    with tracer.start_as_current_span("ok") as span:
        span.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span("described") as span:
        span.set_status(Status(StatusCode.ERROR, "described"))
    with pytest.raises(ValueError), tracer.start_as_current_span("raised"):
        raise ValueError("boom")
    assert_encodes_like_stock(recorder.spans())


@pytest.mark.parametrize(
    "fields",
    [
        {"parent": None},
        {"parent": context(PARENT_SPAN_ID)},
        {"parent": context(PARENT_SPAN_ID, remote=True)},
        {"parent": context(0)},
        {"context": context(trace_state=TraceState([("vendor", "value"), ("other", "x-1")]))},
        {"context": context(trace_state=TraceState())},
        {"context": context(remote=True)},
        {"context": context(2**64 - 1, trace_id=2**128 - 1)},
        {"context": context(0, trace_id=0)},
        {"name": ""},
        {"name": "ünïcode ✓ " * 20},
        {"name": b"bytes name"},
        {"start_time": None, "end_time": None},
        {"start_time": START, "end_time": None},
        {"start_time": None, "end_time": END},
        {"start_time": 0, "end_time": 2**64 - 1},
        {"resource": Resource({})},
        {"resource": Resource({"a": 1}, schema_url="https://opentelemetry.io/schemas/1.21.0")},
        {"instrumentation_scope": None},
        {
            "instrumentation_scope": InstrumentationScope(
                "lib", "2.0", "https://example.com/schema", {"scope.attr": (1, 2)}
            )
        },
        {"instrumentation_scope": InstrumentationScope("", None)},
    ],
    ids=[
        "root",
        "local-parent",
        "remote-parent",
        "zero-parent-id",
        "trace-state",
        "empty-trace-state",
        "remote-context",
        "max-ids",
        "zero-ids",
        "empty-name",
        "unicode-name",
        "bytes-name",
        "no-times",
        "not-ended",
        "no-start",
        "extreme-times",
        "empty-resource",
        "resource-schema-url",
        "no-scope",
        "full-scope",
        "empty-scope",
    ],
)
def test_span_fields_encode_like_stock(fields: dict[str, Any]) -> None:
    """Ids, trace state, parent and its remote flag, name, times, resource and scope match."""
    assert_encodes_like_stock([readable(**fields)])


def test_parents_through_the_api_encode_like_stock(recorder: Recorder) -> None:
    """Root, local-child and remote-parent spans made by a tracer encode identically."""
    tracer = recorder.provider.get_tracer("parents")
    remote = context(PARENT_SPAN_ID, remote=True, trace_state=TraceState([("k", "v")]))
    remote_context = set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("child"):
        pass
    tracer.start_span("remote child", context=remote_context).end()
    assert_encodes_like_stock(recorder.spans())


def test_events_and_links_encode_like_stock(recorder: Recorder) -> None:
    """Events (name, time, attributes) and links (ids, flags, attributes) encode identically."""
    tracer = recorder.provider.get_tracer("events")
    links = [
        Link(context(PARENT_SPAN_ID, remote=True, trace_state=TraceState([("a", "b")])), {"n": 1}),
        Link(context(PARENT_SPAN_ID + 1), {"s": "x", "l": ("a", "b")}),
        Link(context(PARENT_SPAN_ID + 2)),
    ]
    with tracer.start_as_current_span("with events", links=links) as span:
        span.add_event("plain")
        span.add_event("at a time", {"k": "v", "n": -5}, timestamp=START)
        span.add_event("", {"empty": ""})
        span.record_exception(RuntimeError("recorded"))
    assert len(recorder.spans()[0].events) == 4
    assert_encodes_like_stock(recorder.spans())


def test_hand_built_events_and_links_encode_like_stock() -> None:
    """Events with zero time or no attributes and links with None attributes match too."""
    span = readable(
        events=[Event("zero time", timestamp=0), Event("attrs", {"a": {"b": 1}}, timestamp=1)],
        links=[Link(context(1), None), Link(context(2, remote=True), {"x": None})],
    )
    assert_encodes_like_stock([span])


def test_dropped_counts_encode_like_stock() -> None:
    """Attributes, events, links and their attributes dropped by SpanLimits are counted alike."""
    limits = SpanLimits(
        max_span_attributes=2,
        max_events=1,
        max_links=1,
        max_event_attributes=1,
        max_link_attributes=1,
        max_attribute_length=4,
    )
    recorder = Recorder(span_limits=limits)
    tracer = recorder.provider.get_tracer("limits")
    links = [Link(context(1), {"a": 1, "b": 2, "c": 3}), Link(context(2))]
    with tracer.start_as_current_span("limited", links=links) as span:
        span.set_attributes({"a": "truncated value", "b": 2, "c": 3, "d": 4})
        span.add_event("one", {"a": 1, "b": 2})
        span.add_event("two")
        span.add_event("three")
    (finished,) = recorder.spans()
    assert finished.dropped_attributes == 2
    assert finished.dropped_events == 2
    assert finished.dropped_links == 1
    assert_encodes_like_stock(recorder.spans())


def test_events_and_links_dropped_to_none_are_still_counted() -> None:
    """With max_events=0 and max_links=0 the lists are empty but the dropped counts are sent."""
    recorder = Recorder(span_limits=SpanLimits(max_events=0, max_links=0))
    tracer = recorder.provider.get_tracer("none kept")
    with tracer.start_as_current_span("dropped", links=[Link(context(1))]) as span:
        span.add_event("gone")
    (finished,) = recorder.spans()
    assert (finished.events, finished.dropped_events) == ((), 1)
    assert (finished.links, finished.dropped_links) == ((), 1)
    assert_encodes_like_stock([finished])


class EventfulSpan(ReadableSpan):
    """A ReadableSpan subclass whose attributes, events and links come from its properties."""

    @property
    def attributes(self) -> Mapping[str, Any]:
        return {"from": "property"}

    @property
    def events(self) -> Sequence[Event]:
        return (Event("from the property", {"n": 1}, timestamp=START),)

    @property
    def links(self) -> Sequence[Link]:
        return (Link(context(7), {"from": "property"}),)


def test_a_span_subclass_is_read_through_its_public_properties() -> None:
    """Only the SDK's own span classes have their private fields read directly."""
    span = EventfulSpan("subclass", context(), resource=RESOURCE, start_time=START, end_time=END)
    encoded = assert_encodes_like_stock([span])
    (parsed,) = ExportTraceServiceRequest.FromString(encoded).resource_spans[0].scope_spans
    assert [event.name for event in parsed.spans[0].events] == ["from the property"]
    assert len(parsed.spans[0].links) == 1
    assert [item.key for item in parsed.spans[0].attributes] == ["from"]


def test_the_sdk_span_classes_take_the_fast_path() -> None:
    """This SDK's spans keep _attributes/_events/_links, so they skip the property copies."""
    assert ReadableSpan in otlp_wire._SDK_SPAN_TYPES


# -- grouping ------------------------------------------------------------------------------------


def test_resources_and_scopes_are_grouped_like_stock() -> None:
    """Interleaved spans of two resources and three scopes group in first-seen order."""
    other = Resource({"service.name": "other"})
    equal_to_resource = Resource({"service.name": "wire-tests", "host.name": "h1"})
    scope_a = InstrumentationScope("a", "1")
    scope_b = InstrumentationScope("b", None, "https://example.com/b")
    equal_to_a = InstrumentationScope("a", "1")
    spans = [
        readable(name="1", resource=RESOURCE, instrumentation_scope=scope_a),
        readable(name="2", resource=other, instrumentation_scope=scope_b),
        readable(name="3", resource=RESOURCE, instrumentation_scope=scope_b),
        readable(name="4", resource=equal_to_resource, instrumentation_scope=equal_to_a),
        readable(name="5", resource=other, instrumentation_scope=None),
        readable(name="6", resource=RESOURCE, instrumentation_scope=scope_a),
        readable(name="7", resource=other, instrumentation_scope=scope_b),
    ]
    encoded = assert_encodes_like_stock(spans)
    parsed = ExportTraceServiceRequest.FromString(encoded)
    assert len(parsed.resource_spans) == 2
    assert [len(group.scope_spans) for group in parsed.resource_spans] == [2, 2]


def test_real_providers_in_one_batch_encode_like_stock() -> None:
    """Spans of two TracerProviders with different resources, batched together, match."""
    first = Recorder(Resource({"service.name": "first"}))
    second = Recorder(Resource({"service.name": "second", "deployment": "prod"}))
    for n in range(3):
        first.span({"n": n}, name=f"first {n}")
        second.span({"n": n}, name=f"second {n}")
    mixed = [span for pair in zip(first.spans(), second.spans(), strict=True) for span in pair]
    assert_encodes_like_stock(mixed)


def test_an_empty_batch_encodes_like_stock() -> None:
    """No spans: an empty request."""
    assert assert_encodes_like_stock([]) == b""


def test_resources_are_encoded_as_themselves_across_batches() -> None:
    """Equal resources that differ in order or in 1 versus True are each encoded as themselves.

    The resource cache is by identity: caching by equality would send one resource's
    attributes for another that merely compares equal.
    """
    for resource in (
        Resource({"a": 1, "b": "x"}),
        Resource({"b": "x", "a": 1}),
        Resource({"a": True, "b": "x"}),
    ):
        assert_encodes_like_stock([readable(resource=resource)])


def test_repeated_batches_encode_the_same() -> None:
    """The caches change nothing: the same spans encode to the same bytes every time."""
    spans = [readable(attributes={"k": "v", "n": n}) for n in range(3)]
    first = assert_encodes_like_stock(spans)
    assert otlp_wire.encode_spans(spans) == first


# -- what the stock encoder rejects --------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [
        {"too big": 2**63},
        {"too small": -(2**63) - 1},
        {"object": object()},
        {"surrogate": "\ud800"},
        {"surrogate in list": ("ok", "\udfff")},
        {"bad in mapping": {"k": object()}},
        {1: "int key"},
        {b"\xff": "invalid utf-8 key"},
    ],
    ids=[
        "int-too-big",
        "int-too-small",
        "object",
        "surrogate",
        "surrogate-in-list",
        "bad-in-mapping",
        "int-key",
        "invalid-utf8-key",
    ],
)
def test_an_attribute_stock_rejects_is_dropped_and_logged_like_stock(
    attributes: dict[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Stock logs an attribute it cannot encode and drops it, keeping the rest: so do we."""
    span = readable(attributes={"before": 1, **attributes, "after": "kept"})
    with caplog.at_level(logging.ERROR, logger=otlp_wire.__name__):
        encoded = assert_encodes_like_stock([span])
    parsed = ExportTraceServiceRequest.FromString(encoded)
    keys = [item.key for item in parsed.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert keys == ["before", "after"]
    ours = [record for record in caplog.records if record.name == otlp_wire.__name__]
    assert len(ours) == 1
    assert "Failed to encode key" in ours[0].getMessage()


@pytest.mark.parametrize(
    "fields",
    [
        {"start_time": -1},
        {"end_time": 2**64},
        {"context": context(trace_id=2**128)},
        {"context": context(-1)},
        {"context": None},
        {"parent": context(2**64)},
        {"kind": "SERVER"},
        {"name": 42},
        {"name": b"\xff"},
        {"status": Status(StatusCode.ERROR, "\ud800")},
        {"events": [Event("e", timestamp=-5)]},
        {"links": [Link(context(trace_id=-1))]},
        {"resource": None},
    ],
    ids=[
        "negative-start",
        "end-beyond-fixed64",
        "trace-id-too-big",
        "negative-span-id",
        "no-context",
        "parent-id-too-big",
        "kind-not-a-span-kind",
        "name-not-text",
        "name-invalid-utf8",
        "status-surrogate",
        "negative-event-time",
        "negative-link-trace-id",
        "no-resource",
    ],
)
def test_a_span_field_stock_rejects_makes_both_raise(fields: dict[str, Any]) -> None:
    """Where the stock encoder raises (so the exporter fails the batch), ours raises too."""
    span = readable(**fields)
    if "resource" in fields:
        span._resource = None  # type: ignore[assignment]  # ReadableSpan replaces None
    with pytest.raises(Exception):  # noqa: B017 - stock raises several kinds
        stock_encode_spans([span])
    with pytest.raises(Exception):  # noqa: B017
        otlp_wire.encode_spans([span])
