"""The ASGI worker classes serving Django's ``get_asgi_application()``: gunicorn's own ``asgi``
worker and uvicorn-worker's ``UvicornWorker``, one wide event per request as under sync.

Many requests run at once in one worker there, each in tasks of its own on the worker's event
loop (and, for sync views, in Django's ``sync_to_async`` threads): every event keeps its own
fields, the board has an entry per request in flight, a request that blocks the loop gets its
timeout event with the loop's stack before gunicorn kills the worker, and one that merely awaits
gets its own deadline while the worker carries on.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import LOOPBACK, GunicornServer, StartGunicorn
from tests.integration.djangoapp import async_views
from tests.integration.events import (
    EVENT_TIMEOUT,
    Exchange,
    barrier,
    event_from_port,
    send,
    send_raw,
    server_spans_of,
    spans_of,
    the_event,
    wait_for_trace,
)
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.integration.test_requests_in_flight import event_while, send_in_background
from tests.integration.test_timeout_events import (
    STATUS_ERROR,
    only_event,
    send_stuck,
    wait_for_log,
)

UVICORN = "uvicorn_worker.UvicornWorker"
WORKER_CLASSES = ["asgi", UVICORN]
ASGI_APP = "djangoapp.asgi"
MONITOR_ENV = {"WIDE_EVENTS_MONITOR_INTERVAL": "0.2"}
CONCURRENT = 50
GUNICORN_TIMEOUT = 3


def start_asgi(
    start: StartGunicorn, worker_class: str, timeout: int = 300, env: dict[str, str] | None = None
) -> GunicornServer:
    """One worker of ``worker_class`` serving the Django project's ASGI application."""
    if worker_class == UVICORN:
        pytest.importorskip("uvicorn_worker")
    return start(
        worker_class=worker_class,
        app=ASGI_APP,
        timeout=timeout,
        env={**MONITOR_ENV, **(env or {})},
        extra_args=("--worker-connections", "200"),
    )


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def server(
    request: pytest.FixtureRequest, module_gunicorn_server: StartGunicorn
) -> Iterator[GunicornServer]:
    """A long-lived ASGI server per worker class, shared by the module's plain tests."""
    yield start_asgi(
        module_gunicorn_server, request.param, env={"WIDE_EVENTS_CAPTURE_USER_ID": "true"}
    )


@pytest.fixture(params=WORKER_CLASSES)
def worker_class(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- one event per request, sync and async views -------------------------------------------------


VIEWS = {
    "/ok/": ("ok/", "djangoapp.views.ok", b"ok"),
    "/async/ok/": ("async/ok/", "djangoapp.async_views.async_ok", b"async ok"),
}


@pytest.mark.parametrize("path", list(VIEWS))
def test_a_sync_and_an_async_view_each_make_one_event(
    server: GunicornServer, receiver: OtlpReceiver, path: str
) -> None:
    """The same contract as under sync workers: HTTP, route, view, the board's figures."""
    route, view, body = VIEWS[path]
    exchange = send(server, path + "?page=2", headers={"User-Agent": "asgi-tests"})
    event = the_event(server, receiver, exchange)

    assert exchange.status == 200 and exchange.body == body
    assert event.parent_span_id == exchange.parent_span_id
    assert event.name == f"GET {route}"
    attributes = event.attributes
    assert attributes["wide_event.type"] == "request"
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == path
    assert attributes["url.query"] == "page=2"
    assert attributes["url.scheme"] == "http"
    assert attributes["http.route"] == route
    assert attributes["django.view"] == view
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.response.body.size"] == len(body)
    assert attributes["network.protocol.version"] == "1.1"
    assert attributes["client.address"] == LOOPBACK
    assert attributes["server.address"] == LOOPBACK
    assert attributes["server.port"] == server.port
    assert attributes["user_agent.original"] == "asgi-tests"
    assert attributes["gunicorn.worker.id"] >= 0
    assert attributes["gunicorn.workers.total"] == 1
    assert attributes["gunicorn.workers.busy"] == 1
    assert attributes["gunicorn.worker.active_requests"] >= 1
    # The loop's thread serves every request at once: its CPU clock is no request's own.
    assert "wide_event.cpu_time_ms" not in attributes
    assert not event.is_error


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/attrs/", {"app.cart_size": 3, "app.plan": "pro"}),  # in Django's sync_to_async thread
        ("/async/attrs/", {"app.async_cart_size": 5, "app.async_plan": "team"}),  # in a task
    ],
)
def test_fields_set_through_the_opentelemetry_api_land_on_the_event(
    server: GunicornServer, receiver: OtlpReceiver, path: str, expected: dict[str, object]
) -> None:
    """The event's span is current where the view runs, thread or task."""
    event = the_event(server, receiver, send(server, path))

    for key, value in expected.items():
        assert event.attributes[key] == value


