"""The ASGI request path: one wide event per HTTP request, from the app's call to the last byte.

``WideEventsAsgiMiddleware`` wraps the ASGI application an ASGI worker serves (gunicorn's
``asgi`` worker, uvicorn-worker's ``UvicornWorker``: see ``_worker/asgi_worker.py``), installed
by the ``post_worker_init`` hook like the WSGI middleware. Only ``http`` scopes are requests:
``lifespan`` and ``websocket`` pass through untouched.

Many requests run at once in one thread, each in a task of its own: the span is made current in
the request's task, whose context Django copies into the tasks and threads it runs the request in
(``sync_to_async`` for sync views and middleware), so that attributes set through the plain
OpenTelemetry API land on the right event and no two requests ever mix. The event ends when the
app sends its last body message, that is once the last byte went to the server; a request whose
response never completes (the client went away, the app failed mid-stream) ends when the app
returns, marked incomplete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextvars import Token
from typing import Any, ClassVar, Final

from opentelemetry import context, trace
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY
from opentelemetry.util.types import AttributeValue

from .._guard import never_raise
from .event import RequestEvent, current_event
from .http import HttpAttributes
from .metrics import RequestRecorder, no_request_metrics
from .propagation import CallerContext
from .slot import NoSlot, WorkerSlot, no_slot
from .span import SpanStarter
from .watchdog import NoWatchdog, Watchdog, no_watchdog
from .wsgi import BODILESS_STATUSES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_start_guard: Final = never_raise("asgi.start")
_finish_guard: Final = never_raise("asgi.finish")
_response_guard: Final = never_raise("asgi.response_start")

# The two headers WSGI puts in the environ without the HTTP_ prefix (PEP 3333).
_UNPREFIXED: Final = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
# Header names repeat on every request: their environ keys are spelled once (bounded).
_ENVIRON_KEYS: dict[bytes, str] = {}
_MAX_ENVIRON_KEYS: Final = 256


def environ_key(name: bytes) -> str:
    """``HTTP_USER_AGENT`` for ``user-agent``, as gunicorn's WSGI environ spells it."""
    lowered = bytes(name).lower()
    key = _UNPREFIXED.get(lowered) or "HTTP_" + lowered.decode("latin-1").upper().replace("-", "_")
    if len(_ENVIRON_KEYS) < _MAX_ENVIRON_KEYS:
        _ENVIRON_KEYS[name] = key
    return key


def environ_of(scope: Scope) -> dict[str, Any]:
    """The WSGI environ keys the request's attributes and caller context are read from.

    One reader for both paths (``HttpAttributes``, ``CallerContext``): the scope's few fields and
    its headers, spelled as gunicorn's environ spells them; repeated headers joined with a comma.
    """
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.get("method", ""),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "SERVER_PROTOCOL": "HTTP/" + str(scope.get("http_version", "1.1")),
    }
    raw_path = scope.get("raw_path")
    query = scope.get("query_string", b"")
    if raw_path:
        target = raw_path.decode("latin-1")
        environ["RAW_URI"] = f"{target}?{query.decode('latin-1')}" if query else target
    else:
        environ["PATH_INFO"] = scope.get("path", "")
        environ["QUERY_STRING"] = query.decode("latin-1")
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    server = scope.get("server")
    if server:
        environ["SERVER_NAME"] = str(server[0])
        if server[1] is not None:
            environ["SERVER_PORT"] = str(server[1])
    known = _ENVIRON_KEYS.get
    for name, value in scope.get("headers", ()):
        key = known(name) or environ_key(name)
        text = value.decode("latin-1")
        previous = environ.get(key)
        environ[key] = text if previous is None else f"{previous},{text}"
    return environ


def decoded_headers(headers: Iterable[tuple[bytes, bytes]]) -> Iterable[tuple[str, str]]:
    for name, value in headers:
        yield bytes(name).decode("latin-1"), bytes(value).decode("latin-1")


class AsgiRequestEvent(RequestEvent):
    """A request served by an event loop: its thread serves others at the same time.

    The loop thread's CPU clock counts every request it serves, so the event has no CPU time;
    the request's log records are those made in its context, from whichever thread (see
    ``_worker/logs.py``). For the watchdog, which looks for where the request is
    (``_worker/loop_watchdog.py``): ``view_task``, the task Django resolved the URL in and runs
    the view in; ``tasks``, the tasks started in the request's context where the loop cannot
    tell a task's context itself (Python before 3.12).
    """

    logs_of_any_thread_in_its_context: ClassVar[bool] = True

    __slots__ = ("tasks", "view_task")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks: list[asyncio.Task[Any]] | None = None
        self.view_task: asyncio.Task[Any] | None = None

    def _add_cpu_time(self, attributes: dict[str, AttributeValue]) -> None:
        return None

    def _add_cpu_time_so_far(self, attributes: dict[str, AttributeValue]) -> None:
        return None

    def set_route(self, route: str | None, view: str = "") -> None:
        super().set_route(route, view)
        if asyncio._get_running_loop() is not None:  # Django resolves in the loop: no thread
            self.view_task = asyncio.current_task()


