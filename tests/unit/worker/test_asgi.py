"""The ASGI request path in-process: one event per HTTP request, ended once, never mixed."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from opentelemetry import trace

from gunicorn_django_wide_events._config import Config
from gunicorn_django_wide_events._worker.asgi import (
    Message,
    Scope,
    WideEventsAsgiMiddleware,
    environ_of,
)
from gunicorn_django_wide_events._worker.asgi_worker import is_asgi_app
from gunicorn_django_wide_events._worker.http import HttpAttributes
from gunicorn_django_wide_events._worker.metrics import (
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_DURATION,
    RequestMetrics,
    RequestRecorder,
    no_request_metrics,
)
from gunicorn_django_wide_events._worker.span import TracerSpanStarter
from tests.unit.worker.metering import Metering
from tests.unit.worker.tracing import SQL_MAX, Tracing

App = Callable[[Scope, Any, Any], Awaitable[None]]


def http_scope(path: str = "/items/", query: bytes = b"") -> Scope:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "client": ("10.0.0.7", 50123),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"shop.example:8000"),
            (b"user-agent", b"tests"),
            (b"accept", b"text/html"),
            (b"accept", b"*/*"),
            (b"content-length", b"0"),
        ],
    }


class Server:
    """What an ASGI server does around the app: the messages it was sent."""

    def __init__(self, fail_sending: bool = False) -> None:
        self.sent: list[Message] = []
        self.fail_sending = fail_sending

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: Message) -> None:
        if self.fail_sending and message["type"] == "http.response.body":
            raise OSError("the client went away")
        self.sent.append(message)


def middleware(
    tracing: Tracing, app: App, metrics: RequestRecorder = no_request_metrics
) -> WideEventsAsgiMiddleware:
    return WideEventsAsgiMiddleware(
        app,
        TracerSpanStarter(tracing.tracer),
        http=HttpAttributes(Config()),
        sql_max_length=SQL_MAX,
        metrics=metrics,
    )


def serve(
    tracing: Tracing, app: App, scope: Scope | None = None, server: Server | None = None
) -> None:
    server = server or Server()
    asyncio.run(middleware(tracing, app)(scope or http_scope(), server.receive, server.send))


async def respond(send: Any, body: bytes = b"hello", status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": body})


def test_the_environ_of_a_scope_is_spelled_as_gunicorns() -> None:
    environ = environ_of(http_scope("/a%20b/", b"q=1"))

    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["RAW_URI"] == "/a%20b/?q=1"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "10.0.0.7"
    assert environ["REMOTE_PORT"] == "50123"
    assert environ["HTTP_HOST"] == "shop.example:8000"
    assert environ["HTTP_ACCEPT"] == "text/html,*/*"  # repeated headers, joined
    assert environ["CONTENT_LENGTH"] == "0"  # without the HTTP_ prefix, as in PEP 3333


def test_a_scope_without_raw_path_falls_back_to_the_decoded_one() -> None:
    scope = http_scope()
    del scope["raw_path"]

    environ = environ_of(scope)

    assert environ["PATH_INFO"] == "/items/"
    assert "RAW_URI" not in environ


def test_the_event_ends_at_the_last_body_message(tracing: Tracing) -> None:
    """Before the app returns: once the server took the last byte."""
    ended_before_return: list[int] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await respond(send)
        ended_before_return.append(len(tracing.finished()))

    serve(tracing, app, http_scope(query=b"token=s3cret&page=2"))

    assert ended_before_return == [1]
    span = tracing.only_span()
    attributes = span.attributes or {}
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.response.body.size"] == 5
    assert attributes["url.path"] == "/items/"
    assert attributes["url.query"] == "token=REDACTED&page=2"
    assert attributes["client.address"] == "10.0.0.7"
    assert attributes["server.address"] == "shop.example"
    assert attributes["user_agent.original"] == "tests"
    assert "wide_event.cpu_time_ms" not in attributes
    assert "wide_event.response_incomplete" not in attributes


def test_a_streamed_body_counts_every_chunk(tracing: Tracing) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body"})

    serve(tracing, app)

    assert (tracing.only_span().attributes or {})["http.response.body.size"] == 9


@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
def test_other_scopes_pass_through_untouched(tracing: Tracing, scope_type: str) -> None:
    """No event, and the app is called with the server's own send."""
    server = Server()
    seen: list[object] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(send)

    asyncio.run(middleware(tracing, app)({"type": scope_type}, server.receive, server.send))

    assert seen == [server.send]
    assert tracing.finished() == ()


def test_an_exception_before_the_response_is_a_500_event_and_raises_on(tracing: Tracing) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise ValueError("broken app")

    with pytest.raises(ValueError, match="broken app"):
        serve(tracing, app)

    attributes = tracing.only_span().attributes or {}
    assert attributes["http.response.status_code"] == 500  # what the server answers
    assert attributes["exception.type"] == "ValueError"
    assert "wide_event.response_incomplete" not in attributes


def test_an_exception_mid_stream_is_an_incomplete_event(tracing: Tracing) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        raise RuntimeError("mid-stream")

    with pytest.raises(RuntimeError):
        serve(tracing, app)

    attributes = tracing.only_span().attributes or {}
    assert attributes["http.response.status_code"] == 200
    assert attributes["wide_event.response_incomplete"] is True
    assert attributes["exception.type"] == "RuntimeError"


