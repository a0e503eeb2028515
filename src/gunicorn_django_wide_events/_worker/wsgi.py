"""The request path: one wide event per request, from the WSGI call to the last byte sent.

``WideEventsMiddleware`` wraps the worker's WSGI application (it is installed by the
``post_worker_init`` hook, so the user's Django settings and middleware list stay untouched).
The span becomes current for the whole request, streaming included, so that attributes set with
the plain OpenTelemetry API land on it and other instrumentations' spans become its children.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import Token
from typing import Any, Final, cast

from opentelemetry import context, trace
from opentelemetry.semconv.attributes.url_attributes import URL_PATH

from .. import _attributes as attr
from .._attributes import EventType
from .._guard import never_raise
from .event import RequestEvent, current_event, exception_left_to_gunicorn
from .http import Environ, HttpAttributes, is_ascii_number
from .propagation import CallerContext
from .slot import NoSlot, WorkerSlot, no_slot
from .span import SpanStarter
from .watchdog import NoWatchdog, Watchdog, no_watchdog

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_start_guard: Final = never_raise("wsgi.start")
_finish_guard: Final = never_raise("wsgi.finish")
_response_guard: Final = never_raise("wsgi.start_response")


class RequestScope:
    """One request in flight: its event, the context it made current, the bytes it sent.

    Ending is idempotent: gunicorn closes the body after the last byte, but an exception or a
    body that is never iterated must end the event too, exactly once.
    """

    __slots__ = (
        "_context_token",
        "_event_token",
        "_start_response",
        "body_bytes",
        "client",
        "cpu_start_ns",
        "due",
        "event",
        "headers_sent",
        "middleware",
        "started",
        "thread_id",
    )

    def __init__(
        self, middleware: WideEventsMiddleware, event: RequestEvent, client: Any = None
    ) -> None:
        self.middleware = middleware
        self.event = event
        self.client = client
        self.body_bytes = 0
        self.headers_sent = False
        self.cpu_start_ns = time.thread_time_ns()
        self.thread_id = threading.get_ident()
        self.started = time.monotonic()
        self.due = middleware.watchdog.due(self.started)
        middleware.watchdog.watch(self)
        self._start_response: StartResponse | None = None
        ctx = trace.set_span_in_context(event.span)
        self._context_token: Token[Any] | None = context.attach(ctx)
        self._event_token: Token[RequestEvent | None] | None = current_event.set(event)

    def start_response(self, status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
        try:
            event = self.event
            code = status[:3]
            event.status_code = int(code) if is_ascii_number(code) else 0
            self.middleware.http.response_header_attributes(headers, event.attributes)
        except Exception:
            _response_guard.report()
        assert self._start_response is not None
        return self._start_response(status, headers, *args)

    def end(self, exc: BaseException | None = None, incomplete: bool = False) -> None:
        """Finish the event (if nobody did) and restore the context that was current before."""
        self.middleware.watchdog.release(self)
        try:
            event = self.event
            if exc is not None:
                # gunicorn hands it to Worker.handle_error (a 500, or the SystemExit of its
                # abort handler after a timeout event), which must not make a second event.
                exception_left_to_gunicorn.set(exc)
            if event.finished:  # the watchdog sent it as a timeout: the slot is idle again
                self.middleware.slot.request_finished()
                return self._restore_context()
            attributes = event.attributes
            if exc is not None:
                event.record_exception(exc)
                if self.headers_sent:
                    incomplete = True
                else:
                    event.status_code = 500  # what gunicorn will answer
            if incomplete:
                attributes[attr.WIDE_EVENT_RESPONSE_INCOMPLETE] = True
            attributes[attr.WIDE_EVENT_CPU_TIME_MS] = (
                time.thread_time_ns() - self.cpu_start_ns
            ) / 1e6
            attributes[attr.HTTP_RESPONSE_BODY_SIZE] = self.body_bytes
            slot = self.middleware.slot
            slot.add_attributes(attributes)
            event.finish(EventType.REQUEST, self.middleware.sql_max_length)
            slot.request_finished()
        except Exception:
            _finish_guard.report()
        self._restore_context()

    def _restore_context(self) -> None:
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
        try:
            for chunk in self._body:
                scope.headers_sent = True
                scope.body_bytes += len(chunk)
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

    __slots__ = ("app", "caller_context", "http", "slot", "spans", "sql_max_length", "watchdog")

    def __init__(
        self,
        app: WSGIApp,
        spans: SpanStarter,
        *,
        http: HttpAttributes,
        sql_max_length: int,
        slot: WorkerSlot | NoSlot = no_slot,
        watchdog: Watchdog | NoWatchdog = no_watchdog,
    ) -> None:
        self.watchdog = watchdog
        self.app = app
        self.spans = spans
        self.http = http
        self.sql_max_length = sql_max_length
        self.slot = slot
        self.caller_context = CallerContext()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        scope = self._start(environ)
        if scope is None:
            return self.app(environ, start_response)
        scope._start_response = start_response
        try:
            body = self.app(environ, scope.start_response)
        except BaseException as exc:
            scope.end(exc)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if file_wrapper is not None and isinstance(body, file_wrapper):
            scope.headers_sent = True
            body.close = FileBodyCloser(getattr(body, "close", None), scope)
            return cast("Iterable[bytes]", body)
        return ResponseBody(body, scope)

    def _start(self, environ: Environ) -> RequestScope | None:
        try:
            if self.http.is_excluded(environ):
                return None
            method, attributes = self.http.request_attributes(environ)
            parent = self.caller_context(environ)
            span = self.spans.start_span(method, parent, attributes)
            self.slot.request_started(span, method, str(attributes.get(URL_PATH, "")))
            return RequestScope(
                self, RequestEvent(span, method, {}, self.slot), environ.get("gunicorn.socket")
            )
        except Exception:
            _start_guard.report()
            return None
