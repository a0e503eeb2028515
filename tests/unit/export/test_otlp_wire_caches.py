"""otlp_wire's key and value caches: bounded, reused, never one value's bytes for another's.

Each test builds real SDK spans, encodes them with both encoders and compares the two with
wire.assert_encodes_like_stock: the same message, and byte for byte its deterministic encoding.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, SpanLimits
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link

from gunicorn_django_wide_events._export import otlp_wire
from tests.unit.export.wire import (
    PARENT_SPAN_ID,
    START,
    Color,
    Label,
    Ratio,
    Recorder,
    assert_encodes_like_stock,
    context,
    readable,
)

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
