"""Finished spans to an OTLP ``ExportTraceServiceRequest``, written straight as protobuf bytes.

The stock encoder (``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans``)
builds a protobuf object per attribute, event, link and span: about 4 us an attribute, so a
wide event of 40-60 attributes costs 70-150 us to encode, the exporter's throughput wall.
Writing the wire format here costs a fraction of that.

The contract is the stock encoder's output, not the ``.proto`` files: ``encode_spans(spans)``
is byte for byte ``stock_encode_spans(spans).SerializeToString(deterministic=True)``, so it
parses to an equal message. That means copying the stock encoder's quirks too: spans grouped
by resource then scope (by equality, first seen first), a link's trace_state left out, a
status always present, an attribute that cannot be encoded logged and dropped (the rest of the
span still goes), and a span field it cannot encode (negative time, id out of range, unknown
kind) raising, so the exporter reports the batch as failed as it would with the stock encoder.

Fields are written in field-number order, as upb serializes them. The encoded bytes of
attribute keys, resources and scopes are cached because they repeat in every span, and so is
each attribute key's last string, integer, boolean or non-zero float value with its encoding
(see ``_AttributeFields``): most of a wide event (method, route, view, host, status, worker,
the monitor's samples) is the same from one request to the next. The caches are bounded, since
nothing stops an application from inventing keys per request. For the SDK's own span classes,
``_attributes``, ``_events`` and ``_links`` are read instead of the properties that copy them
(see ``_sdk_span_types``: checked once at import, public otherwise).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias, TypeVar

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

__all__ = [
    "Framings",
    "SpanSnapshot",
    "encode_framed",
    "encode_snapshot",
    "encode_spans",
    "framings",
    "snapshot",
    "snapshot_of",
]

_logger = logging.getLogger(__name__)

#: Attribute keys whose encoded bytes are kept. Instrumentations use a fixed set of keys, far
#: fewer than this; past it a new key is encoded each time it occurs instead of remembered.
KEY_CACHE_SIZE: Final = 4096
#: Resource and scope objects whose encoded bytes are kept (a process has a handful).
_OBJECT_CACHE_SIZE: Final = 256

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT32_MAX: Final = (1 << 32) - 1
_TWO_TO_64: Final = 1 << 64

# Every one-byte varint (0-127) and, beyond, every byte value for building headers by index.
_BYTE: Final = tuple(bytes((value,)) for value in range(256))
_PACK_U16: Final = struct.Struct("<H").pack


def _varint(value: int) -> bytes:
    """Base-128 varint of a non-negative int (callers map negative int64 to two's complement).

    Up to five bytes (below 2**35: lengths, counts, sizes, most integers) without a loop: each
    7-bit group is shifted into its own byte, continuation bits or-ed in, and ``to_bytes`` or
    ``struct`` writes the result, about three times faster than appending byte by byte.
    """
    if value < 0x80:
        return _BYTE[value]
    if value < 0x4000:
        return _PACK_U16(value & 0x7F | (value << 1) & 0x7F00 | 0x80)
    if value < 0x200000:
        return (value & 0x7F | (value << 1) & 0x7F00 | (value << 2) & 0x7F0000 | 0x8080).to_bytes(
            3, "little"
        )
    if value < 0x800000000:
        lanes = (
            value & 0x7F
            | (value << 1) & 0x7F00
            | (value << 2) & 0x7F0000
            | (value << 3) & 0x7F000000
            | (value << 4) & 0x7F00000000
        )
        if value < 0x10000000:
            return (lanes | 0x808080).to_bytes(4, "little")
        return (lanes | 0x80808080).to_bytes(5, "little")
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    size = len(payload)
    return tag + (_BYTE[size] if size < 0x80 else _varint(size)) + payload


def _field_pieces(tag: bytes, pieces: list[bytes]) -> list[bytes]:
    """A length-delimited field as a list of pieces, the payload's left unjoined."""
    return [tag, _varint(sum(map(len, pieces))), *pieces]


class _AttributeFields:
    """How one message's ``attributes`` field (a repeated KeyValue) is written.

    ``headers``: the tag plus one-byte length for every KeyValue under 128 bytes, indexed by
    that length. ``keys``: for each key seen (the first KEY_CACHE_SIZE), its encoded key and
    its last str, int, bool or non-zero float value with that whole KeyValue's encoding. The
    tag is part of the encoding, so each message's field keeps its own.
    """

    __slots__ = ("headers", "keys", "tag")

    def __init__(self, tag: int) -> None:
        self.tag = _BYTE[tag]
        self.headers = tuple(bytes((tag, size)) for size in range(0x80))
        self.keys: dict[object, _KeyEntry] = {}

    def new_entry(self, key: object) -> _KeyEntry:
        """The entry of a key seen for the first time, remembered while there is room."""
        entry: _KeyEntry = [_key_field(key), _NO_VALUE]
        if len(self.keys) < KEY_CACHE_SIZE:
            self.keys[key] = entry
        return entry


def _utf8(text: object) -> bytes:
    """The bytes of a protobuf string field; like protobuf, take UTF-8 bytes as well as str."""
    if isinstance(text, str):
        return text.encode()
    if isinstance(text, bytes):
        text.decode()  # protobuf refuses invalid UTF-8 for a string field, so must we
        return bytes(text)
    raise TypeError(f"expected str or UTF-8 bytes, got {type(text).__name__}")


def _text_field(tag: bytes, text: object) -> bytes:
    """A string field, omitted when None or empty as proto3 omits a default value."""
    if text is None:
        return b""
    encoded = _utf8(text)
    return _field(tag, encoded) if encoded else b""


def _uint32_field(tag: bytes, value: int) -> bytes:
    """A uint32 varint field (the dropped counts), omitted when zero."""
    if not value:
        return b""
    if not 0 < value <= _UINT32_MAX:
        raise ValueError(f"Value out of range: {value}")
    return tag + _varint(value)


def _int64(value: int) -> bytes:
    """Varint of an int64: a negative value is its 64-bit two's complement, 10 bytes long."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"Value out of range: {value}")
    return _varint(value + _TWO_TO_64 if value < 0 else value)


# -- attribute values ---------------------------------------------------------------------------
#
# AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4, array_value 5,
# kvlist_value 6, bytes_value 7. KeyValue: key 1, value 2. ArrayValue and KeyValueList: values 1.

_DOUBLE_VALUE: Final = struct.Struct("<Bd")  # AnyValue body: tag 0x21, little-endian double
# KeyValue.value fields ready to append, tag and length included, for the commonest values.
_VALUE_TRUE: Final = b"\x12\x02\x10\x01"
_VALUE_FALSE: Final = b"\x12\x02\x10\x00"
_VALUE_DOUBLE: Final = struct.Struct("<BBBd")  # 0x12, 9, 0x21, double
_VALUE_SMALL_INT: Final = tuple(bytes((0x12, 2, 0x18, value)) for value in range(0x80))
# KeyValue.value of an int_value of 2, 3 or 4 varint bytes (128 to 2**28 - 1): 0x12, size + 1,
# 0x18, then the varint's bytes as little-endian unsigned ints.
_VALUE_INT2: Final = struct.Struct("<BBBH")
_VALUE_INT3: Final = struct.Struct("<BBBHB")
_VALUE_INT4: Final = struct.Struct("<BBBI")
# For a string of n < 126 bytes both lengths fit one byte: 0x12, n + 2, 0x0A, n, then the text.
_SHORT_STRING_MAX: Final = 0x80 - 3
_VALUE_STRING_HEAD: Final = tuple(
    bytes((0x12, size + 2, 0x0A, size)) for size in range(_SHORT_STRING_MAX + 1)
)
# The same for an ArrayValue item (ArrayValue.values is field 1, tag 0x0A).
_ITEM_STRING_HEAD: Final = tuple(
    bytes((0x0A, size + 2, 0x0A, size)) for size in range(_SHORT_STRING_MAX + 1)
)
# KeyValue.value holding an int_value of n varint bytes (n is 1 to 10): 0x12, n + 1, 0x18.
_VALUE_INT_HEAD: Final = tuple(bytes((0x12, size + 1, 0x18)) for size in range(11))


def _bool_any(value: bool) -> bytes:
    return b"\x10\x01" if value else b"\x10\x00"


def _str_any(value: str) -> bytes:
    return _field(b"\x0a", value.encode())


def _int_any(value: int) -> bytes:
    return b"\x18" + _int64(value)


def _float_any(value: float) -> bytes:
    return _DOUBLE_VALUE.pack(0x21, value)


def _bytes_any(value: bytes) -> bytes:
    return _field(b"\x3a", value)


def _array_any(value: Sequence[object]) -> bytes:
    return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(item)) for item in value]))


def _kvlist_any(value: Mapping[object, object]) -> bytes:
    return _field(
        b"\x32",
        b"".join([_field(b"\x0a", _key_value(str(key), item)) for key, item in value.items()]),
    )


# The stock ``_encode_value``'s isinstance tests in its order: bool before int, str and bytes
# before Sequence, so a bool is never an int_value nor a str an array.
_ANY_VALUE_ENCODERS: Final[tuple[tuple[type, Callable[[Any], bytes]], ...]] = (
    (bool, _bool_any),
    (str, _str_any),
    (int, _int_any),
    (float, _float_any),
    (bytes, _bytes_any),
    (Sequence, _array_any),
    (Mapping, _kvlist_any),
)


def _any_value(value: object) -> bytes:
    """The AnyValue body for ``value``, any value the stock ``_encode_value`` takes.

    Raises:
        TypeError: for a type the stock encoder rejects too; ``ValueError`` for an int
            outside int64; ``UnicodeError`` for text that is not valid UTF-8.
    """
    if value is None:
        return b""
    for kind, encode in _ANY_VALUE_ENCODERS:
        if isinstance(value, kind):
            return encode(value)
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _value_field(value: object) -> bytes:
    """``KeyValue.value`` for any value: tag, length, AnyValue body."""
    return _field(b"\x12", _any_value(value))


def _key_value(key: object, value: object) -> bytes:
    return _key_field(key) + _value_field(value)


_key_fields: dict[object, bytes] = {}

# [KeyValue.key field, (last value, its KeyValue's pieces)]. The pair is replaced in one store:
# two threads may encode at once (the export thread and the watchdog's timeout event).
_KeyEntry: TypeAlias = list[Any]
_NO_VALUE: Final = (object(), ())


def _key_field(key: object) -> bytes:
    """``KeyValue.key`` (tag, length, UTF-8), remembered for the first KEY_CACHE_SIZE keys."""
    field = _key_fields.get(key)
    if field is None:
        field = _text_field(b"\x0a", key)
        if len(_key_fields) < KEY_CACHE_SIZE:
            _key_fields[key] = field
    return field


def clear_key_cache() -> None:
    """Forget every remembered attribute key and value (for tests of the cache bound)."""
    _key_fields.clear()
    for fields in _ATTRIBUTE_FIELDS:
        fields.keys.clear()


def key_cache_size() -> int:
    """How many attribute keys are remembered now."""
    return len(_key_fields)


def value_cache_size() -> int:
    """How many span attribute keys have an entry (and so their last value) remembered now."""
    return len(_SPAN_ATTRIBUTES.keys)


def _as_dict(attributes: Mapping[Any, object]) -> dict[Any, Any]:
    """The attributes as a plain dict, cheaply.

    ``ReadableSpan.attributes`` is a ``MappingProxyType`` over the SDK's ``BoundedAttributes``,
    a Python ``MutableMapping``: iterating its items costs two Python calls per attribute. Its
    public ``copy()`` (which the proxy forwards) returns a copy of the dict inside, in one C call.
    """
    if type(attributes) is dict:
        return attributes
    try:
        plain = attributes.copy()  # type: ignore[attr-defined]
    except AttributeError:  # a Mapping without copy(), or a proxy over one
        plain = None
    return plain if type(plain) is dict else dict(attributes.items())


def _array_field(items: Sequence[object]) -> bytes:
    """``KeyValue.value`` of a tuple or list: an ArrayValue, its short strings without calls."""
    item_head = _ITEM_STRING_HEAD
    parts: list[bytes] = []
    for item in items:
        if type(item) is str:
            text = item.encode()
            size = len(text)
            if size <= _SHORT_STRING_MAX:
                parts += (item_head[size], text)
                continue
        parts.append(_field(b"\x0a", _any_value(item)))
    return _field(b"\x12", _field(b"\x2a", b"".join(parts)))


def _int_field(value: int) -> bytes:
    """``KeyValue.value`` of an int; below 2**28 (sizes, pids, ages) as one ``struct`` call.

    Each 7-bit group is shifted into its own byte and the continuation bits or-ed in.
    """
    if 0 <= value < 0x10000000:
        low = value & 0x7F | (value << 1) & 0x7F00 | 0x80  # two bytes, the first continued
        if value < 0x4000:
            return _VALUE_SMALL_INT[value] if value < 0x80 else _VALUE_INT2.pack(0x12, 3, 0x18, low)
        if value < 0x200000:
            return _VALUE_INT3.pack(0x12, 4, 0x18, low | 0x8000, value >> 14)
        high = (value << 2) & 0x7F0000 | (value << 3) & 0x7F000000 | 0x808000
        return _VALUE_INT4.pack(0x12, 5, 0x18, low | high)
    number = _varint(value) if 0 <= value <= _INT64_MAX else _int64(value)
    return _VALUE_INT_HEAD[len(number)] + number


def _long_string_pieces(tag: bytes, key_field: bytes, text: bytes) -> tuple[bytes, ...]:
    """A string attribute too long for one-byte lengths, in pieces so the text is not copied."""
    if len(text) <= _SHORT_STRING_MAX:  # only the KeyValue's length takes two bytes or more
        length = len(key_field) + len(text) + 4
        return (tag, _varint(length), key_field, _VALUE_STRING_HEAD[len(text)], text)
    size = _varint(len(text))
    any_size = _varint(1 + len(size) + len(text))
    length = len(key_field) + 2 + len(any_size) + len(size) + len(text)
    return (tag, _varint(length), key_field, b"\x12", any_size, b"\x0a", size, text)


# ``KeyValue.value`` encoders by exact type for what the hot loop does not inline. Anything
# else, subclasses included, takes the stock encoder's isinstance route.
_VALUE_FIELD_ENCODERS: Final[dict[type, Callable[[Any], bytes]]] = {
    int: _int_field,
    tuple: _array_field,
    list: _array_field,
}


# Values remembered with their encoding are immutable and equal only to themselves within their
# type: values of these types, and floats other than zero (0.0 == -0.0, yet they encode
# differently; a NaN is never equal to the last one, so it is never reused). Floats repeat where
# they come from the monitor's samples, which stay the same for a whole interval.
_REPEATABLE_TYPES: Final = frozenset((str, int, bool))


def _append_attributes(
    parts: list[bytes], fields: _AttributeFields, attributes: Mapping[Any, object] | None
) -> None:
    """Append one ``fields`` entry (tag, length, KeyValue) per attribute to ``parts``.

    This is the hot loop: the keys' entries are looked up in one ``map``, a value seen last
    time for the same key reuses its encoding (the same object often: a constant, a small int,
    the monitor's samples), a string (most attributes) is encoded inline, and pieces are
    appended for one ``b"".join`` to copy rather than concatenated here. An attribute that
    cannot be encoded is logged and skipped, as the stock encoder does; each attribute is
    appended whole or not at all, so a failure leaves nothing half-written.
    """
    if not attributes:
        return
    string_head = _VALUE_STRING_HEAD
    headers = fields.headers
    plain = _as_dict(attributes)
    pieces: tuple[bytes, ...]
    for key, value, known in zip(plain, plain.values(), map(fields.keys.get, plain), strict=True):
        try:
            if known is not None:
                last_value, last_pieces = known[1]
                # Only repeatable values are kept (see _REPEATABLE_TYPES), so the same object
                # is the same value; an equal one must be of the same type too (1 == True).
                if last_value is value or (type(last_value) is type(value) and last_value == value):
                    parts += last_pieces
                    continue
            entry = known or fields.new_entry(key)
            key_field = entry[0]
            value_type = type(value)
            if value_type is str:
                text = value.encode()
                length = len(key_field) + len(text) + 4
                # Under 128 the text is short too and every length fits one byte.
                if length >= 0x80:
                    parts += _long_string_pieces(fields.tag, key_field, text)
                    continue
                pieces = (headers[length], key_field, string_head[len(text)], text)
            else:
                if value_type is float:
                    value_field = _VALUE_DOUBLE.pack(0x12, 9, 0x21, value)
                elif value_type is bool:
                    value_field = _VALUE_TRUE if value else _VALUE_FALSE
                else:
                    value_field = _VALUE_FIELD_ENCODERS.get(value_type, _value_field)(value)
                length = len(key_field) + len(value_field)
                pieces = (
                    (headers[length], key_field, value_field)
                    if length < 0x80
                    else (fields.tag, _varint(length), key_field, value_field)
                )
            parts += pieces
            if value_type in _REPEATABLE_TYPES or (value_type is float and value):
                entry[1] = (value, pieces)
        except Exception:  # the stock encoder drops the attribute and logs it, so do we
            _logger.exception("Failed to encode key %s", key)


# -- spans ---------------------------------------------------------------------------------------
#
# Span: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5, kind 6,
# start_time_unix_nano 7 (fixed64), end_time_unix_nano 8 (fixed64), attributes 9,
# dropped_attributes_count 10, events 11, dropped_events_count 12, links 13,
# dropped_links_count 14, status 15, flags 16 (fixed32).

_SPAN_ATTRIBUTES: Final = _AttributeFields(0x4A)
_EVENT_ATTRIBUTES: Final = _AttributeFields(0x1A)  # Span.Event.attributes is field 3
_LINK_ATTRIBUTES: Final = _AttributeFields(0x22)  # Span.Link.attributes is field 4
_SCOPE_ATTRIBUTES: Final = _AttributeFields(0x1A)  # InstrumentationScope.attributes is field 3
_RESOURCE_ATTRIBUTES: Final = _AttributeFields(0x0A)  # Resource.attributes is field 1
_ATTRIBUTE_FIELDS: Final = (
    _SPAN_ATTRIBUTES,
    _EVENT_ATTRIBUTES,
    _LINK_ATTRIBUTES,
    _SCOPE_ATTRIBUTES,
    _RESOURCE_ATTRIBUTES,
)

_IDS: Final = struct.Struct(">BBQQBBQ")  # trace_id (16 bytes, two halves) and span_id
_PARENT_ID: Final = struct.Struct(">BBQ")
_START_AND_END: Final = struct.Struct("<BQBQ")
_FIXED64_FIELD: Final = struct.Struct("<BQ")
_MASK64: Final = (1 << 64) - 1

_KIND_FIELDS: Final[dict[SpanKind, bytes]] = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
# Enum members hash in Python; their ids are fixed, and a dict of ints is twice as fast.
_KIND_FIELDS_BY_ID: Final = {id(kind): field for kind, field in _KIND_FIELDS.items()}

# SpanFlags: the context-has-is-remote bit (0x100), always set, plus is-remote (0x200).
_SPAN_FLAGS_LOCAL: Final = b"\x85\x01\x00\x01\x00\x00"
_SPAN_FLAGS_REMOTE: Final = b"\x85\x01\x00\x03\x00\x00"
_LINK_FLAGS_LOCAL: Final = b"\x35\x00\x01\x00\x00"
_LINK_FLAGS_REMOTE: Final = b"\x35\x00\x03\x00\x00"

# Status: message 2, code 3. The stock encoder always sets it, so an UNSET one is `7A 00`.
_STATUS_FIELDS_BY_ID: Final = {
    id(StatusCode.UNSET): b"\x7a\x00",
    id(StatusCode.OK): b"\x7a\x02\x18\x01",
    id(StatusCode.ERROR): b"\x7a\x02\x18\x02",
}


def _status_field(status: Status | None) -> bytes:
    if status is None:
        return b""
    code = status.status_code
    description = status.description
    if not description:
        field = _STATUS_FIELDS_BY_ID.get(id(code))
        if field is not None:
            return field
    value = code.value
    code_field = b"\x18" + _int64(value) if value else b""
    return _field(b"\x7a", _text_field(b"\x12", description) + code_field)


def _sdk_span_types() -> frozenset[type]:
    """The span classes whose properties return private fields, read here directly.

    ``ReadableSpan.events`` and ``.links`` copy the SDK's locked ``BoundedList`` into a tuple,
    0.3 us each, though nearly every span has neither, and ``.attributes`` wraps the
    ``BoundedAttributes`` in a new ``MappingProxyType``. For the SDK's own classes the private
    fields answer without the copies. Should an SDK release lay them out differently, the set
    is empty and every span goes through the public properties, which costs only that time.
    """
    event = Event("probe", None, 0)
    context = SpanContext(1, 2, is_remote=False)
    status = Status(StatusCode.OK)
    probe = ReadableSpan(
        "probe",
        context=context,
        parent=context,
        resource=Resource.get_empty(),
        attributes={"probe": 1},
        events=[event],
        kind=SpanKind.CLIENT,
        status=status,
        start_time=3,
        end_time=4,
    )
    fields = ("_name", "_context", "_parent", "_kind", "_status", "_start_time", "_end_time")
    if (
        getattr(probe, "_attributes", None) == {"probe": 1}
        and list(getattr(probe, "_events", ())) == [event]
        and list(getattr(probe, "_links", (event,))) == []
        and [getattr(probe, field, None) for field in fields]
        == ["probe", context, context, SpanKind.CLIENT, status, 3, 4]
    ):
        return frozenset((ReadableSpan, SdkSpan))
    return frozenset()


_SDK_SPAN_TYPES: Final = _sdk_span_types()

SpanSnapshot: TypeAlias = tuple[Any, ...]
"""A span as plain values, what ``encode_snapshot`` writes (see ``snapshot``)."""


def snapshot(span: ReadableSpan) -> SpanSnapshot:
    """What the encoder needs of ``span``, as plain values (see ``snapshot_of``).

    Raises:
        Exception: for a span without a context or of an unknown kind, as the stock encoder.
    """
    if type(span) in _SDK_SPAN_TYPES:
        return snapshot_of(
            span._context,
            span._parent,
            span._name,
            span._kind,
            (span._start_time, span._end_time),
            (span._attributes, span.dropped_attributes),
            (span._events, span.dropped_events),
            (span._links, span.dropped_links),
            span._status,
        )
    return snapshot_of(
        span.get_span_context(),
        span.parent,
        span.name,
        span.kind,
        (span.start_time, span.end_time),
        (span.attributes, span.dropped_attributes),
        (span.events, span.dropped_events),
        (span.links, span.dropped_links),
        span.status,
    )


def snapshot_of(  # noqa: PLR0917 (a span's fields, in the order of the message)
    context: SpanContext | None,
    parent: SpanContext | None,
    name: object,
    kind: SpanKind,
    times: tuple[int | None, int | None],
    attributes: tuple[Mapping[Any, object] | None, int],
    events: tuple[Sequence[Event] | None, int],
    links: tuple[Sequence[Link] | None, int],
    status: Status | None,
) -> SpanSnapshot:
    """A span's fields as plain values, nothing encoded yet but its kind and status.

    In order: trace id, span id, trace state (``key=value,...``, empty for none), parent span
    id (None for a root), whether the parent is remote, name, kind field, start and end
    times, attributes (a dict, or None), dropped attributes, events as (time, name,
    attributes, dropped count), dropped events, links as (trace id, span id, is remote,
    attributes, dropped count), dropped links, status field. Once its attribute values are
    plain, ``marshal`` writes it as it is: that is how the spool keeps a span until it is
    sent (``spooled.py``). ``attributes``, ``events`` and ``links`` each come with their
    dropped count.

    Raises:
        Exception: for a span without a context or of an unknown kind, as the stock encoder.
    """
    if context is None:
        raise ValueError("span has no span context")
    trace_state = context.trace_state
    attribute_values, dropped_attributes = attributes
    event_list, dropped_events = events
    link_list, dropped_links = links
    return (
        context.trace_id,
        context.span_id,
        ",".join([f"{key}={value}" for key, value in trace_state.items()]) if trace_state else "",
        parent.span_id if parent else None,
        bool(parent and parent.is_remote),
        name,
        _KIND_FIELDS_BY_ID.get(id(kind)) or _KIND_FIELDS[kind],
        *times,
        _as_dict(attribute_values) if attribute_values else None,
        dropped_attributes,
        tuple(map(_event_values, event_list)) if event_list else (),
        dropped_events,
        tuple(map(_link_values, link_list)) if link_list else (),
        dropped_links,
        _status_field(status),
    )


def _event_values(event: Event) -> tuple[Any, ...]:
    attributes = event.attributes
    return (
        event.timestamp,
        event.name,
        _as_dict(attributes) if attributes else None,
        event.dropped_attributes,
    )


def _link_values(link: Link) -> tuple[Any, ...]:
    context = link.context
    attributes = link.attributes
    return (
        context.trace_id,
        context.span_id,
        bool(context.is_remote),
        _as_dict(attributes) if attributes else None,
        link.dropped_attributes,
    )


def _event_field(event: tuple[Any, ...]) -> bytes:
    """Span.Event: time_unix_nano 1 (fixed64), name 2, attributes 3, dropped count 4."""
    timestamp, name, attributes, dropped = event
    parts = [_FIXED64_FIELD.pack(0x09, timestamp) if timestamp else b""]
    parts.append(_text_field(b"\x12", name))
    _append_attributes(parts, _EVENT_ATTRIBUTES, attributes)
    parts.append(_uint32_field(b"\x20", dropped))
    return _field(b"\x5a", b"".join(parts))


def _link_field(link: tuple[Any, ...]) -> bytes:
    """Span.Link: ids 1-2, attributes 4, dropped count 5, flags 6; no trace_state, like stock."""
    trace_id, span_id, is_remote, attributes, dropped = link
    parts = [_IDS.pack(0x0A, 16, trace_id >> 64, trace_id & _MASK64, 0x12, 8, span_id)]
    _append_attributes(parts, _LINK_ATTRIBUTES, attributes)
    parts.append(_uint32_field(b"\x28", dropped))
    parts.append(_LINK_FLAGS_REMOTE if is_remote else _LINK_FLAGS_LOCAL)
    return _field(b"\x6a", b"".join(parts))


def encode_snapshot(span: SpanSnapshot, parts: list[bytes]) -> None:
    """Append ``ScopeSpans.spans`` field (tag 0x12, length, Span) for ``span`` to ``parts``.

    Raises:
        Exception: for a field the stock encoder cannot encode either (a negative time, an
            id out of range, a name that is not text).
    """
    (
        trace_id,
        span_id,
        trace_state,
        parent_id,
        parent_is_remote,
        name,
        kind_field,
        start,
        end,
        attributes,
        dropped_attributes,
        events,
        dropped_events,
        links,
        dropped_links,
        status_field,
    ) = span
    body = [_IDS.pack(0x0A, 16, trace_id >> 64, trace_id & _MASK64, 0x12, 8, span_id)]
    if trace_state:
        body.append(_text_field(b"\x1a", trace_state))
    if parent_id is not None:
        body.append(_PARENT_ID.pack(0x22, 8, parent_id))
    if name:
        name_bytes = name.encode() if type(name) is str else _utf8(name)
        size = len(name_bytes)
        body += (b"\x2a", _BYTE[size] if size < 0x80 else _varint(size), name_bytes)
    body.append(kind_field)
    if start and end:
        body.append(_START_AND_END.pack(0x39, start, 0x41, end))
    else:
        if start:
            body.append(_FIXED64_FIELD.pack(0x39, start))
        if end:
            body.append(_FIXED64_FIELD.pack(0x41, end))
    _append_attributes(body, _SPAN_ATTRIBUTES, attributes)
    if dropped_attributes:
        body.append(_uint32_field(b"\x50", dropped_attributes))
    if events:
        body += [_event_field(event) for event in events]
    if dropped_events:
        body.append(_uint32_field(b"\x60", dropped_events))
    if links:
        body += [_link_field(link) for link in links]
    if dropped_links:
        body.append(_uint32_field(b"\x70", dropped_links))
    body.append(status_field)
    body.append(_SPAN_FLAGS_REMOTE if parent_is_remote else _SPAN_FLAGS_LOCAL)
    encoded = b"".join(body)
    size = len(encoded)
    parts += (b"\x12", _BYTE[size] if size < 0x80 else _varint(size), encoded)


# -- resources and scopes ------------------------------------------------------------------------
#
# ResourceSpans: resource 1, scope_spans 2, schema_url 3. Resource: attributes 1.
# ScopeSpans: scope 1, spans 2, schema_url 3. InstrumentationScope: name 1, version 2,
# attributes 3. Each is cached as (what goes before the spans, what goes after them).

_Framing: TypeAlias = tuple[bytes, bytes]
_Item = TypeVar("_Item")
_resource_framings: dict[int, tuple[Resource, _Framing]] = {}
_scope_framings: dict[int, tuple[InstrumentationScope | None, _Framing]] = {}


def _resource_framing(resource: Resource) -> _Framing:
    parts: list[bytes] = []
    _append_attributes(parts, _RESOURCE_ATTRIBUTES, resource.attributes)
    return _field(b"\x0a", b"".join(parts)), _text_field(b"\x1a", resource.schema_url)


def _scope_framing(scope: InstrumentationScope | None) -> _Framing:
    if scope is None:
        return b"\x0a\x00", b""
    parts = [_text_field(b"\x0a", scope.name), _text_field(b"\x12", scope.version)]
    _append_attributes(parts, _SCOPE_ATTRIBUTES, scope.attributes)
    return _field(b"\x0a", b"".join(parts)), _text_field(b"\x1a", scope.schema_url)


def _cached(
    cache: dict[int, tuple[_Item, _Framing]], item: _Item, encode: Callable[[_Item], _Framing]
) -> _Framing:
    """``encode(item)``, remembered by identity: resources and scopes are immutable.

    By identity, not equality: two equal resources may still differ in attribute order or
    in ``1`` versus ``True``, and each must be encoded as itself. The cache keeps the object,
    so its id cannot be reused by another while the entry exists.
    """
    entry = cache.get(id(item))
    if entry is not None:
        return entry[1]
    framing = encode(item)
    if len(cache) < _OBJECT_CACHE_SIZE:
        cache[id(item)] = (item, framing)
    return framing


# -- the request ---------------------------------------------------------------------------------


_NOTHING: Final = object()  # what the previous span's resource and scope are before the first


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """Serialize ``spans`` as an OTLP ``ExportTraceServiceRequest``.

    Args:
        spans: finished spans, of any resources and instrumentation scopes.

    Returns:
        The request's protobuf bytes, identical to the stock encoder's message serialized
        with ``SerializeToString(deterministic=True)``.

    Raises:
        Exception: where the stock encoder raises (a span field it cannot encode), so the
            exporter fails the batch the same way. Bad attributes are logged and dropped.
    """
    # One resource and scope object is the common case (always so for a worker spooling one
    # span at a time): then no grouping, and so no Resource.__hash__, which serializes the
    # resource's attributes to JSON at every call (tens of microseconds).
    first_resource = spans[0].resource if spans else None
    first_scope = (spans[0].instrumentation_scope or None) if spans else None
    if first_resource is not None and all(
        span.resource is first_resource and (span.instrumentation_scope or None) is first_scope
        for span in spans
    ):
        pieces: list[bytes] = []
        for span in spans:
            encode_snapshot(snapshot(span), pieces)
        return b"".join(_resource_spans(first_resource, [(first_scope, pieces)]))

    # Resource -> scope -> encoded spans, grouped by equality in first-seen order as the stock
    # encoder does. Resource.__hash__ serializes its attributes to JSON, so each distinct
    # (resource, scope) pair of objects is looked up by equality only once, then by identity.
    groups: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    by_identity: dict[tuple[int, int], tuple[Resource, object, list[bytes]]] = {}
    last_resource: object = _NOTHING
    last_scope: object = _NOTHING
    encoded_spans: list[bytes] = []
    for span in spans:
        resource = span.resource
        scope = span.instrumentation_scope or None
        if resource is not last_resource or scope is not last_scope:
            entry = by_identity.get((id(resource), id(scope)))
            if entry is None:
                scopes = groups.setdefault(resource, {})
                entry = (resource, scope, scopes.setdefault(scope, []))
                # The entry holds both objects, so no other object can take their ids meanwhile.
                by_identity[id(resource), id(scope)] = entry
            last_resource, last_scope, encoded_spans = entry
        encode_snapshot(snapshot(span), encoded_spans)

    request: list[bytes] = []
    for resource, scopes in groups.items():
        request += _resource_spans(resource, list(scopes.items()))
    return b"".join(request)


def _resource_spans(
    resource: Resource, scopes: list[tuple[InstrumentationScope | None, list[bytes]]]
) -> list[bytes]:
    """One ResourceSpans field, in pieces: joined once by the caller, since joining each level
    would copy every span once per level, and a batch is large enough (hundreds of kB) for
    each copy to be a fresh mmap and page faults."""
    return _framed_resource_spans(
        _cached(_resource_framings, resource, _resource_framing),
        [(_cached(_scope_framings, scope, _scope_framing), pieces) for scope, pieces in scopes],
    )


def _framed_resource_spans(
    resource: _Framing, scopes: Sequence[tuple[_Framing, list[bytes]]]
) -> list[bytes]:
    resource_head, resource_tail = resource
    resource_spans = [resource_head]
    for (scope_head, scope_tail), pieces in scopes:
        resource_spans += _field_pieces(b"\x12", [scope_head, *pieces, scope_tail])
    resource_spans.append(resource_tail)
    return _field_pieces(b"\x0a", resource_spans)


Framings: TypeAlias = tuple[bytes, bytes, bytes, bytes]
"""A resource and a scope encoded: what goes before and after the spans of each."""


# The last pair asked for, with its framings (one store replaces it: threads share it).
_last_framings: tuple[object, object, Framings] = (_NOTHING, _NOTHING, (b"", b"", b"", b""))


def framings(resource: Resource, scope: InstrumentationScope | None) -> Framings:
    """The encoded ``resource`` and ``scope`` that spans of theirs are written between."""
    global _last_framings  # noqa: PLW0603 (a one-entry cache)
    last_resource, last_scope, last = _last_framings
    if resource is last_resource and scope is last_scope:
        return last
    found = (
        *_cached(_resource_framings, resource, _resource_framing),
        *_cached(_scope_framings, scope or None, _scope_framing),
    )
    _last_framings = (resource, scope, found)
    return found


def encode_framed(spans: Mapping[Framings, list[bytes]]) -> bytes:
    """An ``ExportTraceServiceRequest`` of spans already encoded (``encode_snapshot``), by the
    resource and scope they were written between, grouped as ``encode_spans`` groups them."""
    resources: dict[_Framing, list[tuple[_Framing, list[bytes]]]] = {}
    for (resource_head, resource_tail, scope_head, scope_tail), pieces in spans.items():
        scopes = resources.setdefault((resource_head, resource_tail), [])
        scopes.append(((scope_head, scope_tail), pieces))
    request: list[bytes] = []
    for resource, scopes in resources.items():
        request += _framed_resource_spans(resource, scopes)
    return b"".join(request)
