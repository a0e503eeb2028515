"""Metrics: the stable HTTP server metrics from the workers, gunicorn's own from the master.

gunicorn exports with ``OTEL_METRICS_EXPORTER=otlp`` to the session's receiver, over both
transports. Points are cumulative (the SDK's default), so the last point of each series (one
per worker process, by ``service.instance.id``) holds its total; the servers of a test are told
apart from other tests' by their resource's ``process.pid`` (the master) and
``process.parent_pid`` (its workers).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from tests.integration.conftest import LOOPBACK, GunicornServer, StartGunicorn, free_port
from tests.integration.events import send
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedMetricPoint, latest_points
from tests.integration.test_asgi_workers import GUNICORN_TIMEOUT, start_asgi
from tests.integration.test_asgi_workers import WORKER_CLASSES as ASGI_WORKER_CLASSES
from tests.integration.test_monitor_and_board import FORK_WARNING, NO_CONTROL_SOCKET
from tests.integration.test_requests_in_flight import event_while, send_in_background
from tests.integration.test_timeout_events import send_stuck, wait_for_log
from tests.waiting import wait_until

PROTOCOLS = ["grpc", "http/protobuf"]
DURATION = "http.server.request.duration"
ACTIVE = "http.server.active_requests"
WORKERS = "gunicorn.workers"
EXITS = "gunicorn.worker.exits"
BACKLOG = "gunicorn.listen.backlog"
RSS = "gunicorn.worker.memory.rss"
SEMCONV_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Exported every quarter of a second: the points of a test arrive while it waits for them.
METRICS_ON = {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "250"}
# Exported only once a minute: what arrives sooner was flushed as a process ended.
METRICS_AT_EXIT_ONLY = {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "60000"}
WAIT_S = 30.0
Points = list[ReceivedMetricPoint]


def of_workers(server: GunicornServer, name: str) -> Callable[[Points], Points]:
    """The points of metric ``name`` that ``server``'s workers sent."""
    return lambda points: [
        point
        for point in points
        if point.name == name and point.resource.get("process.parent_pid") == server.pid
    ]


def of_master(server: GunicornServer, name: str) -> Callable[[Points], Points]:
    """The points of metric ``name`` that ``server``'s master sent."""
    return lambda points: [
        point
        for point in points
        if point.name == name and point.resource.get("process.pid") == server.pid
    ]


def totals(points: Iterable[ReceivedMetricPoint], *keys: str) -> Counter[tuple[Any, ...]]:
    """Summed over the processes, each series' last value (a histogram's count) by ``keys``."""
    summed: Counter[tuple[Any, ...]] = Counter()
    for point in latest_points(points):
        value = point.count if point.kind == "histogram" else point.value
        summed[tuple(point.attributes.get(key) for key in keys)] += int(value or 0)
    return summed


def wait_for_totals(
    receiver: OtlpReceiver,
    select: Callable[[Points], Points],
    keys: tuple[str, ...],
    expected: dict[tuple[Any, ...], int],
) -> Points:
    """Wait until the totals of the selected points by ``keys`` are ``expected``; those points."""
    try:
        points = receiver.wait_for_metric_points(
            lambda points: totals(select(points), *keys) == expected, timeout=WAIT_S
        )
    except AssertionError:
        got = totals(select(receiver.metric_points()), *keys)
        raise AssertionError(f"totals by {keys}: expected {expected}, got {dict(got)}") from None
    return select(points)