def test_database_work_of_a_sync_view_is_on_its_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Queries run in Django's sync_to_async thread count on the request's event."""
    event = the_event(server, receiver, send(server, "/sql/"))

    assert event.attributes["django.db.query_count"] == 4
    assert event.attributes["django.db.duplicate_query_count"] == 1
    assert "counter" in event.attributes["django.db.slowest_query"]


@pytest.mark.parametrize("path", ["/ok/", "/async/ok/"])
def test_the_authenticated_user_is_on_the_event(
    server: GunicornServer, receiver: OtlpReceiver, path: str
) -> None:
    """With WIDE_EVENTS_CAPTURE_USER_ID, as under sync: read once Django's middleware ran."""
    event = the_event(server, receiver, send(server, path, headers={"X-Test-User": "42"}))
    anonymous = the_event(server, receiver, send(server, path))

    assert event.attributes["user.id"] == "42"
    assert "user.id" not in anonymous.attributes


@pytest.mark.parametrize(
    ("path", "warnings", "first_error"),
    [
        # A sync view: Django logs from its sync_to_async thread, in the request's context.
        ("/log-levels/", 2, "djangoapp.payments: payment declined for card %s"),
        ("/async/log/", 1, "djangoapp.async: async payment declined for card %s"),
        # Django's own error line for the 500, logged from another thread of the request.
        ("/async/raise/", 0, "django.request: "),
    ],
)
def test_what_a_request_logged_is_counted_on_its_event(
    server: GunicornServer, receiver: OtlpReceiver, path: str, warnings: int, first_error: str
) -> None:
    """Records made in the request's context count, from its tasks and from the threads Django
    runs its sync code in; templates only, never arguments."""
    event = the_event(server, receiver, send(server, path))

    assert event.attributes.get("wide_event.log.warning_count", 0) == warnings
    assert event.attributes["wide_event.log.error_count"] == 1
    assert event.attributes["wide_event.log.first_error"].startswith(first_error)
    assert "4242" not in repr(sorted(event.attributes.items()))


