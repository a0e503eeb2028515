"""Timeout and crash events: exactly one event per request that ran out of time or lost its
worker, with what it was doing, and a server that keeps serving afterwards.

gunicorn runs with ``--timeout 3`` and the default one-second margin, so a sync worker's
deadline falls two seconds after its last heartbeat and gunicorn's own SIGABRT a second later.
"""

from __future__ import annotations

import re
import time
from http.client import IncompleteRead, RemoteDisconnected

import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.djangoapp.views import CRASH_QUERY, SLOW_C_QUERY
from tests.integration.events import (
    EVENT_TIMEOUT,
    Exchange,
    barrier,
    send,
    server_spans_of,
    wait_for_trace,
)
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan

PROTOCOLS = ["grpc", "http/protobuf"]
STATUS_ERROR = 2
GUNICORN_TIMEOUT = 3


def wait_for_log(server: GunicornServer, pattern: str, timeout: float = 30.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, server.log_text())
        if match:
            return match
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} never appeared in the log:\n{server.log_text()}")
        time.sleep(0.05)


def send_stuck(server: GunicornServer, path: str) -> Exchange | None:
    """Send a request that will not finish normally; None when the connection just dies."""
    try:
        return send(server, path)
    except (RemoteDisconnected, IncompleteRead, ConnectionResetError):
        return None


def only_event(server: GunicornServer, receiver: OtlpReceiver, trace_id: str) -> ReceivedSpan:
    """The one SERVER span of ``trace_id``, checked after the (new) worker served a barrier."""
    wait_for_trace(receiver, trace_id)
    server.wait_for_workers(1)
    barrier(server, receiver)
    (event,) = server_spans_of(receiver, trace_id)
    return event


def stuck_request(
    server: GunicornServer,
    receiver: OtlpReceiver,
    path: str,
    query: str = "",
    sent_path: str | None = None,
) -> tuple[Exchange | None, ReceivedSpan]:
    """Send a request that gets stuck; return the answer (if any) and its one event.

    ``sent_path``: the path sent, when the event reports it otherwise (``path``, redacted).
    """
    exchange = send_stuck(server, (sent_path or path) + query)
    spans = receiver.wait_for(
        lambda spans: any(s.is_server and s.attributes.get("url.path") == path for s in spans),
        timeout=EVENT_TIMEOUT,
    )
    (event,) = [s for s in spans if s.is_server and s.attributes.get("url.path") == path]
    barrier(server, receiver)
    assert len(receiver.events_for(path)) == 1
    return exchange, event


@pytest.fixture
def sync_server(gunicorn_server: StartGunicorn, request: pytest.FixtureRequest) -> GunicornServer:
    protocol = getattr(request, "param", "grpc")
    return gunicorn_server(protocol=protocol, timeout=GUNICORN_TIMEOUT)