def disconnect_mid_stream(server: GunicornServer, path: str) -> None:
    """Read the start of a large response, then reset the connection: the worker is still
    writing (the body is far larger than the sockets hold) and fails on the next write."""
    with socket.create_connection((LOOPBACK, server.port), timeout=WAIT_S) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_request_durations_add_up_per_route_and_status_across_workers(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, protocol: str
) -> None:
    """Every request is one duration point of its route and status, errors with error.type,
    rejected and abandoned requests too; active requests come back to zero; the master counts
    its workers."""
    server = gunicorn_server(
        protocol=protocol, workers=2, env=METRICS_ON, extra_args=NO_CONTROL_SOCKET
    )
    server.wait_for_workers(2)
    # One worker busy for a while: the requests meanwhile go to the other one.
    slow = threading.Thread(target=send, args=(server, "/slow/?seconds=1"))
    slow.start()
    for _ in range(6):
        assert send(server, "/ok/").status == 200
    slow.join()
    for item in range(4):
        assert send(server, f"/items/{item}/").status == 200
    for _ in range(3):
        assert send(server, "/status/404/").status == 404
    for _ in range(2):
        assert send(server, "/raise/").status == 500
    assert server.send_raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    disconnect_mid_stream(server, "/stream-large/")
    receiver.wait_for_events("/stream-large/")

    expected = {
        ("ok/", 200): 6,
        ("slow/", 200): 1,
        ("items/<int:item_id>/", 200): 4,
        ("status/<int:code>/", 404): 3,
        ("raise/", 500): 2,
        (None, 400): 1,
        ("stream-large/", 200): 1,
    }
    keys = ("http.route", "http.response.status_code")
    durations = wait_for_totals(receiver, of_workers(server, DURATION), keys, expected)
    # gunicorn could not even read the method of the rejected request.
    active = {("GET",): 0, ("_OTHER",): 0}
    wait_for_totals(receiver, of_workers(server, ACTIVE), ("http.request.method",), active)

    assert len({point.instance for point in durations}) == 2, "each worker its own series"
    for point in durations:
        assert point.unit == "s"
        assert point.explicit_bounds == SEMCONV_BUCKETS
        assert point.temporality == 2  # cumulative
        assert point.resource["service.name"] == "djangoapp-tests"
        assert point.resource["process.pid"] in server.worker_pids()
        assert "url.path" not in point.attributes and "url.query" not in point.attributes
        assert point.transport == ("grpc" if protocol == "grpc" else "http")
    errors = totals(durations, "http.route", "error.type")
    assert errors[("raise/", "RuntimeError")] == 2
    assert errors[("ok/", None)] == 6
    assert errors[("status/<int:code>/", None)] == 3  # a 4xx is the client's error
    (rejected,) = [
        point for point in latest_points(durations) if "http.route" not in point.attributes
    ]
    assert rejected.attributes["error.type"].startswith("gunicorn.http.errors.")
    ok = [point for point in durations if point.attributes.get("http.route") == "ok/"]
    assert ok[0].attributes == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "http.route": "ok/",
        "http.response.status_code": 200,
    }
    # An exemplar of a duration point is a wide event of that route.
    events = {(event.trace_id, event.span_id) for event in receiver.events_for("/ok/")}
    exemplars = [(e.trace_id, e.span_id) for point in ok for e in point.exemplars]
    assert exemplars and set(exemplars) <= events

    by_state = wait_for_totals(
        receiver, of_master(server, WORKERS), ("gunicorn.worker.state",),
        {("busy",): 0, ("idle",): 2},
    )  # fmt: skip
    master = by_state[0].resource
    assert master["process.pid"] == server.pid
    assert master["service.instance.id"] not in {point.instance for point in durations}
    assert receiver.wait_for_metric_points(lambda points: bool(of_master(server, BACKLOG)(points)))
    rss = receiver.wait_for_metric_points(
        lambda points: (
            {p.attributes["gunicorn.worker.id"] for p in of_master(server, RSS)(points)} == {0, 1}
        )
    )
    assert all(point.value and point.value > 0 for point in of_master(server, RSS)(rss))
    # The master forked an exporting child for each of those exports: never with a thread of
    # ours running (Python 3.12+ would warn).
    assert FORK_WARNING not in server.log_text()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_timeout_is_counted_before_its_worker_goes_and_exits_by_reason(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, protocol: str
) -> None:
    """With exports a minute apart, a timed-out worker's duration point arrives all the same
    (flushed before it exits); the master's last export counts the timeout, the crash and the
    workers gunicorn stopped on its way out."""
    server = gunicorn_server(protocol=protocol, workers=2, timeout=3, env=METRICS_AT_EXIT_ONLY)
    server.wait_for_workers(2)
    assert send(server, "/slow/?seconds=30").status == 500  # the watchdog's answer
    points = wait_for_totals(
        receiver,
        of_workers(server, DURATION),
        ("http.route", "http.response.status_code", "error.type"),
        {("slow/", 500, "timeout"): 1},
    )
    (timed_out,) = points
    assert 1.5 <= (timed_out.sum or 0) < 3
    wait_for_totals(receiver, of_workers(server, ACTIVE), ("http.request.method",), {("GET",): 0})
    with pytest.raises(ConnectionError):
        server.get("/crash/")
    # Reaped before gunicorn stops (a worker that ends as gunicorn stops ends in its shutdown).
    killed = re.compile(r"Worker \(pid:(\d+)\) was sent SIGKILL")
    wait_until(lambda: killed.search(server.log_text()) is not None, WAIT_S, "a SIGKILL reaped")
    crashed = killed.search(server.log_text())
    assert crashed is not None
    wait_until_replaced(server, int(crashed[1]))
    assert server.stop() == 0

    wait_for_totals(
        receiver,
        of_master(server, EXITS),
        ("gunicorn.worker.exit_reason",),
        {("timeout",): 1, ("crash",): 1, ("shutdown",): 2, ("max_requests",): 0, ("reload",): 0},
    )
    # The crashed worker's request: its event and its duration point came from the master.
    wait_for_totals(
        receiver,
        of_master(server, DURATION),
        ("http.route", "error.type"),
        {("crash/", "SIGKILL"): 1},
    )


