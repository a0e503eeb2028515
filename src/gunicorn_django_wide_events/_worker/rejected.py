"""Events for requests that gunicorn answers itself, before or instead of the app.

An invalid request line (400), headers over gunicorn's limits (431), a URI too long (414): the
app never sees these, yet each one is a request gunicorn started handling and gets its event,
carrying what could be parsed. ``Worker.handle_error`` is where gunicorn writes those answers;
the status code is read from the one place gunicorn sends it, ``gunicorn.util.write_error``
(patched in ``_gunicorn.py`` to call ``note_error_status``).

``handle_error`` writes an access log line of its own when the request line could be parsed
(``req`` is known: headers it refuses, an app exception it answers with its 500), with an
environ it builds itself from ``default_environ``; that call is patched to ``add_event_ids``,
so ``%({wide_events.trace_id}e)s`` prints the ids of the event of that answer. A request line
it cannot parse, or headers over its limits (431, 414), get no access log line at all. While
gunicorn answers, the rejected event is the current one: what gunicorn logs then (its "Invalid
request" warning) counts on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Final

from gunicorn.http.errors import LimitRequestLine
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_TYPE
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY

from .._attributes import ENVIRON_SPAN_ID, ENVIRON_TRACE_ID, exception_attributes
from .._guard import never_raise
from .event import RequestEvent, current_event, exception_left_to_gunicorn
from .http import HttpAttributes
from .metrics import RequestRecorder, no_request_metrics
from .slot import NoSlot, WorkerSlot, no_slot
from .span import SpanStarter

_answered_event: ContextVar[RequestEvent | None] = ContextVar(
    "gunicorn_django_wide_events.answered_event", default=None
)
"""The event of the request gunicorn's ``handle_error`` is answering: rejected, or the app's."""
_guard: Final = never_raise("gunicorn.handle_error")
_environ_guard: Final = never_raise("gunicorn.default_environ")

# gunicorn puts the offending bytes in some messages: keep them short on the event.
MAX_MESSAGE_LENGTH: Final = 256
# A method is an HTTP token (RFC 9110), far shorter than this.
_METHOD: Final = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}) ")


def method_read_before(exc: BaseException) -> str:
    """The method of a request line gunicorn gave up reading (414): no ``req`` is left then,
    but the bytes it read are still in its parser's frames (``data`` or ``buf``)."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frame_locals = tb.tb_frame.f_locals
        for name in ("data", "buf"):
            read = frame_locals.get(name)
            if isinstance(read, (bytes, bytearray)):
                match = _METHOD.match(bytes(read[:24]).lstrip(b"\r\n"))
                if match:
                    return match.group(1).decode("ascii")
        tb = tb.tb_next
    return ""


def note_error_status(status_int: int) -> None:
    """gunicorn writes an error answer: the rejected request's event takes its status."""
    event = _answered_event.get()
    if event is not None and not event.finished:  # the app's event already says 500
        event.status_code = status_int


def add_event_ids(environ: dict[str, Any]) -> None:
    """The environ of gunicorn's own access log line gets the answered event's ids."""
    with _environ_guard:
        event = _answered_event.get()
        if event is not None:
            environ[ENVIRON_TRACE_ID] = event.trace_id_hex
            environ[ENVIRON_SPAN_ID] = event.span_id_hex


def environ_of(req: Any, addr: Any) -> dict[str, Any]:
    """A WSGI-like environ from whatever gunicorn managed to parse (``req`` may be None)."""
    environ: dict[str, Any] = {}
    if isinstance(addr, tuple) and len(addr) >= 2:
        environ["REMOTE_ADDR"] = str(addr[0])
        environ["REMOTE_PORT"] = str(addr[1])
    if req is None:
        return environ
    environ["REQUEST_METHOD"] = getattr(req, "method", None) or ""
    environ["RAW_URI"] = getattr(req, "uri", None) or ""
    version = getattr(req, "version", None)
    if isinstance(version, tuple) and len(version) == 2:
        environ["SERVER_PROTOCOL"] = f"HTTP/{version[0]}.{version[1]}"
    environ["wsgi.url_scheme"] = getattr(req, "scheme", None) or "http"
    for name, value in getattr(req, "headers", None) or ():
        key = name.upper().replace("-", "_")
        # As in gunicorn's own environ: these two go without the HTTP_ prefix (PEP 3333).
        environ[key if key in ("CONTENT_LENGTH", "CONTENT_TYPE") else "HTTP_" + key] = value
    return environ


class RejectedRequests:
    """Replaces a worker's ``handle_error`` so that every answer it writes is an event."""

    __slots__ = ("http", "metrics", "original", "slot", "spans", "sql_max_length")

    def __init__(
        self,
        original: Callable[[Any, Any, Any, BaseException], None],
        spans: SpanStarter,
        http: HttpAttributes,
        sql_max_length: int,
        slot: WorkerSlot | NoSlot = no_slot,
        *,
        metrics: RequestRecorder = no_request_metrics,
    ) -> None:
        self.original = original
        self.metrics = metrics
        self.spans = spans
        self.http = http
        self.sql_max_length = sql_max_length
        self.slot = slot

    def __call__(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        left = exception_left_to_gunicorn.get()
        if left is not None and exc is left[0]:
            # The app raised before sending anything: its event already says 500.
            exception_left_to_gunicorn.set(None)
            token = _answered_event.set(left[1])
            try:
                self.original(req, client, addr, exc)
            finally:
                _answered_event.reset(token)
            return
        event = self._start(req, addr, exc)
        token = _answered_event.set(event)
        current_token = current_event.set(event)
        try:
            self.original(req, client, addr, exc)
        finally:
            current_event.reset(current_token)
            _answered_event.reset(token)
            if event is not None:
                with _guard:
                    event.end_rejected()

    def _start(self, req: Any, addr: Any, exc: BaseException) -> RequestEvent | None:
        with _guard:
            environ = environ_of(req, addr)
            if req is None and isinstance(exc, LimitRequestLine):
                environ["REQUEST_METHOD"] = method_read_before(exc)
            method, attributes = self.http.request_attributes(environ)
            span = self.spans.start_span(method, None, attributes)
            # A request gunicorn started handling: busy, and counted, like any other.
            entry = self.slot.request_started(
                span, method, str(attributes.get(URL_PATH, "")), str(attributes.get(URL_QUERY, ""))
            )
            event = RequestEvent(
                span,
                method,
                self.slot,
                entry,
                sql_max_length=self.sql_max_length,
                metrics=self.metrics,
                request_attributes=attributes,
            )
            described = exception_attributes(
                exc, stacktrace=False, message_limit=MAX_MESSAGE_LENGTH
            )
            event.attributes[ERROR_TYPE] = described[EXCEPTION_TYPE]
            event.attributes.update(described)
            return event
        return None
