"""gevent workers: many requests in one worker, each its own event; both ways to run out of time.

The request contract itself (HTTP, route, view, database work, app fields, exceptions,
streaming, gunicorn's own 400 and 431) runs under gevent in ``test_request_events.py``; here is
what only a worker of greenlets has: concurrent requests in one process that must not mix, a
request holding the hub (no greenlet runs, gunicorn's heartbeat neither) against one that keeps
yielding past its deadline, a worker killed with many requests in flight, and ``--preload``.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

from tests.integration.conftest import AUTO_CONFIG_LINE, GunicornServer, StartGunicorn
from tests.integration.events import Exchange, barrier, send, server_spans_of, wait_for_trace
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.integration.test_monitor_and_board import FORK_WARNING
from tests.integration.test_requests_in_flight import (
    MONITOR_ENV,
    STUCK_PATH,
    STUCK_SECONDS,
    event_while,
    send_in_background,
)
from tests.integration.test_timeout_events import (
    GUNICORN_TIMEOUT,
    STATUS_ERROR,
    only_event,
    stuck_request,
    wait_for_log,
)

pytest.importorskip("gevent")

CONCURRENT_REQUESTS = 50
# What a gevent worker must never print: a thread's end under the patched threading, a
# greenlet broken across a fork (quay #5820), a connection shared between greenlets.
BROKEN = re.compile(r"Exception ignored in thread|KeyError|AssertionError|DatabaseWrapper objects")


@pytest.fixture
def server(gunicorn_server: StartGunicorn) -> GunicornServer:
    return gunicorn_server(worker_class="gevent", timeout=GUNICORN_TIMEOUT)


def the_events(
    server: GunicornServer, receiver: OtlpReceiver, exchanges: list[Exchange]
) -> list[ReceivedSpan]:
    """The one event of each exchange, in the same order."""
    for exchange in exchanges:
        wait_for_trace(receiver, exchange.trace_id)
    barrier(server, receiver)
    events = []
    for exchange in exchanges:
        (event,) = server_spans_of(receiver, exchange.trace_id)
        events.append(event)
    return events


def send_all_at_once(server: GunicornServer, paths: list[str]) -> list[Exchange]:
    """One request per path, each from its own thread, released together; their answers."""
    start = threading.Barrier(len(paths))
    answers: dict[int, Exchange] = {}

    def one(index: int, path: str) -> None:
        start.wait()
        answers[index] = send(server, path)

    threads = [
        threading.Thread(target=one, args=(index, path), daemon=True)
        for index, path in enumerate(paths)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == len(paths), "some requests got no answer"
    return [answers[index] for index in range(len(paths))]


def test_the_start_up_message_says_what_the_watchdog_does(server: GunicornServer) -> None:
    line = wait_for_log(server, r"gunicorn-django-wide-events: GeventWorker workers: .*").group(0)

    assert "a request holding the hub gets its timeout event 2s after" in line
    assert "one still yielding after 2s gets it then" in line
    assert "have no watchdog" not in server.log_text()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_fifty_concurrent_requests_in_one_worker_each_get_their_own_event(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, protocol: str
) -> None:
    """Requests interleaving in one worker: each event has its own query, SQL, fields, timings."""
    server = gunicorn_server(protocol=protocol, worker_class="gevent", timeout=30)
    tags = list(range(CONCURRENT_REQUESTS))
    exchanges = send_all_at_once(server, [f"/interleaved/?tag={tag}" for tag in tags])
    events = the_events(server, receiver, exchanges)

    for tag, exchange, event in zip(tags, exchanges, events, strict=True):
        attributes = event.attributes
        queries = 1 + tag % 3
        assert exchange.status == 200 and exchange.body == str(tag).encode()
        assert event.parent_span_id == exchange.parent_span_id
        assert attributes["url.query"] == f"tag={tag}"
        assert attributes["app.tag"] == tag
        assert attributes["django.db.query_count"] == queries
        assert attributes["django.db.duplicate_query_count"] == queries - 1
        assert attributes["django.db.slowest_query"] == f"SELECT {tag} AS tag_{tag}"
        # Its own sleeps (0.05 s before each statement) are in its span, not the others'.
        assert event.duration_ns >= queries * 50_000_000
        assert attributes["django.db.duration_ms"] < event.duration_ns / 1e6
        assert attributes["gunicorn.workers.busy"] == 1
        assert "wide_event.cpu_time_ms" not in attributes
    assert len({event.attributes["gunicorn.worker.id"] for event in events}) == 1
    # They ran at the same time, not one after the other.
    assert max(event.attributes["gunicorn.worker.active_requests"] for event in events) >= 10


def test_the_worker_is_busy_while_any_request_runs_and_events_count_those_in_flight(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """gunicorn.workers.busy counts the worker; active_requests counts its requests."""
    server = gunicorn_server(worker_class="gevent", timeout=30, env=MONITOR_ENV)
    send_in_background(server, "/slow/?seconds=3", 2)
    quick = event_while(server, receiver, active=3)

    assert quick.attributes["gunicorn.workers.busy"] == 1
    assert quick.attributes["gunicorn.workers.utilization"] == 1.0
    assert quick.attributes["gunicorn.worker.active_requests"] == 3
    slow = receiver.wait_for_events("/slow/", count=2)
    assert [event.attributes["wide_event.type"] for event in slow] == ["request", "request"]


@pytest.mark.parametrize(
    ("path", "frame"),
    [("/cpu-loop/", "cpu_loop"), ("/blocking-sleep/", "blocking_sleep")],
    ids=["pure-python-loop", "blocking-call"],
)
def test_a_request_holding_the_hub_gets_its_timeout_event_with_its_stack(
    server: GunicornServer, receiver: OtlpReceiver, path: str, frame: str
) -> None:
    """No greenlet runs, gunicorn's heartbeat neither: before gunicorn kills the worker, the
    watchdog thread sends the event, with the stack the request is running."""
    server.wait_for_workers(1)
    _, event = stuck_request(server, receiver, path, "?seconds=30")

    attributes = event.attributes
    assert attributes["wide_event.type"] == "timeout"
    assert attributes["error.type"] == "timeout"
    assert event.status_code == STATUS_ERROR
    assert "wide_event.reported_by" not in attributes
    assert attributes["http.route"] == path.strip("/") + "/"
    assert attributes["django.view"] == f"djangoapp.views.{frame}"
    stack = attributes["code.stacktrace"]
    assert f"in {frame}" in stack
    assert "views.py" in stack
    assert "gunicorn/workers" not in stack  # trimmed above the request path
    # The margin before gunicorn's --timeout, counted from the worker's last heartbeat.
    assert attributes["wide_event.deadline_ms"] <= (GUNICORN_TIMEOUT - 1) * 1000
    assert attributes["wide_event.elapsed_ms"] < GUNICORN_TIMEOUT * 1000
    wait_for_log(server, r"ran past its \S+ deadline holding the worker's hub")
    assert send(server, "/ok/").status == 200


def test_requests_waiting_behind_the_hub_holder_get_one_event_each(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """The requests in flight beside the one holding the hub end however gunicorn ends the
    worker: each with exactly one event, none lost, none twice."""
    server.wait_for_workers(1)
    bystanders = send_in_background(server, "/slow/?seconds=60", 2)
    event_while(server, receiver, active=3)
    _, holder = stuck_request(server, receiver, "/cpu-loop/", "?seconds=30")
    for bystander in bystanders:
        bystander.join(60)
    waiting = receiver.wait_for_events("/slow/", count=2)
    barrier(server, receiver)

    assert holder.attributes["wide_event.type"] == "timeout"
    assert len(receiver.events_for("/slow/")) == 2
    assert len({event.trace_id for event in waiting}) == 2


def test_c_code_holding_the_gil_gets_its_timeout_event_from_the_master(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Not even the watchdog thread runs: gunicorn kills the worker for its timeout, and the
    master sends the event from the board, the last resort, as for sync workers."""
    server.wait_for_workers(1)
    _, event = stuck_request(server, receiver, "/hold-gil/")

    assert event.attributes["wide_event.type"] == "timeout"
    assert event.attributes["wide_event.reported_by"] == "master"
    assert event.attributes["http.request.method"] == "GET"
    assert "code.stacktrace" not in event.attributes


