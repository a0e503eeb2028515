"""The stock OTLP/gRPC span exporter, sending requests encoded by ``otlp_wire``.

Imported only when the SDK was configured with that exporter (see ``exporters.py``): gRPC is
memory a server exporting over HTTP does not need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan

from .exporters import encoded_payload

__all__ = ["WireGrpcSpanExporter"]

#: TraceService/Export, as the generated ``TraceServiceStub`` calls it.
EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


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
        return encoded_payload(data)