def test_a_timeout_gunicorn_aborts_first_is_flushed_before_the_kill(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """A request in C code that holds the GIL but checks for signals: gunicorn's SIGABRT comes
    before the watchdog could run; the timeout's point arrives all the same, before the kill."""
    server = gunicorn_server(timeout=3, env=METRICS_AT_EXIT_ONLY)
    with contextlib.suppress(ConnectionError, http.client.HTTPException):
        server.get("/regex-storm/")  # gunicorn's 500, or nothing
    keys = ("http.route", "error.type")
    wait_for_totals(receiver, of_workers(server, DURATION), keys, {("regex-storm/", "timeout"): 1})


def test_a_threaded_workers_timeout_is_one_point_and_no_longer_active(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """gthread: a request past WIDE_EVENTS_REQUEST_TIMEOUT is a timeout point (no status: none
    was sent yet) and stops counting as active at its event, though it goes on to its end;
    requests served by the other threads meanwhile count as usual."""
    server = gunicorn_server(threads=4, env={**METRICS_ON, "WIDE_EVENTS_REQUEST_TIMEOUT": "1"})
    slow = threading.Thread(target=send, args=(server, "/slow/?seconds=2"))
    slow.start()
    for _ in range(5):
        assert send(server, "/ok/").status == 200
    slow.join()
    keys = ("http.route", "http.response.status_code", "error.type")
    expected = {("slow/", None, "timeout"): 1, ("ok/", 200, None): 5}
    wait_for_totals(receiver, of_workers(server, DURATION), keys, expected)
    wait_for_totals(receiver, of_workers(server, ACTIVE), ("http.request.method",), {("GET",): 0})


def test_a_gevent_workers_concurrent_requests_are_counted_each(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """Twenty requests interleaving in one gevent worker: twenty points, none left active."""
    server = gunicorn_server(worker_class="gevent", env=METRICS_ON)
    senders = [
        threading.Thread(target=send, args=(server, "/slow/?seconds=0.3")) for _ in range(20)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    keys = ("http.route", "http.response.status_code")
    wait_for_totals(receiver, of_workers(server, DURATION), keys, {("slow/", 200): 20})
    wait_for_totals(receiver, of_workers(server, ACTIVE), ("http.request.method",), {("GET",): 0})


# -- the ASGI workers: the same metrics from the same events ------------------------------------


def send_each(server: GunicornServer, path: str, count: int, status: int = 200) -> None:
    """``count`` requests to ``path``, one after the other, each answered ``status``."""
    for _ in range(count):
        assert send(server, path).status == status


@pytest.mark.parametrize("worker_class", ASGI_WORKER_CLASSES)
def test_an_asgi_workers_requests_add_up_per_route_and_status(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, worker_class: str
) -> None:
    """Sync and async views, their exceptions, requests at once, a client gone mid-request (and
    the 400 gunicorn's asgi worker answers itself): one duration point each, of its route and
    status, error.type on the exceptions'; active while in flight, none left active."""
    server = start_asgi(gunicorn_server, worker_class, env=METRICS_ON)
    send_each(server, "/ok/", 5)
    send_each(server, "/async/ok/", 4)
    send_each(server, "/status/404/", 3, status=404)
    send_each(server, "/raise/", 1, status=500)
    send_each(server, "/async/raise/", 2, status=500)
    senders = [
        threading.Thread(target=send, args=(server, "/async/sleep/?seconds=0.3")) for _ in range(10)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    expected = {
        ("ok/", 200): 5,
        ("async/ok/", 200): 4,
        ("status/<int:code>/", 404): 3,
        ("raise/", 500): 1,
        ("async/raise/", 500): 2,
        ("async/sleep/", 200): 10,
        ("async/sleep/", None): 1,  # the client that went away: no response started
    }
    active = {("GET",): 0}
    if worker_class == "asgi":
        assert server.send_raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
        expected[(None, 400)] = 1
        active[("_OTHER",)] = 0  # gunicorn could not read its method
    # The one in flight now is active, until its client goes away.
    with socket.create_connection((LOOPBACK, server.port), timeout=WAIT_S) as sock:
        sock.sendall(b"GET /async/sleep/?seconds=60 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        in_flight = {**active, ("GET",): 1}
        wait_for_totals(receiver, of_workers(server, ACTIVE), ("http.request.method",), in_flight)

    keys = ("http.route", "http.response.status_code")
    durations = wait_for_totals(receiver, of_workers(server, DURATION), keys, expected)
    wait_for_totals(receiver, of_workers(server, ACTIVE), ("http.request.method",), active)

    (worker,) = server.worker_pids()
    assert {point.resource["process.pid"] for point in durations} == {worker}
    errors = totals(durations, "http.route", "error.type")
    assert errors[("raise/", "RuntimeError")] == 1
    assert errors[("async/raise/", "RuntimeError")] == 2
    assert errors[("async/ok/", None)] == 4
    assert errors[("async/sleep/", None)] == 11
    if worker_class == "asgi":
        (rejected,) = [
            point for point in latest_points(durations) if "http.route" not in point.attributes
        ]
        assert rejected.attributes["error.type"].startswith("gunicorn.")
    # An exemplar of a duration point is a wide event of that route, from whichever thread.
    for path, route in (("/async/ok/", "async/ok/"), ("/ok/", "ok/")):
        events = {(event.trace_id, event.span_id) for event in receiver.events_for(path)}
        of_route = [point for point in durations if point.attributes.get("http.route") == route]
        exemplars = [(e.trace_id, e.span_id) for point in of_route for e in point.exemplars]
        assert exemplars and set(exemplars) <= events


@pytest.mark.parametrize("worker_class", ASGI_WORKER_CLASSES)
def test_a_blocked_loops_timeouts_are_counted_before_its_worker_exits(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, worker_class: str
) -> None:
    """With exports a minute apart, the points of the request blocking the loop and of the one
    awaiting beside it arrive all the same: the watchdog flushes them before it exits the
    worker, which leaves nothing active."""
    server = start_asgi(
        gunicorn_server, worker_class, timeout=GUNICORN_TIMEOUT, env=METRICS_AT_EXIT_ONLY
    )
    (worker,) = server.wait_for_workers(1)
    send_in_background(server, "/async/sleep/?seconds=60", 1)
    event_while(server, receiver, active=2)  # quick /ok/ requests until one sees the other
    assert send_stuck(server, "/async/cpu/?seconds=60") is None  # the worker went with it

    routes = {"async/cpu/", "async/sleep/"}
    points = wait_for_totals(
        receiver,
        lambda points: [
            point
            for point in of_workers(server, DURATION)(points)
            if point.attributes.get("http.route") in routes
        ],
        ("http.route", "http.response.status_code", "error.type"),
        {("async/cpu/", None, "timeout"): 1, ("async/sleep/", None, "timeout"): 1},
    )
    assert {point.resource["process.pid"] for point in points} == {worker}
    assert all(0 < (point.sum or 0) < GUNICORN_TIMEOUT for point in points)
    wait_for_totals(receiver, of_workers(server, ACTIVE), ("http.request.method",), {("GET",): 0})
    wait_for_log(server, rf"Worker \(pid:{worker}\) exited with code 1")
    assert "WORKER TIMEOUT" not in server.log_text()


@pytest.mark.parametrize("worker_class", ASGI_WORKER_CLASSES)
def test_a_slow_cooperative_asgi_request_is_one_timeout_point_at_its_deadline(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, worker_class: str
) -> None:
    """Past WIDE_EVENTS_REQUEST_TIMEOUT, an awaiting view and a sync view in its thread are
    timeout points (no status: none was sent yet) and stop counting as active, though they go
    on to answer; their end adds no second point; the worker serves others meanwhile."""
    server = start_asgi(
        gunicorn_server, worker_class, env={**METRICS_ON, "WIDE_EVENTS_REQUEST_TIMEOUT": "1"}
    )
    slow = [
        threading.Thread(target=send, args=(server, f"{path}?seconds=2.5"))
        for path in ("/async/sleep/", "/slow/")
    ]
    for sender in slow:
        sender.start()
    send_each(server, "/async/ok/", 2)
    for sender in slow:
        sender.join()
    send_each(server, "/async/ok/", 1)  # its point is exported after the slow ones ended

    keys = ("http.route", "http.response.status_code", "error.type")
    expected = {
        ("async/sleep/", None, "timeout"): 1,
        ("slow/", None, "timeout"): 1,
        ("async/ok/", 200, None): 3,
    }
    durations = wait_for_totals(receiver, of_workers(server, DURATION), keys, expected)
    wait_for_totals(receiver, of_workers(server, ACTIVE), ("http.request.method",), {("GET",): 0})
    timed_out = [p for p in latest_points(durations) if p.attributes.get("error.type") == "timeout"]
    assert all(1 <= (point.sum or 0) < 2.5 for point in timed_out)


def test_workers_replaced_after_max_requests_and_reload_are_counted_so(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """A worker that served its --max-requests, and the workers a HUP replaced, by reason."""
    server = gunicorn_server(
        workers=1, extra_args=["--max-requests", "2"], env=METRICS_AT_EXIT_ONLY
    )
    (first,) = server.wait_for_workers(1)
    for _ in range(2):
        assert send(server, "/ok/").status == 200
    wait_until_replaced(server, first)
    (second,) = server.wait_for_workers(1)
    server.process.send_signal(signal.SIGHUP)  # a new worker, the old one stopped
    wait_until_replaced(server, second)
    assert server.stop() == 0

    wait_for_totals(
        receiver,
        of_master(server, EXITS),
        ("gunicorn.worker.exit_reason",),
        {("timeout",): 0, ("crash",): 0, ("shutdown",): 1, ("max_requests",): 1, ("reload",): 1},
    )


def wait_until_replaced(server: GunicornServer, pid: int) -> None:
    """Wait until gunicorn reaped worker ``pid`` (it is no child, not even a zombie) and has
    another."""
    wait_until(
        lambda: (pids := server.worker_pids()) != [] and pid not in pids,
        timeout=WAIT_S,
        what=f"worker {pid} replaced",
    )


MASTER_EXPORT_FAILED = "the master's metrics could not be exported"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_dead_collector_costs_requests_nothing_and_the_master_says_so_once(
    gunicorn_server: StartGunicorn, protocol: str
) -> None:
    """Nothing listens at the endpoint: every request is served, the master's exporting children
    fail one after the other and the master says so in one line, gunicorn stops in time."""
    server = gunicorn_server(
        protocol=protocol,
        workers=2,
        env={
            **METRICS_ON,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
            "WIDE_EVENTS_SHUTDOWN_TIMEOUT": "2",
        },
    )
    statuses = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline or len(statuses) < 20:
        statuses.append(server.get("/ok/")[0])
    assert set(statuses) == {200}
    wait_until(lambda: MASTER_EXPORT_FAILED in server.log_text(), WAIT_S, "the master's line")
    assert server.stop(timeout=9) == 0  # gunicorn's graceful timeout is 10 s here
    assert server.log_text().count(MASTER_EXPORT_FAILED) == 1


def test_no_metrics_exporter_sends_nothing_and_logs_no_error(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """OTEL_METRICS_EXPORTER=none: not one metrics request, from workers or master, nor an
    error, through requests of every kind and a shutdown."""
    server = gunicorn_server(
        workers=2, env={"OTEL_METRICS_EXPORTER": "none", "OTEL_METRIC_EXPORT_INTERVAL": "250"}
    )
    server.wait_for_workers(2)
    assert send(server, "/ok/").status == 200
    assert send(server, "/raise/").status == 500
    assert server.send_raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    receiver.wait_for_events("/ok/")
    assert server.stop() == 0

    assert receiver.metrics_requests == 0
    log = server.log_text()
    assert "internal error" not in log
    assert "could not be exported" not in log
