"""The stock OTLP span exporters, sending requests encoded by ``otlp_wire`` instead.

Everything else stays the official exporters': endpoint, headers, compression, TLS and timeout
from the same ``OTEL_EXPORTER_OTLP_*`` variables and arguments, retries and reconnection,
exporter metrics, the HTTP request size limit, shutdown. Only the encoding step is replaced,
at the narrowest place each exporter offers:

- gRPC: the mixin calls ``self._translate_data(spans)`` and hands the result to
  ``self._client.Export``, a stub built by ``self._stub(channel)`` whenever a channel is
  (re)made. Ours returns bytes, and the stub sends them as they are.
- HTTP: ``export`` encodes inline with the stock encoder, so it is reimplemented here, line
  for line the stock one but for the encoder.

Both lean on private attributes of opentelemetry-exporter-otlp 1.45 (listed on each class);
``tests/integration/test_wire_exporters.py`` runs them against a real receiver and would show
a change in them. Each lives in a module of its own (``wire_grpc``, ``wire_http``), imported
only for the exporter the SDK was configured with.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter

from .otlp_wire import encode_spans

if TYPE_CHECKING:
    from .wire_grpc import WireGrpcSpanExporter
    from .wire_http import WireHttpSpanExporter

__all__ = [
    "EncodedSpans",
    "WireGrpcSpanExporter",
    "WireHttpSpanExporter",
    "encoded_payload",
    "takes_encoded_spans",
    "wire_exporter_for",
]


class EncodedSpans(Sequence[ReadableSpan]):
    """Spans already encoded as an ``ExportTraceServiceRequest`` (from a spool), for ``export``.

    Only their number is known (exporter metrics count it); they cannot be read back as spans.
    """

    __slots__ = ("payload", "span_count")

    def __init__(self, payload: bytes, span_count: int) -> None:
        self.payload = payload
        self.span_count = span_count

    def __len__(self) -> int:
        return self.span_count

    def __getitem__(self, index: Any) -> Any:
        raise TypeError("encoded spans cannot be read back")


def encoded_payload(spans: Sequence[ReadableSpan]) -> bytes:
    """The request both wire exporters send: spooled bytes as they are, else ``otlp_wire``'s."""
    return spans.payload if isinstance(spans, EncodedSpans) else encode_spans(spans)


# The stock classes by where they are defined, and their twins: nothing is imported for an
# exporter the SDK was not configured with.
_WIRE_EXPORTERS: Final = {
    ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter"): (
        "wire_grpc",
        "WireGrpcSpanExporter",
    ),
    ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"): (
        "wire_http",
        "WireHttpSpanExporter",
    ),
}


_WIRE_CLASSES: Final = frozenset(
    (f"{__package__}.{module}", name) for module, name in _WIRE_EXPORTERS.values()
)


def takes_encoded_spans(exporter: SpanExporter) -> bool:
    """Whether ``exporter`` is one of the wire exporters, which send ``EncodedSpans`` (a
    spool's) as they are; told by name, so that neither transport is imported to ask."""
    return _is_wire_class(type(exporter))


def spooled_exporter_index(exporter_types: Sequence[object]) -> int | None:
    """Which of the exporters a worker builds sends the spool: the first wire exporter."""
    return next(
        (
            index
            for index, kind in enumerate(exporter_types)
            if isinstance(kind, type) and _is_wire_class(kind)
        ),
        None,
    )


def _is_wire_class(kind: type) -> bool:
    return any((cls.__module__, cls.__qualname__) in _WIRE_CLASSES for cls in kind.__mro__)


def _load(module: str, name: str) -> type[SpanExporter]:
    wire_type: type[SpanExporter] = getattr(
        importlib.import_module(f".{module}", __package__), name
    )
    return wire_type


def wire_exporter_for(exporter_type: type[SpanExporter]) -> type[SpanExporter]:
    """The ``otlp_wire`` version of a stock OTLP span exporter class, else the class itself.

    Only the two stock classes themselves are replaced: a subclass of one may override what
    ours override, so it is left as the user wrote it.

    Args:
        exporter_type: a span exporter class, as the SDK configured it.

    Returns:
        ``WireGrpcSpanExporter`` or ``WireHttpSpanExporter`` for the stock gRPC or HTTP
        exporter, ``exporter_type`` for anything else.
    """
    where = _WIRE_EXPORTERS.get((exporter_type.__module__, exporter_type.__qualname__))
    if where is None:
        return exporter_type
    wire_type = _load(*where)
    return wire_type if wire_type.__mro__[1] is exporter_type else exporter_type


def __getattr__(name: str) -> Any:
    for module, wire_name in _WIRE_EXPORTERS.values():
        if name == wire_name:
            return _load(module, wire_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
