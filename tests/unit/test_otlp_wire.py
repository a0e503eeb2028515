"""otlp_wire.encode_spans: the same request as the stock OTLP encoder, for whatever the SDK makes.

Each test builds real SDK spans, encodes them with both encoders and compares: our bytes parsed
by the official ``ExportTraceServiceRequest`` equal the stock message, span by span first (for a
readable failure), then whole, and are byte for byte its deterministic serialization.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as stock_encode_spans,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from gunicorn_django_wide_events._export import otlp_wire

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
PARENT_SPAN_ID = 0x00F067AA0BA902B7
START = 1_700_000_000_123_456_789
END = START + 42_000_000
RESOURCE = Resource({"service.name": "wire-tests", "host.name": "h1"})


# -- helpers -------------------------------------------------------------------------------------


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


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    try:
        yield recorder
    finally:
        recorder.provider.shutdown()


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


class PlainMapping(Mapping[str, Any]):
    """A Mapping with no copy(): what a hand-built ReadableSpan might hold."""

    def __init__(self, items: dict[str, Any]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


STACK_TRACE = "".join(
    f'  File "/app/orders/views.py", line {n}, in handler_{n}\n    result = step_{n}(request)\n'
    for n in range(30)
)

ATTRIBUTE_VALUES: dict[str, Any] = {
    "empty string": "",
    "short string": "GET",
    "unicode": "héllo wörld ✓ 𝄞 日本",
    "125 bytes": "x" * 125,
    "126 bytes": "x" * 126,
    "long string": "y" * 300,
    "stack trace": STACK_TRACE,
    "true": True,
    "false": False,
    "zero": 0,
    "127": 127,
    "128": 128,
    "16383": 16383,
    "16384": 16384,
    "large int": 1_700_000_000_000_000_000,
    "minus one": -1,
    "negative": -123_456_789,
    "int64 min": -(2**63),
    "int64 max": 2**63 - 1,
    "float": 1.5,
    "float zero": 0.0,
    "negative zero": -0.0,
    "inf": math.inf,
    "minus inf": -math.inf,
    "nan": math.nan,
    "empty bytes": b"",
    "bytes": b"\x00\x01\xff",
    "empty tuple": (),
    "strings": ("a", "", "ü" * 200),
    "bools": (True, False),
    "ints": (0, -1, 2**63 - 1, 300),
    "floats": (1.5, -0.0, math.inf),
    "byte strings": (b"a", b""),
    "mixed sequence": (1, "a", True, 2.5, None, b"z"),
    "list": ["a", "b"],
    "nested sequence": ((1, 2), ("a",), ()),
    "mapping": {"a": 1, "b": "two", "c": (1, 2), "d": {"e": None}},
    "empty mapping": {},
    "mapping with non-str keys": {1: "one", None: "none"},
    "none": None,
    "int enum": Color.RED,
    "str subclass": Label("label"),
    "float subclass": Ratio(0.25),
    "bytearray": bytearray(b"ab"),
    "range": range(3),
}


# -- attributes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ATTRIBUTE_VALUES.values(), ids=ATTRIBUTE_VALUES.keys())
def test_each_attribute_value_type_encodes_like_stock(value: Any) -> None:
    """Every value type the stock _encode_value handles, alone on a span, encodes identically."""
    assert_encodes_like_stock([readable(attributes={"attr": value})])


def test_all_attribute_value_types_on_one_sdk_span(recorder: Recorder) -> None:
    """The same values set through the tracing API (which cleans them) encode identically."""
    span = recorder.span(
        {name.replace(" ", "."): value for name, value in ATTRIBUTE_VALUES.items()}
    )
    assert len(span.attributes or {}) > 30
    assert_encodes_like_stock([span])


VARINT_BOUNDARIES = [
    value for bits in range(7, 64, 7) for value in (2**bits - 1, 2**bits, -(2**bits))
]


def test_integers_at_every_varint_length_encode_like_stock() -> None:
    """Ints on both sides of each varint length (7, 14, ... 63 bits), negative ones too."""
    attributes = {f"int.{n}": value for n, value in enumerate(VARINT_BOUNDARIES)}
    assert_encodes_like_stock([readable(attributes=attributes)])


@pytest.mark.parametrize(
    "size", [0, 1, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 16383, 16384, 2**21]
)
@pytest.mark.parametrize("key", ["k", "a.longer.attribute.key"])
def test_strings_at_every_length_boundary_encode_like_stock(size: int, key: str) -> None:
    """Strings whose text, value or whole attribute length crosses a varint length boundary."""
    span = readable(attributes={key: "s" * size, "list": ("s" * size,)})
    assert_encodes_like_stock([span])


def test_attribute_keys_of_every_shape_encode_like_stock() -> None:
    """Empty, unicode, long and byte-string keys encode as the stock encoder encodes them."""
    attributes = {"": 1, "ключ": 2, "k" * 300: 3, b"bytes.key": 4}
    assert_encodes_like_stock([readable(attributes=attributes)])


def test_a_wide_event_encodes_like_stock(recorder: Recorder) -> None:
    """A realistic wide event (60 attributes, a stack trace) encodes identically."""
    attributes: dict[str, Any] = {f"app.field_{n}": f"value {n}" for n in range(20)}
    attributes.update({f"app.count_{n}": n * 997 for n in range(15)})
    attributes.update({f"app.ratio_{n}": n / 7 for n in range(15)})
    attributes.update({f"app.flag_{n}": n % 2 == 0 for n in range(8)})
    attributes["app.tags"] = ["a", "b", "c"]
    attributes["exception.stacktrace"] = STACK_TRACE
    assert_encodes_like_stock([recorder.span(attributes)])


def test_thousands_of_attributes_encode_like_stock() -> None:
    """A span with more attributes than a one-byte length can count encodes identically."""
    recorder = Recorder(span_limits=SpanLimits(max_span_attributes=3000))
    span = recorder.span({f"attr.{n}": "v" * (n % 200) for n in range(2500)})
    assert len(span.attributes or {}) == 2500
    assert_encodes_like_stock([span])


def test_attributes_in_a_mapping_without_copy_encode_like_stock() -> None:
    """Attributes held in a Mapping that is not a dict (and has no copy()) encode identically."""
    attributes = PlainMapping({"a": "b", "n": 3, "l": ("x",)})
    assert_encodes_like_stock([readable(attributes=attributes)])


def test_no_attributes_and_none_attributes_encode_like_stock() -> None:
    """Spans without attributes, given as {} or None, encode identically."""
    assert_encodes_like_stock([readable(attributes={}), readable(attributes=None)])


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


# -- the key cache -------------------------------------------------------------------------------


def test_the_key_cache_stops_growing_at_its_bound() -> None:
    """Past KEY_CACHE_SIZE distinct keys nothing more is remembered, and encoding stays right."""
    otlp_wire.clear_key_cache()
    try:
        count = otlp_wire.KEY_CACHE_SIZE + 500
        recorder = Recorder(span_limits=SpanLimits(max_span_attributes=count))
        span = recorder.span({f"dynamic.key.{n}": n for n in range(count)})
        assert_encodes_like_stock([span])
        assert otlp_wire.key_cache_size() == otlp_wire.KEY_CACHE_SIZE
        assert otlp_wire.value_cache_size() == otlp_wire.KEY_CACHE_SIZE
        assert_encodes_like_stock([recorder.span({"key.past.the.bound": "v"})])
        assert otlp_wire.key_cache_size() == otlp_wire.KEY_CACHE_SIZE
        assert otlp_wire.value_cache_size() == otlp_wire.KEY_CACHE_SIZE
    finally:
        otlp_wire.clear_key_cache()


def test_the_key_cache_remembers_repeated_keys() -> None:
    """Keys seen once are remembered, so the next spans reuse their encoded bytes."""
    otlp_wire.clear_key_cache()
    try:
        assert_encodes_like_stock([readable(attributes={"a": 1, "b": 2})])
        assert otlp_wire.key_cache_size() == 2
        assert_encodes_like_stock([readable(attributes={"a": 3, "b": 4})])
        assert otlp_wire.key_cache_size() == 2
    finally:
        otlp_wire.clear_key_cache()


# -- the span attribute value cache ---------------------------------------------------------------

# Values that compare equal across types, or encode differently while equal: the cache must
# never hand one of them the encoding of another.
LOOKALIKE_VALUES: tuple[Any, ...] = (
    1, True, 1.0, Color.RED, "1", Label("1"), 0, False, 0.0, -0.0, "", ("1",), ["1"], 2**40,
    "x" * 200, "x" * 200, "x", Ratio(1.0), 1, 1.0, 1.0, -0.0, 0.0, math.nan, math.nan, 1,
)  # fmt: skip


def test_a_key_that_changes_value_or_type_encodes_each_value_as_itself() -> None:
    """One span per value in turn, and all in one batch: each is its own value, not the last."""
    otlp_wire.clear_key_cache()
    try:
        for value in LOOKALIKE_VALUES:
            assert_encodes_like_stock([readable(attributes={"k": value, "other": "same"})])
        spans = [readable(attributes={"k": value, "other": "same"}) for value in LOOKALIKE_VALUES]
        assert_encodes_like_stock(spans)
    finally:
        otlp_wire.clear_key_cache()


def test_a_repeated_value_is_reused_across_spans_and_batches() -> None:
    """The second span of the same shape encodes from the cache, to the same bytes as stock."""
    otlp_wire.clear_key_cache()
    try:
        attributes = {"http.route": "hello/", "http.response.status_code": 200, "ok": True}
        first = assert_encodes_like_stock([readable(attributes=attributes)])
        assert otlp_wire.value_cache_size() == 3
        assert assert_encodes_like_stock([readable(attributes=dict(attributes))]) == first
        assert otlp_wire.value_cache_size() == 3
    finally:
        otlp_wire.clear_key_cache()


def test_each_attributes_field_keeps_its_own_value_cache() -> None:
    """The same key and value on a span, event, link, resource and scope: each is written with
    its own field's tag, never from another field's cache."""
    otlp_wire.clear_key_cache()
    try:
        attributes = {"shared": "value", "n": 7}
        spans = [
            readable(
                attributes=attributes,
                events=(Event("e", attributes, timestamp=START),),
                links=(Link(context(span_id=PARENT_SPAN_ID), attributes),),
                resource=Resource(attributes),
                instrumentation_scope=InstrumentationScope("s", attributes=attributes),
            )
            for _ in range(2)
        ]
        assert_encodes_like_stock(spans)
    finally:
        otlp_wire.clear_key_cache()


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["a", "b", "c"]), st.sampled_from(LOOKALIKE_VALUES), max_size=3
        ),
        max_size=8,
    )
)
def test_any_sequence_of_lookalike_values_encodes_like_stock(
    batches: list[dict[str, Any]],
) -> None:
    for attributes in batches:
        assert_encodes_like_stock([readable(attributes=attributes)])


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


# -- property: any valid attribute dict ----------------------------------------------------------

keys = st.text(max_size=40)
primitives = st.one_of(
    st.text(max_size=300),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=50),
)
homogeneous_sequences = st.one_of(
    st.lists(st.text(max_size=50), max_size=8),
    st.lists(st.booleans(), max_size=8),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=8),
    st.lists(st.floats(), max_size=8),
).map(tuple)
extended_values = st.recursive(
    st.one_of(st.none(), primitives),
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=12,
)
attribute_values = st.one_of(primitives, homogeneous_sequences, extended_values)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    attributes=st.dictionaries(keys, attribute_values, max_size=60),
    event_attributes=st.dictionaries(keys, primitives, max_size=5),
)
def test_any_valid_attributes_encode_like_stock(
    attributes: dict[str, Any], event_attributes: dict[str, Any]
) -> None:
    """Any dict of valid OpenTelemetry attribute values, on a real span and event, matches."""
    recorder = Recorder(span_limits=SpanLimits(max_span_attributes=100))
    tracer = recorder.provider.get_tracer("property")
    with tracer.start_as_current_span("property", attributes=attributes) as span:
        span.add_event("event", event_attributes)
    assert_encodes_like_stock(recorder.spans())
    assert_encodes_like_stock([readable(attributes=attributes)])