@pytest.mark.parametrize("sync_server", PROTOCOLS, indirect=True)
def test_blocking_python_call_becomes_one_timeout_event_before_gunicorn_kills(
    sync_server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A view stuck in time.sleep: timeout event with its stack, a 500 answer, a new worker."""
    server = sync_server
    (worker,) = server.wait_for_workers(1)
    exchange, event = stuck_request(server, receiver, "/slow/", "?seconds=30")

    assert exchange is not None and exchange.status == 500
    assert event.trace_id == exchange.trace_id
    assert event.parent_span_id == exchange.parent_span_id
    attributes = event.attributes
    assert attributes["wide_event.type"] == "timeout"
    assert attributes["error.type"] == "timeout"
    assert event.status_code == STATUS_ERROR
    assert attributes["http.route"] == "slow/"
    assert attributes["django.view"] == "djangoapp.views.slow"
    assert attributes["http.response.status_code"] == 500
    assert "time.sleep" in attributes["code.stacktrace"]
    assert "views.py" in attributes["code.stacktrace"]
    assert 1500 <= attributes["wide_event.elapsed_ms"] < GUNICORN_TIMEOUT * 1000
    assert attributes["gunicorn.worker.id"] == 0
    assert "wide_event.reported_by" not in attributes
    # The worker went away on its own terms: not gunicorn's kill, not its exit codes 3 or 4.
    wait_for_log(server, rf"Worker \(pid:{worker}\) exited with code 1")
    assert "WORKER TIMEOUT" not in server.log_text()
    assert send(server, "/ok/").status == 200


def test_slow_query_in_c_reports_the_sql_in_flight(
    sync_server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A query running in sqlite's C code (GIL released): its text is db.query.text."""
    _, event = stuck_request(sync_server, receiver, "/slow-sql/")

    assert event.attributes["wide_event.type"] == "timeout"
    assert event.attributes["db.query.text"] == SLOW_C_QUERY
    assert "10000000000" not in repr(sorted(event.attributes.items()))
    assert "sqlite3" in event.attributes["code.stacktrace"]
    assert send(sync_server, "/ok/").status == 200


@pytest.mark.parametrize("sync_server", PROTOCOLS, indirect=True)
def test_c_code_holding_the_gil_gets_its_timeout_event_from_the_master(
    sync_server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Neither watchdog nor signal handler can run: the master sends the event from the board."""
    exchange, event = stuck_request(sync_server, receiver, "/hold-gil/")

    assert exchange is None  # gunicorn's SIGKILL: the client gets no answer
    assert event.attributes["wide_event.type"] == "timeout"
    assert event.attributes["wide_event.reported_by"] == "master"
    assert event.attributes["error.type"] == "timeout"
    assert event.attributes["http.request.method"] == "GET"
    assert event.status_code == STATUS_ERROR
    assert event.duration_ns >= GUNICORN_TIMEOUT * 1e9
    assert send(sync_server, "/ok/").status == 200


def test_signal_getting_through_reaches_worker_abort(
    sync_server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """GIL held but signals checked (re's C loop): gunicorn's SIGABRT sends the event."""
    _, event = stuck_request(sync_server, receiver, "/regex-storm/")

    assert event.attributes["wide_event.type"] == "timeout"
    assert "wide_event.reported_by" not in event.attributes
    assert event.attributes["http.route"] == "regex-storm/"
    assert send(sync_server, "/ok/").status == 200


@pytest.mark.parametrize(
    ("signal_name", "sync_server"),
    [("SIGKILL", "grpc"), ("SIGSEGV", "http/protobuf")],
    indirect=["sync_server"],
)
def test_worker_dying_mid_request_becomes_a_crash_event(
    sync_server: GunicornServer, receiver: OtlpReceiver, signal_name: str
) -> None:
    """A worker killed mid-request (OOM killer, segfault): the master sends a crash event."""
    exchange = send_stuck(sync_server, f"/crash/?signal={signal_name}")
    spans = receiver.wait_for(
        lambda spans: any(s.is_server and s.attributes.get("url.path") == "/crash/" for s in spans)
    )
    (event,) = [s for s in spans if s.is_server and s.attributes.get("url.path") == "/crash/"]
    barrier(sync_server, receiver)

    assert exchange is None
    assert len(receiver.events_for("/crash/")) == 1
    assert event.attributes["wide_event.type"] == "crash"
    assert event.attributes["error.type"] == signal_name
    assert event.attributes["wide_event.reported_by"] == "master"
    assert event.status_code == STATUS_ERROR


def test_worker_dying_mid_query_names_the_query_in_its_crash_event(
    sync_server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """The statement in flight reaches the master through the board: its crash event has it."""
    exchange, event = stuck_request(sync_server, receiver, "/crash-in-sql/")
    assert exchange is None
    assert event.attributes["wide_event.type"] == "crash"
    assert event.attributes["wide_event.reported_by"] == "master"
    assert event.attributes["db.query.text"] == CRASH_QUERY
    assert send(sync_server, "/ok/").status == 200


def test_timeout_during_a_streaming_response(
    sync_server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Stuck after the first chunk: one timeout event; no 500 after the headers went out."""
    exchange, event = stuck_request(sync_server, receiver, "/stream-stall/")

    assert exchange is None  # the body was cut short
    assert event.attributes["wide_event.type"] == "timeout"
    assert event.attributes["http.response.status_code"] == 200  # sent with the first chunk
    assert (
        "stream_stall" in event.attributes["code.stacktrace"]
        or "chunks" in (event.attributes["code.stacktrace"])
    )
    assert send(sync_server, "/ok/").status == 200


def test_requests_ending_right_at_their_deadline_get_exactly_one_event(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """Twenty requests that end within milliseconds of their deadline: one event each."""
    server = gunicorn_server(
        worker_class="gthread", threads=2, env={"WIDE_EVENTS_REQUEST_TIMEOUT": "0.5"}
    )
    exchanges = [send(server, f"/slow/?seconds={0.49 + 0.001 * (n % 20)}") for n in range(20)]
    for exchange in exchanges:
        wait_for_trace(receiver, exchange.trace_id)
    barrier(server, receiver)

    kinds = []
    for exchange in exchanges:
        (event,) = server_spans_of(receiver, exchange.trace_id)
        kinds.append(event.attributes["wide_event.type"])
        assert exchange.status == 200
    assert set(kinds) <= {"request", "timeout"}


def test_gthread_slow_request_times_out_and_the_worker_carries_on(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """gthread: the timeout event comes at the deadline; the request still ends, no 2nd event."""
    server = gunicorn_server(
        protocol="http/protobuf",
        worker_class="gthread",
        threads=2,
        env={"WIDE_EVENTS_REQUEST_TIMEOUT": "1"},
    )
    (worker,) = server.wait_for_workers(1)
    started = time.monotonic()
    exchange = send(server, "/slow/?seconds=2.5")
    elapsed = time.monotonic() - started
    event = only_event(server, receiver, exchange.trace_id)

    assert exchange.status == 200 and exchange.body == b"slow"
    assert elapsed >= 2.5
    assert event.attributes["wide_event.type"] == "timeout"
    assert 1000 <= event.attributes["wide_event.elapsed_ms"] < 2500
    assert "time.sleep" in event.attributes["code.stacktrace"]
    assert server.worker_pids() == [worker]


def test_worker_retiring_through_max_requests_sends_no_crash_event(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """max_requests respawns between requests: every request is one plain event, no crash."""
    server = gunicorn_server(extra_args=["--max-requests", "2"])
    exchanges = [send(server, "/ok/") for _ in range(5)]
    for exchange in exchanges:
        assert exchange.status == 200
        wait_for_trace(receiver, exchange.trace_id)
    barrier(server, receiver)

    for exchange in exchanges:
        (event,) = server_spans_of(receiver, exchange.trace_id)
        assert event.attributes["wide_event.type"] == "request"
    assert not [s for s in receiver.server_spans() if s.attributes["wide_event.type"] != "request"]