@pytest.mark.parametrize("cause", ["returned", "send failed", "cancelled"])
def test_a_response_that_never_completes_is_one_incomplete_event(
    tracing: Tracing, cause: str
) -> None:
    """The client went away (the server's send fails, or the server cancels), or the app
    stopped early: incomplete, and not the app's exception."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if cause == "cancelled":
            raise asyncio.CancelledError
        if cause == "send failed":
            await send({"type": "http.response.body", "body": b"a"})

    server = Server(fail_sending=cause == "send failed")
    if cause == "returned":
        serve(tracing, app, server=server)
    else:
        with pytest.raises((OSError, asyncio.CancelledError)):
            serve(tracing, app, server=server)

    attributes = tracing.only_span().attributes or {}
    assert attributes["wide_event.response_incomplete"] is True
    assert "exception.type" not in attributes


def test_the_span_is_current_in_the_app_its_tasks_and_its_threads(tracing: Tracing) -> None:
    """Where Django runs a request: its task, tasks it starts, threads that copy its context."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        trace.get_current_span().set_attribute("app.in_task", True)

        async def child() -> None:
            trace.get_current_span().set_attribute("app.in_child_task", True)

        await asyncio.create_task(child())
        ctx = contextvars.copy_context()
        await asyncio.get_running_loop().run_in_executor(
            None, ctx.run, trace.get_current_span().set_attribute, "app.in_thread", True
        )
        await respond(send)

    serve(tracing, app)

    attributes = tracing.only_span().attributes or {}
    assert attributes["app.in_task"] is True
    assert attributes["app.in_child_task"] is True
    assert attributes["app.in_thread"] is True


def test_concurrent_requests_in_one_loop_never_mix(tracing: Tracing) -> None:
    """Twenty requests interleaved on one loop: each event has its own fields."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.01)
        trace.get_current_span().set_attribute("app.path", scope["path"])
        await asyncio.sleep(0.01)
        await respond(send, body=scope["path"].encode())

    async def many() -> None:
        wrapped = middleware(tracing, app)
        servers = [Server() for _ in range(20)]
        await asyncio.gather(
            *(
                wrapped(http_scope(f"/n/{index}/"), server.receive, server.send)
                for index, server in enumerate(servers)
            )
        )

    asyncio.run(many())

    spans = tracing.finished()
    assert len(spans) == 20
    for span in spans:
        attributes = span.attributes or {}
        assert attributes["app.path"] == attributes["url.path"]
        assert attributes["http.response.body.size"] == len(str(attributes["url.path"]))


def test_every_request_is_active_until_its_event_ends_and_one_duration_point(
    tracing: Tracing, metering: Metering
) -> None:
    """Ten requests at once on one loop, ending every way an ASGI event ends (the last body
    message, the app's 500, a client gone, a cancellation): each active while it runs, one
    point each of its status, none left active."""
    recorder = RequestMetrics(metering.provider.get_meter("test"))
    active_meanwhile: list[int] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.01)
        if not active_meanwhile:
            (active,) = metering.points(HTTP_SERVER_ACTIVE_REQUESTS)
            active_meanwhile.append(active.value)
        ending = scope["path"]
        if ending == "/raise/":
            raise RuntimeError("boom")
        if ending == "/cancelled/":
            raise asyncio.CancelledError
        await respond(send, status=404 if ending == "/missing/" else 200)

    async def many() -> None:
        wrapped = middleware(tracing, app, recorder)
        paths = ["/ok/"] * 6 + ["/missing/", "/raise/", "/gone/", "/cancelled/"]
        servers = [Server(fail_sending=path == "/gone/") for path in paths]
        await asyncio.gather(
            *(
                wrapped(http_scope(path), server.receive, server.send)
                for path, server in zip(paths, servers, strict=True)
            ),
            return_exceptions=True,
        )

    asyncio.run(many())

    assert active_meanwhile == [10]
    (active,) = metering.points(HTTP_SERVER_ACTIVE_REQUESTS)
    assert active.value == 0
    counts = {
        (point.attributes.get("http.response.status_code"), point.attributes.get("error.type")):
        point.count
        for point in metering.points(HTTP_SERVER_REQUEST_DURATION)
    }  # fmt: skip
    # The client gone after the response started: its status; the one cancelled before: none.
    assert counts == {(200, None): 7, (404, None): 1, (500, "RuntimeError"): 1, (None, None): 1}
    assert len(tracing.finished()) == 10


class AsyncCallable:
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        return None


class SyncCallable:
    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return []


async def asgi_function(scope: Scope, receive: Any, send: Any) -> None:
    return None


def wsgi_function(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return []


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (asgi_function, True),
        (AsyncCallable(), True),
        (wsgi_function, False),
        (SyncCallable(), False),
        (AsyncCallable, False),  # a class: ASGI 2 style, not what Django gives
        (None, False),
    ],
)
def test_an_asgi_app_is_told_by_what_calling_it_returns(app: object, expected: bool) -> None:
    assert is_asgi_app(app) is expected
