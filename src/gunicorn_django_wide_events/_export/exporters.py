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
a change in them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from .otlp_wire import encode_spans

__all__ = ["EncodedSpans", "WireGrpcSpanExporter", "WireHttpSpanExporter", "wire_exporter_for"]

# The stock HTTP exporter's logger: its messages, and the filters the package puts on it
# (export.quiet_exporter_loggers), apply unchanged to ours.
_http_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")

#: TraceService/Export, as the generated ``TraceServiceStub`` calls it.
EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


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


def _encoded(spans: Sequence[ReadableSpan]) -> bytes:
    return spans.payload if isinstance(spans, EncodedSpans) else encode_spans(spans)


def _already_serialized(request: bytes) -> bytes:
    """The gRPC request serializer for a request that ``otlp_wire`` has already serialized."""
    return request


class _WireTraceServiceStub:
    """``TraceServiceStub`` for requests that are bytes already; built per channel by the mixin.

    Mirrors the generated stub (``trace_service_pb2_grpc``), ``_registered_method`` included,
    but with a pass-through request serializer in place of ``SerializeToString``.
    """

    def __init__(self, channel: Any) -> None:  # grpc.Channel; grpc ships no type hints
        self.Export = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=_already_serialized,
            response_deserializer=ExportTraceServiceResponse.FromString,
            _registered_method=True,
        )


class WireGrpcSpanExporter(GrpcSpanExporter):
    """The stock OTLP/gRPC span exporter, its requests encoded by ``otlp_wire``.

    Relies on the private ``OTLPExporterMixin._stub`` (the stub class, set by ``__init__``),
    ``_initialize_channel_and_stub`` (called by ``__init__`` and on reconnect) and
    ``_translate_data`` (its result is the ``request`` passed to ``Export``).
    """

    def _initialize_channel_and_stub(self) -> None:
        # Runs at the end of the mixin's __init__ (after it stored TraceServiceStub) and again
        # on every reconnect, so each channel, first or not, gets our stub.
        self._stub = _WireTraceServiceStub
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        return _encoded(data)


class WireHttpSpanExporter(HttpSpanExporter):
    """The stock OTLP/HTTP (protobuf) span exporter, its requests encoded by ``otlp_wire``.

    ``export`` is the stock one with ``otlp_wire.encode_spans(spans)`` in place of
    ``encode_spans(spans).SerializePartialToString()``. Relies on the private ``_shutdown``,
    ``_metrics`` (exporter metrics), ``_max_request_size`` and ``_client`` (the transport,
    with retries) attributes, and on ``_common._is_request_too_large``.
    """

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            _http_logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE

        with self._metrics.export_operation(len(spans)) as result:
            try:
                serialized_data = _encoded(spans)
            except Exception as error:  # reported as a failed export, like stock
                _http_logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE

            if _is_request_too_large(serialized_data, self._max_request_size):
                _http_logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                    "%d bytes.",
                    len(serialized_data),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(serialized_data)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE

            export_result = self._client.export(serialized_data)
            if not export_result.success:
                result.error = export_result.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: export_result.status_code}
                    if export_result.status_code is not None
                    else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


_WIRE_EXPORTERS: Final[dict[type[SpanExporter], type[SpanExporter]]] = {
    GrpcSpanExporter: WireGrpcSpanExporter,
    HttpSpanExporter: WireHttpSpanExporter,
}


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
    return _WIRE_EXPORTERS.get(exporter_type, exporter_type)