def test_a_slow_cooperative_request_gets_its_deadline_event_and_goes_on(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """A request that keeps yielding is never killed by gunicorn: its event comes at its own
    deadline, with where it waits, and the request still answers; its end adds no event."""
    server = gunicorn_server(
        protocol="http/protobuf",
        worker_class="gevent",
        timeout=30,
        env={"WIDE_EVENTS_REQUEST_TIMEOUT": "1"},
    )
    (worker,) = server.wait_for_workers(1)
    answers: list[Exchange] = []
    slow = threading.Thread(target=lambda: answers.append(send(server, "/slow/?seconds=2.5")))
    started = time.monotonic()
    slow.start()
    (deadline_event,) = receiver.wait_for_events("/slow/", count=1)
    # The worker serves others meanwhile: the hub is free.
    assert send(server, "/ok/").status == 200
    slow.join(30)
    elapsed = time.monotonic() - started
    (exchange,) = answers
    event = only_event(server, receiver, exchange.trace_id)

    assert event == deadline_event
    assert exchange.status == 200 and exchange.body == b"slow"
    assert elapsed >= 2.5
    attributes = event.attributes
    assert attributes["wide_event.type"] == "timeout"
    assert 1000 <= attributes["wide_event.elapsed_ms"] < 2500
    assert attributes["wide_event.deadline_ms"] == 1000
    assert "time.sleep" in attributes["code.stacktrace"]
    assert "in slow" in attributes["code.stacktrace"]
    assert "wide_event.reported_by" not in attributes
    assert server.worker_pids() == [worker]
    wait_for_log(server, r"GET /slow/ \(trace_id \w+\) ran past its 1.0s deadline; timeout")


def test_the_master_reports_every_request_in_flight_of_a_killed_gevent_worker(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """SIGKILL with three requests in flight: three crash events, each its own, all there."""
    server = gunicorn_server(worker_class="gevent", timeout=300, env=MONITOR_ENV)
    send_in_background(server, STUCK_PATH, 3)
    event_while(server, receiver, active=4)
    (worker,) = server.worker_pids()
    os.kill(worker, signal.SIGKILL)

    events = receiver.wait_for_events("/slow/", count=3)
    server.wait_for_workers(1)
    barrier(server, receiver)

    assert len(receiver.events_for("/slow/")) == 3
    assert len({event.trace_id for event in events}) == 3
    for event in events:
        assert event.attributes["wide_event.type"] == "crash"
        assert event.attributes["error.type"] == "SIGKILL"
        assert event.attributes["wide_event.reported_by"] == "master"
        assert event.attributes["django.view"] == "djangoapp.views.slow"
        assert event.attributes["url.query"] == f"seconds={STUCK_SECONDS}&token=REDACTED"


PATCH_THE_MASTER = "from gevent import monkey\nmonkey.patch_all()\n"


@pytest.mark.parametrize(
    ("launcher", "config_source"),
    [
        ("instrument", ""),
        # As gevent users often have it (gunicorn #2796): the master patched first thing.
        ("instrument", PATCH_THE_MASTER),
        # The same, with the SDK set up after the patch: its export thread is a greenlet of the
        # master (quay #5820, where one broke every worker).
        ("config", PATCH_THE_MASTER + AUTO_CONFIG_LINE),
    ],
    ids=["preload", "preload-patched-master", "preload-patched-master-then-sdk"],
)
def test_preload_starts_serves_events_and_stops_cleanly(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, launcher: str, config_source: str
) -> None:
    """With the app loaded in the master, workers start, serve concurrent requests with their
    own database work, fork without threads of ours, and stop without a thread error."""
    server = gunicorn_server(
        worker_class="gevent",
        workers=2,
        timeout=30,
        extra_args=["--preload"],
        launcher=launcher,
        config_source=config_source,
    )
    exchanges = send_all_at_once(server, [f"/interleaved/?tag={tag}" for tag in range(6)])
    for exchange in exchanges:
        wait_for_trace(receiver, exchange.trace_id)
    for tag, exchange in enumerate(exchanges):
        (event,) = server_spans_of(receiver, exchange.trace_id)
        assert exchange.status == 200
        assert event.attributes["django.db.slowest_query"] == f"SELECT {tag} AS tag_{tag}"
    assert server.stop() == 0

    log = server.log_text()
    assert FORK_WARNING not in log
    assert not BROKEN.search(log), log


def test_a_stopping_gevent_worker_prints_no_thread_errors(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """The export threads started before gevent patched threading end quietly."""
    barrier(server, receiver)
    assert server.stop() == 0

    log = server.log_text()
    assert "Worker exiting" in log
    assert not BROKEN.search(log), log