class AsgiRequest:
    """One HTTP request in flight on the ASGI path: its event, and the app's ``send``.

    The event ends exactly once: at the last body message, or when the app returns or raises
    without one. The context made current for it is left when the app returns, in the task
    that entered it.
    """

    __slots__ = (
        "_context_token",
        "_event_token",
        "_send",
        "completed",
        "event",
        "http",
        "send_failure",
        "watchdog",
    )

    def __init__(
        self,
        event: AsgiRequestEvent,
        http: HttpAttributes,
        watchdog: Watchdog | NoWatchdog,
        send: Send,
    ) -> None:
        self.event = event
        self.http = http
        self.watchdog = watchdog
        self._send = send
        self.completed = False
        self.send_failure: BaseException | None = None
        watchdog.watch(event)
        ctx = trace.set_span_in_context(event.span)
        self._context_token: Token[Any] | None = context.attach(ctx)
        self._event_token: Token[RequestEvent | None] | None = current_event.set(event)

    async def send(self, message: Message) -> None:
        """The app's ``send``: the response's status and size on the event, the end at the last
        body message, once the server took it."""
        kind = message.get("type")
        if kind == "http.response.body":
            event = self.event
            body = message.get("body")
            if body:
                event.body_bytes += len(body)
            if not message.get("more_body", False):
                await self._send_to_server(message)
                self.complete()
                return
        elif kind == "http.response.start":
            self._response_starts(message)
        elif kind == "http.response.pathsend":  # the ASGI extension: a file as the whole body
            await self._send_to_server(message)
            self.complete()
            return
        await self._send_to_server(message)

    async def _send_to_server(self, message: Message) -> None:
        try:
            await self._send(message)
        except BaseException as exc:
            self.send_failure = exc  # the client went away: not the app's failure
            raise

    def _response_starts(self, message: Message) -> None:
        try:
            event = self.event
            status_code = event.status_code = int(message.get("status", 0))
            if event.method == "HEAD" or status_code in BODILESS_STATUSES:
                event.body_omitted = True  # the server sends no body, whatever the app sends
            self.http.response_header_attributes(
                decoded_headers(message.get("headers", ())), event.attributes
            )
            event.headers_sent = True
            event.entry.sending()
        except Exception:
            _response_guard.report()

    def complete(self) -> None:
        """The last body message went to the server: the event ends now."""
        if self.completed:
            return
        self.completed = True
        self.watchdog.release(self.event)
        try:
            self.event.end_response()
        except Exception:
            _finish_guard.report()

    def end(self, exc: BaseException | None = None) -> None:
        """The app returned (or raised): end the event if the response did not, and leave the
        request's context."""
        if not self.completed:
            self.completed = True
            self.watchdog.release(self.event)
            if exc is not None and (
                exc is self.send_failure or isinstance(exc, asyncio.CancelledError)
            ):
                exc = None  # the client went away, or the server cancelled the request
            try:
                self.event.end_response(exc, incomplete=exc is None)
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


class LoopAttachment:
    """What the request path tells the watchdog about the event loop it runs on."""

    def attach(self) -> None:
        """Called in the loop on every call of the app; cheap once attached."""
        return None

    def request_started(self, event: AsgiRequestEvent) -> None:
        return None


no_loop_attachment: Final = LoopAttachment()


class WideEventsAsgiMiddleware:
    """ASGI middleware that turns every HTTP request into exactly one wide event."""

    __slots__ = (
        "app",
        "caller_context",
        "http",
        "loop",
        "metrics",
        "slot",
        "spans",
        "sql_max_length",
        "watchdog",
    )

    def __init__(
        self,
        app: ASGIApp,
        spans: SpanStarter,
        *,
        http: HttpAttributes,
        sql_max_length: int,
        slot: WorkerSlot | NoSlot = no_slot,
        watchdog: Watchdog | NoWatchdog = no_watchdog,
        loop: LoopAttachment = no_loop_attachment,
        metrics: RequestRecorder = no_request_metrics,
    ) -> None:
        self.app = app
        self.spans = spans
        self.http = http
        self.sql_max_length = sql_max_length
        self.slot = slot
        self.watchdog = watchdog
        self.loop = loop
        self.metrics = metrics
        self.caller_context = CallerContext()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.loop.attach()
        if scope.get("type") != "http":  # lifespan, websocket: no HTTP request
            return await self.app(scope, receive, send)
        request = self._start(scope, send)
        if request is None:
            return await self.app(scope, receive, send)
        try:
            await self.app(scope, receive, request.send)
        except BaseException as exc:
            request.end(exc)
            raise
        request.end()

    def _start(self, scope: Scope, send: Send) -> AsgiRequest | None:
        try:
            environ = environ_of(scope)
            if self.http.is_excluded(environ):
                return None
            method, attributes = self.http.request_attributes(environ)
            parent = self.caller_context(environ)
            span = self.spans.start_span(method, parent, attributes)
            slot = self.slot
            entry = slot.request_started(
                span, method, str(attributes.get(URL_PATH, "")), str(attributes.get(URL_QUERY, ""))
            )
            # Active from here to the event's end (whichever ends it: the last body message, the
            # app's return, the watchdog), its duration recorded there (``RequestEvent.finish``).
            event = AsgiRequestEvent(
                span,
                method,
                slot,
                entry,
                sql_max_length=self.sql_max_length,
                metrics=self.metrics,
                request_attributes=attributes,
            )
            self.loop.request_started(event)
            return AsgiRequest(event, self.http, self.watchdog, send)
        except Exception:
            _start_guard.report()
            return None
