"""The spool's records: a span kept as plain values until it is sent, encoded then, in a batch.

A record is ``marshal.dumps((framings, (snapshot,)))``: the encoded resource and scope of the
span (``otlp_wire.framings``) and the span's ``otlp_wire.snapshot``. Not the span's OTLP bytes:
encoding its attributes is most of the encoder's work, and in the request's thread, whose
caches Django's code has just filled, it costs two to three times what it costs in the export
thread's batch (docs/durability.md, Cost). ``marshal`` writes the same values in C, in a few
microseconds, and the export thread, or the master for a dead worker, encodes a whole batch
of records into one OTLP request.

Every process that reads a spool is a fork of the master that made the board, so ``marshal``'s
format is the same one throughout.
"""

from __future__ import annotations

import marshal
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .._guard import log_once
from .otlp_wire import Framings, SpanSnapshot, encode_framed, encode_snapshot, framings, snapshot

_PLAIN_TYPES: Final = frozenset((str, int, float, bool, bytes))
# The snapshot's attribute dicts: the span's own (9), and those within its events and links.
_ATTRIBUTES_AT: Final = 9
_EVENTS_AT: Final = 11
_LINKS_AT: Final = 13
_EVENT_ATTRIBUTES_AT: Final = 2
_LINK_ATTRIBUTES_AT: Final = 3
_NAME_AT: Final = 5


def record_of(span: ReadableSpan) -> bytes:
    """The spool record of ``span``.

    Raises:
        Exception: for a span the encoder would refuse (no context, an unknown kind).
    """
    return record_of_snapshot(snapshot(span), span.resource, span.instrumentation_scope)


def record_of_snapshot(
    span: SpanSnapshot, resource: Resource, scope: InstrumentationScope | None
) -> bytes:
    """The spool record of a span's ``otlp_wire.snapshot_of``, of ``resource`` and ``scope``."""
    record = (framings(resource, scope), (span,))
    try:
        return marshal.dumps(record)
    except ValueError:  # a value marshal does not take: an Enum, a str subclass, an object
        frame, spans = record
        return marshal.dumps((frame, tuple(map(_plain_snapshot, spans))))


def encoded_request(records: Iterable[bytes | memoryview]) -> tuple[bytes, int]:
    """The OTLP request of ``records``' spans, and how many spans it holds.

    A record that cannot be read or encoded (a negative time, an id out of range) is logged
    and left out, so that it cannot fail every batch it is part of, again and again.
    """
    spans: dict[Framings, list[bytes]] = {}
    count = 0
    for record in records:
        try:
            frame, snapshots = marshal.loads(record)  # noqa: S302 (the board's, written by us)
            pieces: list[bytes] = []
            for span in snapshots:
                encode_snapshot(span, pieces)
        except Exception:
            log_once(
                "spool.record",
                "gunicorn-django-wide-events: a spooled span could not be encoded; dropped",
                exc_info=True,
            )
            continue
        spans.setdefault(frame, []).extend(pieces)
        count += len(snapshots)
    return encode_framed(spans), count


def span_ids(record: bytes) -> list[int]:
    """The span ids in ``record`` (none if it cannot be read)."""
    try:
        _, snapshots = marshal.loads(record)  # noqa: S302 (the board's, written by us)
        return [int(span[1]) for span in snapshots]
    except Exception:
        return []


# -- values marshal does not take ---------------------------------------------------------------


def _plain_snapshot(span: SpanSnapshot) -> SpanSnapshot:
    """``span`` with its name and every attribute value as the encoder would write them, in
    types ``marshal`` takes; a value the encoder would drop is dropped here."""
    plain = list(span)
    plain[_NAME_AT] = _plain_value(plain[_NAME_AT])
    plain[_ATTRIBUTES_AT] = _plain_attributes(plain[_ATTRIBUTES_AT])
    plain[_EVENTS_AT] = tuple(
        _with_plain_attributes(event, _EVENT_ATTRIBUTES_AT) for event in plain[_EVENTS_AT]
    )
    plain[_LINKS_AT] = tuple(
        _with_plain_attributes(link, _LINK_ATTRIBUTES_AT) for link in plain[_LINKS_AT]
    )
    return tuple(plain)


def _with_plain_attributes(values: tuple[Any, ...], at: int) -> tuple[Any, ...]:
    return (*values[:at], _plain_attributes(values[at]), *values[at + 1 :])


def _plain_attributes(attributes: Mapping[Any, Any] | None) -> dict[Any, Any] | None:
    if attributes is None:
        return None
    plain = {}
    for key, value in attributes.items():
        try:
            plain[_plain_value(key)] = _plain_value(value)
        except TypeError:
            log_once(
                "spool.attribute",
                "gunicorn-django-wide-events: an attribute %r of type %s cannot be exported; "
                "dropped",
                key,
                type(value).__name__,
            )
    return plain


# The encoder's isinstance order (bool before int, str and bytes before sequences), and how
# each makes an instance of a subclass its own type without calling the subclass's methods.
_PLAIN_OF: Final[tuple[tuple[type, Callable[[Any], Any]], ...]] = (
    (bool, bool),
    (str, str.__str__),
    (int, int.__int__),
    (float, float.__float__),
    (bytes, lambda value: bytes(memoryview(value))),
    (Sequence, lambda value: tuple(map(_plain_value, value))),
    (Mapping, lambda value: {str(key): _plain_value(item) for key, item in value.items()}),
)


def _plain_value(value: Any) -> Any:
    """``value`` in the type the encoder writes it as.

    Raises:
        TypeError: for a value of no such type, which the encoder drops too.
    """
    if value is None or type(value) in _PLAIN_TYPES:
        return value
    for kind, plain in _PLAIN_OF:
        if isinstance(value, kind):
            return plain(value)
    raise TypeError(f"Invalid type {type(value)} of value {value}")
