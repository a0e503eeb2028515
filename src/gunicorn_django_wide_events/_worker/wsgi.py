"""The request path: one wide event per request, from the WSGI call to the last byte sent.

``WideEventsMiddleware`` wraps the worker's WSGI application (it is installed by the
``post_worker_init`` hook, so the user's Django settings and middleware list stay untouched).
The span becomes current for the whole request, streaming included, so that attributes set with
the plain OpenTelemetry API land on it and other instrumentations' spans become its children.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextvars import Token
from typing import Any, Final, cast

from opentelemetry import context, trace
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY

from .._attributes import ENVIRON_SPAN_ID, ENVIRON_TRACE_ID
from .._guard import never_raise
from .event import RequestEvent, current_event, exception_left_to_gunicorn
from .http import HttpAttributes, is_ascii_number
from .metrics import RequestRecorder, no_request_metrics
from .propagation import CallerContext
from .slot import NoSlot, WorkerSlot, no_slot
from .span import SpanStarter
from .watchdog import NoWatchdog, Watchdog, no_watchdog

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_start_guard: Final = never_raise("wsgi.start")
_finish_guard: Final = never_raise("wsgi.finish")
_response_guard: Final = never_raise("wsgi.start_response")
# Answers that carry no body (RFC 9110), whatever the app yields: gunicorn sends none.
BODILESS_STATUSES: Final = frozenset({100, 101, 102, 103, 204, 304})


class RequestScope:
    """One request in flight on the request path: its event, the context it made current.

    Ending is idempotent: gunicorn closes the body after the last byte, but an exception or a
    body that is never iterated must end the event too, exactly once.
    """

    __slots__ = ("_context_token", "_event_token", "_start_response", "event", "http", "watchdog")

    def __init__(
        self,
        event: RequestEvent,
        http: HttpAttributes,
        watchdog: Watchdog | NoWatchdog,
        start_response: StartResponse,
    ) -> None:
        self.event = event
        self.http = http
        self.watchdog = watchdog
        self._start_response = start_response
        watchdog.watch(event)
        ctx = trace.set_span_in_context(event.span)
        self._context_token: Token[Any] | None = context.attach(ctx)
        self._event_token: Token[RequestEvent | None] | None = current_event.set(event)

    def start_response(self, status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
        try:
            event = self.event
            code = status[:3]
            status_code = event.status_code = int(code) if is_ascii_number(code) else 0
            if event.method == "HEAD" or status_code in BODILESS_STATUSES:
                event.body_omitted = True  # gunicorn drops whatever body the app yields
            self.http.response_header_attributes(headers, event.attributes)
        except Exception:
            _response_guard.report()
        return self._start_response(status, headers, *args)

    def end(self, exc: BaseException | None = None, incomplete: bool = False) -> None:
        """End the event (unless the watchdog did) and restore the context current before."""
        self.watchdog.release(self.event)
        if exc is not None:
            # gunicorn hands it to Worker.handle_error (a 500, or the SystemExit of its abort
            # handler after a timeout event), which must not make a second event.
            exception_left_to_gunicorn.set((exc, self.event))
        try:
            self.event.end_response(exc, incomplete)
        except Exception:
            _finish_guard.report()
        try:
            if self._event_token is not None:
                current_event.reset(self._event_token)
                self._event_token = None
            if self._context_token is not None:
                context.detach(self._context_token)
                self._context_token = None
        except Exception:
            _finish_guard.report()


class ResponseBody:
    """The app's body, passed through; the event ends when gunicorn closes it.

    Like OpenTelemetry's ``_end_span_after_iterating``: gunicorn calls ``close()`` after the
    last byte went out (and also when the client went away), so the span covers the sending.
    """

    __slots__ = ("_body", "_completed", "_scope")

    def __init__(self, body: Iterable[bytes], scope: RequestScope) -> None:
        self._body = body
        self._scope = scope
        self._completed = False

    def __iter__(self) -> Iterator[bytes]:
        scope = self._scope
        event = scope.event
        try:
            for chunk in self._body:
                if not event.headers_sent:
                    event.headers_sent = True
                    event.entry.sending()
                event.body_bytes += len(chunk)
                yield chunk
        except Exception as exc:
            scope.end(exc)
            raise
        self._completed = True

    def close(self) -> None:
        scope = self._scope
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            scope.end(exc)
            raise
        scope.end(incomplete=not self._completed)


class FileBodyCloser:
    """Ends the event when gunicorn closes a ``wsgi.file_wrapper`` body.

    Wrapping the file wrapper in ``ResponseBody`` would hide it from gunicorn's ``isinstance``
    check and lose ``sendfile()``; replacing its ``close`` keeps the fast path.
    """

    __slots__ = ("_close", "_scope")

    def __init__(self, close: Callable[[], None] | None, scope: RequestScope) -> None:
        self._close = close
        self._scope = scope

    def __call__(self) -> None:
        try:
            if self._close is not None:
                self._close()
        except BaseException as exc:
            self._scope.end(exc)
            raise
        self._scope.end()


class WideEventsMiddleware:
    """WSGI middleware that turns every request into exactly one wide event."""

    __slots__ = (
        "app",
        "caller_context",
        "event_class",
        "http",
        "metrics",
        "slot",
        "spans",
        "sql_max_length",
        "watchdog",
    )

    def __init__(
        self,
        app: WSGIApp,
        spans: SpanStarter,
        *,
        http: HttpAttributes,
        sql_max_length: int,
        slot: WorkerSlot | NoSlot = no_slot,
        watchdog: Watchdog | NoWatchdog = no_watchdog,
        event_class: type[RequestEvent] = RequestEvent,
        metrics: RequestRecorder = no_request_metrics,
    ) -> None:
        self.watchdog = watchdog
        self.event_class = event_class  # what the worker class's requests are (greenlets.py)
        self.metrics = metrics
        self.app = app
        self.spans = spans
        self.http = http
        self.sql_max_length = sql_max_length
        self.slot = slot
        self.caller_context = CallerContext()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        scope = self._start(environ, start_response)
        if scope is None:
            return self.app(environ, start_response)
        try:
            body = self.app(environ, scope.start_response)
        except BaseException as exc:
            scope.end(exc)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if file_wrapper is not None and isinstance(body, file_wrapper):
            scope.event.headers_sent = True
            scope.event.entry.sending()
            body.close = FileBodyCloser(getattr(body, "close", None), scope)
            return cast("Iterable[bytes]", body)
        return ResponseBody(body, scope)

    def _start(self, environ: dict[str, Any], start_response: StartResponse) -> RequestScope | None:
        try:
            if self.http.is_excluded(environ):
                return None
            method, attributes = self.http.request_attributes(environ)
            parent = self.caller_context(environ)
            span = self.spans.start_span(method, parent, attributes)
            slot = self.slot
            entry = slot.request_started(
                span, method, str(attributes.get(URL_PATH, "")), str(attributes.get(URL_QUERY, ""))
            )
            event = self.event_class(
                span,
                method,
                slot,
                entry,
                sql_max_length=self.sql_max_length,
                client=environ.get("gunicorn.socket"),
                metrics=self.metrics,
                request_attributes=attributes,
            )
            # For gunicorn's --access-logformat, which can print only what gunicorn hands it
            # (environ, headers, response), and for the app (Django's request.META).
            environ[ENVIRON_TRACE_ID] = event.trace_id_hex
            environ[ENVIRON_SPAN_ID] = event.span_id_hex
            return RequestScope(event, self.http, self.watchdog, start_response)
        except Exception:
            _start_guard.report()
            return None