def test_fifty_concurrent_requests_each_get_their_own_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """50 requests at once in one worker: 50 events, none mixing another's fields or queries."""
    exchanges: dict[int, Exchange] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(CONCURRENT)

    def one(n: int) -> None:
        try:
            start.wait(timeout=30)
            exchanges[n] = send(server, f"/async/mixed/?n={n}")
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(1, CONCURRENT + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(exchanges) == CONCURRENT
    receiver.wait_for_events("/async/mixed/", count=CONCURRENT, timeout=EVENT_TIMEOUT)
    barrier(server, receiver)

    most_at_once = 0
    for n, exchange in exchanges.items():
        assert exchange.status == 200 and exchange.body == str(n).encode()
        (event,) = server_spans_of(receiver, exchange.trace_id)
        assert event.parent_span_id == exchange.parent_span_id
        assert event.attributes["url.query"] == f"n={n}"
        assert event.attributes["app.n"] == n
        queries = async_views.queries_for(n)
        assert event.attributes["django.db.query_count"] == queries
        assert event.attributes["django.db.duplicate_query_count"] == queries - 1
        assert event.attributes["http.response.body.size"] == len(str(n))
        # The sqlite3 instrumentation's spans, run in Django's threads: children of this event.
        children = [span for span in spans_of(receiver, exchange.trace_id) if not span.is_server]
        assert len(children) == queries
        assert {child.parent_span_id for child in children} == {event.span_id}
        most_at_once = max(most_at_once, event.attributes["gunicorn.worker.active_requests"])
    assert len(receiver.events_for("/async/mixed/")) == CONCURRENT
    assert most_at_once > 1  # they did run at once


# -- streaming, exceptions, clients that go away -----------------------------------------------


@pytest.mark.parametrize("path", ["/async/stream/", "/stream/"])
def test_a_streamed_body_ends_its_event_after_the_last_chunk(
    server: GunicornServer, receiver: OtlpReceiver, path: str
) -> None:
    """An async iterator (and a sync one, which Django iterates in a thread) streamed through
    the loop: one event, its span covering the whole body."""
    exchange = send(server, path)
    event = the_event(server, receiver, exchange)

    chunk = async_views.STREAM_CHUNK if path.startswith("/async/") else b"chunk\n"
    assert exchange.body == chunk * async_views.STREAM_CHUNKS
    assert event.attributes["http.response.body.size"] == len(exchange.body)
    assert event.duration_ns >= (async_views.STREAM_CHUNKS - 1) * 0.05 * 1e9
    assert "wide_event.response_incomplete" not in event.attributes


def test_an_exception_in_an_async_view_is_one_error_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Django answers the 500; the event names the exception and where it was raised."""
    exchange = send(server, "/async/raise/")
    event = the_event(server, receiver, exchange)

    assert exchange.status == 500
    attributes = event.attributes
    assert attributes["http.response.status_code"] == 500
    assert attributes["exception.type"] == "RuntimeError"
    assert attributes["exception.message"] == "async boom"
    assert "async_raise" in attributes["exception.stacktrace"]
    assert attributes["error.type"] == "RuntimeError"
    assert event.is_error
    assert attributes["django.view"] == "djangoapp.async_views.async_raise"


def test_a_client_going_away_mid_request_is_one_incomplete_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """The client hangs up while the view awaits: the event ends, marked incomplete."""
    with socket.create_connection((LOOPBACK, server.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(
            b"GET /async/sleep/?seconds=30 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        event = event_while(server, receiver, active=2)  # it is in flight
        assert event.attributes["gunicorn.worker.active_requests"] >= 2

    def from_port(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.is_server and s.attributes.get("client.port") == client_port]

    receiver.wait_for(lambda spans: bool(from_port(spans)), timeout=EVENT_TIMEOUT)
    barrier(server, receiver)
    (gone,) = from_port(receiver.spans())
    assert gone.attributes["wide_event.type"] == "request"
    assert gone.attributes["wide_event.response_incomplete"] is True
    assert gone.attributes["http.route"] == "async/sleep/"
    assert gone.duration_ns < 20 * 1e9


# -- what the worker class answers itself ----------------------------------------------------


TOO_MANY_HEADERS = b"".join(b"X-Filler-%d: %d\r\n" % (index, index) for index in range(150))


@pytest.mark.parametrize("server", ["asgi"], indirect=True)
@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),
        (b"GET /ok/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + TOO_MANY_HEADERS + b"\r\n", 431),
    ],
)
def test_a_malformed_request_answered_by_gunicorns_asgi_worker_is_an_event(
    server: GunicornServer, receiver: OtlpReceiver, data: bytes, status: int
) -> None:
    """gunicorn's own answer, written by its ASGI protocol: one event, with its status, its
    error and the worker busy with it."""
    answer, port = send_raw(server, data)
    event = event_from_port(receiver, port)
    barrier(server, receiver)

    assert answer.startswith(b"HTTP/1.1 %d" % status)
    attributes = event.attributes
    assert attributes["wide_event.type"] == "request"
    assert attributes["http.response.status_code"] == status
    assert attributes["error.type"].startswith("gunicorn.")
    assert attributes["exception.message"]
    assert attributes["client.address"] == LOOPBACK
    assert attributes["gunicorn.workers.busy"] >= 1
    if status != 400:
        assert attributes["http.request.method"] == "GET"
    assert event_from_port(receiver, port) == event


@pytest.mark.parametrize("server", [UVICORN], indirect=True)
def test_a_malformed_request_answered_inside_uvicorn_gets_no_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """uvicorn writes its 400 inside its own protocol classes, with no hook: no event (as the
    README says), and nothing else goes wrong."""
    answer, port = send_raw(server, b"GARBAGE\r\n\r\n")
    barrier(server, receiver)

    assert answer.startswith(b"HTTP/1.1 400")
    assert not [s for s in receiver.server_spans() if s.attributes.get("client.port") == port]
    assert "internal error" not in server.log_text()


# -- the board: busy, in flight, the master's fallback -----------------------------------------


def test_the_worker_is_busy_while_any_request_runs_and_counts_them(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """gunicorn.workers.busy counts the worker; active_requests counts its requests in flight."""
    send_in_background(server, "/async/sleep/?seconds=3", 3)
    quick = event_while(server, receiver, active=4)

    assert quick.attributes["gunicorn.workers.busy"] == 1
    assert quick.attributes["gunicorn.workers.utilization"] == 1.0
    slow = receiver.wait_for_events("/async/sleep/", count=3)
    assert all(event.attributes["gunicorn.workers.busy"] == 1 for event in slow)


def test_the_master_reports_every_request_in_flight_of_a_killed_worker(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, worker_class: str
) -> None:
    """SIGKILL with four requests in flight: four crash events from the board, each its own."""
    server = start_asgi(gunicorn_server, worker_class)
    send_in_background(server, "/async/sleep/?seconds=120&token=s3cret", 4)
    event_while(server, receiver, active=5)
    (worker,) = server.worker_pids()
    os.kill(worker, signal.SIGKILL)

    events = receiver.wait_for_events("/async/sleep/", count=4)
    server.wait_for_workers(1)
    assert send(server, "/ok/").status == 200

    assert len({event.trace_id for event in events}) == 4
    for event in events:
        assert event.attributes["wide_event.type"] == "crash"
        assert event.attributes["error.type"] == "SIGKILL"
        assert event.attributes["wide_event.reported_by"] == "master"
        assert event.attributes["http.route"] == "async/sleep/"
        assert event.attributes["django.view"] == "djangoapp.async_views.async_sleep"
        assert event.attributes["url.query"] == "seconds=120&token=REDACTED"
    assert len(receiver.events_for("/async/sleep/")) == 4


# -- timeouts: a blocked loop, a slow cooperative request ---------------------------------------


@pytest.mark.parametrize(
    ("path", "in_stack"),
    [
        ("/async/cpu/", "spin("),  # pure-Python work that never yields
        ("/async/blocking-sleep/", "time.sleep("),  # a blocking call inside async def
    ],
)
def test_a_request_blocking_the_loop_gets_its_timeout_event_before_gunicorn_kills(
    gunicorn_server: StartGunicorn,
    receiver: OtlpReceiver,
    worker_class: str,
    path: str,
    in_stack: str,
) -> None:
    """The loop runs nothing, gunicorn's heartbeat stops: the watchdog sends the timeout event
    with the loop thread's stack, and the one of the request waiting beside it, then the worker
    exits on its own terms (no SIGABRT, no core dump under uvicorn-worker)."""
    server = start_asgi(gunicorn_server, worker_class, timeout=GUNICORN_TIMEOUT)
    (worker,) = server.wait_for_workers(1)
    waiting = send_in_background(server, "/async/sleep/?seconds=60", 1)
    event_while(server, receiver, active=2)
    exchange = send_stuck(server, f"{path}?seconds=60")
    for thread in waiting:
        thread.join(EVENT_TIMEOUT)

    (event,) = receiver.wait_for_events(path)
    (beside,) = receiver.wait_for_events("/async/sleep/")
    server.wait_for_workers(1)
    barrier(server, receiver)
    assert exchange is None  # the connection went with the worker
    attributes = event.attributes
    assert attributes["wide_event.type"] == "timeout"
    assert attributes["error.type"] == "timeout"
    assert event.status_code == STATUS_ERROR
    assert attributes["http.route"] == path.strip("/") + "/"
    assert in_stack in attributes["code.stacktrace"]
    assert "async_views.py" in attributes["code.stacktrace"]
    # The worker's deadline: gunicorn's heartbeat (every second under gunicorn's worker, every
    # half --timeout under uvicorn-worker's) plus --timeout minus the margin.
    assert 0 < attributes["wide_event.deadline_ms"] <= attributes["wide_event.elapsed_ms"]
    assert attributes["wide_event.elapsed_ms"] < GUNICORN_TIMEOUT * 1000
    assert "wide_event.reported_by" not in attributes
    assert beside.attributes["wide_event.type"] == "timeout"
    assert "asyncio.sleep" in beside.attributes["code.stacktrace"]
    assert "wide_event.reported_by" not in beside.attributes
    wait_for_log(server, rf"Worker \(pid:{worker}\) exited with code 1")
    assert "WORKER TIMEOUT" not in server.log_text()
    assert len(receiver.events_for(path)) == 1
    assert send(server, "/async/ok/").status == 200


def test_c_code_on_the_loop_letting_signals_through_reaches_worker_abort(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, worker_class: str
) -> None:
    """re's C loop holds the GIL (no watchdog) but checks signals: gunicorn's SIGABRT runs its
    own abort handler, which the package put back in the main thread (uvicorn-worker would dump
    core, gunicorn's asgi worker wait for its blocked loop): the worker sends the event."""
    server = start_asgi(gunicorn_server, worker_class, timeout=GUNICORN_TIMEOUT)
    (worker,) = server.wait_for_workers(1)
    exchange = send_stuck(server, "/async/regex-storm/")

    (event,) = receiver.wait_for_events("/async/regex-storm/")
    server.wait_for_workers(1)
    barrier(server, receiver)
    assert exchange is None or exchange.status == 500
    assert event.attributes["wide_event.type"] == "timeout"
    assert "wide_event.reported_by" not in event.attributes
    assert "re.match(" in event.attributes["code.stacktrace"]
    wait_for_log(server, rf"Worker \(pid:{worker}\) exited with code 1")
    assert len(receiver.events_for("/async/regex-storm/")) == 1


@pytest.mark.parametrize(
    ("path", "in_stack"),
    [
        ("/async/sleep/", "asyncio.sleep("),  # awaits: the loop serves others meanwhile
        ("/slow/", "time.sleep("),  # a sync view, in Django's sync_to_async thread
    ],
)
def test_a_slow_cooperative_request_gets_its_deadline_and_the_worker_carries_on(
    gunicorn_server: StartGunicorn,
    receiver: OtlpReceiver,
    worker_class: str,
    path: str,
    in_stack: str,
) -> None:
    """gunicorn never kills the worker for it: the timeout event comes at the request's own
    deadline with where it waits; the request still ends, with no second event."""
    server = start_asgi(gunicorn_server, worker_class, env={"WIDE_EVENTS_REQUEST_TIMEOUT": "1"})
    (worker,) = server.wait_for_workers(1)
    started = time.monotonic()
    exchange = send(server, f"{path}?seconds=2.5")
    elapsed = time.monotonic() - started
    event = only_event(server, receiver, exchange.trace_id)

    assert exchange.status == 200 and elapsed >= 2.5
    assert event.attributes["wide_event.type"] == "timeout"
    assert 1000 <= event.attributes["wide_event.elapsed_ms"] < 2500
    assert event.attributes["wide_event.deadline_ms"] == 1000
    assert in_stack in event.attributes["code.stacktrace"]
    assert "views.py" in event.attributes["code.stacktrace"]
    assert server.worker_pids() == [worker]
    wait_for_trace(receiver, exchange.trace_id)
    assert len(server_spans_of(receiver, exchange.trace_id)) == 1


def test_lifespan_passes_through_and_the_log_has_no_failure_of_ours(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """The servers' lifespan call reaches Django untouched (which declines it): no event for
    it, and no internal error of the package in the log."""
    barrier(server, receiver)

    assert all("url.path" in span.attributes for span in receiver.server_spans())
    assert "internal error" not in server.log_text()
