"""otlp_wire.encode_spans on attributes: every value type, length and key shape, as stock does.

Each test builds real SDK spans, encodes them with both encoders and compares the two with
wire.assert_encodes_like_stock: the same message, and byte for byte its deterministic encoding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import SpanLimits

from tests.unit.export.wire import (
    Color,
    Label,
    Ratio,
    Recorder,
    assert_encodes_like_stock,
    readable,
)


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
