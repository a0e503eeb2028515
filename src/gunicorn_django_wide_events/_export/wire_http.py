"""The stock OTLP/HTTP (protobuf) span exporter, sending requests encoded by ``otlp_wire``.

Imported only when the SDK was configured with that exporter (see ``exporters.py``): the
``requests`` library is memory a server exporting over gRPC does not need.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from .exporters import encoded_payload

__all__ = ["WireHttpSpanExporter"]

# The stock HTTP exporter's logger: its messages, and the filters the package puts on it
# (export.quiet_exporter_loggers), apply unchanged to ours.
_http_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")


class WireHttpSpanExporter(HttpSpanExporter):
    """The stock OTLP/HTTP (protobuf) span exporter, its requests encoded by ``otlp_wire``.

    ``export`` is the stock one with ``exporters.encoded_payload(spans)`` in place of
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
                serialized_data = encoded_payload(spans)
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
