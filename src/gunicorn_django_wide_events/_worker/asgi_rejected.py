"""Events for the malformed requests gunicorn's ``asgi`` worker answers itself (400, 414, 431, 501).

The app never sees them, yet each is a request gunicorn started handling, as under the WSGI
workers (``_worker/rejected.py``). Its protocol writes those answers in one method,
``ASGIProtocol._send_error_response``, called while it handles the parser's exception: wrapped
in the worker process (``patch_asgi_protocol``), it makes the event of each answer that names
such an exception, carrying what could be read (the client, the method, the error). Its other
answers are not rejected requests: the 500 of an app that failed (its event already says so),
and the refusals of a WebSocket upgrade or of an HTTP/2 preface, which raise nothing.

uvicorn-worker answers malformed requests inside uvicorn's protocol classes with no hook of this
kind: they get no event (see the README).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_TYPE

from .._attributes import exception_attributes
from .._guard import never_raise
from .event import RequestEvent, current_event
from .http import HttpAttributes
from .metrics import RequestRecorder, no_request_metrics
from .rejected import MAX_MESSAGE_LENGTH, environ_of, method_read_before
from .slot import NoSlot, WorkerSlot, no_slot
from .span import SpanStarter

try:  # gunicorn 24+
    from gunicorn.asgi.protocol import ASGIProtocol
except ImportError:  # pragma: no cover - older gunicorn has no ASGI worker
    ASGIProtocol = None

_guard: Final = never_raise("asgi.rejected_request")
_PATCHED: Final = "__wide_events_original__"
APP_FAILURE_STATUS: Final = 500

SendErrorResponse = Callable[..., None]


class RejectedAsgiRequests:
    """Makes the event of each malformed request the protocol answers."""

    __slots__ = ("http", "metrics", "slot", "spans", "sql_max_length")

    def __init__(
        self,
        spans: SpanStarter,
        http: HttpAttributes,
        sql_max_length: int,
        slot: WorkerSlot | NoSlot = no_slot,
        *,
        metrics: RequestRecorder = no_request_metrics,
    ) -> None:
        self.metrics = metrics
        self.spans = spans
        self.http = http
        self.sql_max_length = sql_max_length
        self.slot = slot

    def answer(
        self, original: SendErrorResponse, protocol: Any, status: int, *args: Any, **kwargs: Any
    ) -> None:
        exc = sys.exc_info()[1]
        event = None
        if exc is not None and status != APP_FAILURE_STATUS:
            event = self._start(protocol, status, exc)
        token = current_event.set(event)  # what gunicorn logs now counts on it
        try:
            original(protocol, status, *args, **kwargs)
        finally:
            current_event.reset(token)
            if event is not None:
                with _guard:
                    event.end_rejected()

    def _start(self, protocol: Any, status: int, exc: BaseException) -> RequestEvent | None:
        with _guard:
            transport = getattr(protocol, "transport", None)
            peer = transport.get_extra_info("peername") if transport is not None else None
            environ = environ_of(None, peer)
            environ["REQUEST_METHOD"] = method_read_before(exc)
            method, attributes = self.http.request_attributes(environ)
            span = self.spans.start_span(method, None, attributes)
            entry = self.slot.request_started(span, method, "")  # busy, and counted
            event = RequestEvent(
                span,
                method,
                self.slot,
                entry,
                sql_max_length=self.sql_max_length,
                metrics=self.metrics,
                request_attributes=attributes,
            )
            event.status_code = status
            described = exception_attributes(
                exc, stacktrace=False, message_limit=MAX_MESSAGE_LENGTH
            )
            event.attributes[ERROR_TYPE] = described[EXCEPTION_TYPE]
            event.attributes.update(described)
            return event
        return None


def patch_asgi_protocol(rejected: RejectedAsgiRequests) -> bool:
    """Wrap ``ASGIProtocol._send_error_response`` in this worker process; False where gunicorn
    has no such method (the README's rejected requests then get no event)."""
    if ASGIProtocol is None:
        return False
    current = getattr(ASGIProtocol, "_send_error_response", None)
    if current is None:
        return False
    original: SendErrorResponse = getattr(current, _PATCHED, current)

    def _send_error_response(protocol: Any, status: int, *args: Any, **kwargs: Any) -> None:
        rejected.answer(original, protocol, status, *args, **kwargs)

    setattr(_send_error_response, _PATCHED, original)
    ASGIProtocol._send_error_response = _send_error_response
    return True
