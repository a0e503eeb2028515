"""Every request in flight on the board: threaded workers, the master's fallback, honest figures.

A gthread worker serves several requests at once: each has its own board entry, so the worker
counts as busy while any of them runs, its events say how many it serves, and when it dies the
master sends one event per request in flight, with everything the board held of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.events import Exchange, send
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan

MONITOR_ENV = {"WIDE_EVENTS_MONITOR_INTERVAL": "0.2"}
STUCK_SECONDS = 120  # far beyond the test: the requests end only by the worker's death
STUCK_PATH = f"/slow/?seconds={STUCK_SECONDS}&token=s3cret"


def send_in_background(server: GunicornServer, path: str, count: int) -> list[threading.Thread]:
    """``count`` requests to ``path``, each from its own thread; their answers are not awaited."""

    def one() -> None:
        with contextlib.suppress(OSError):  # the worker was killed under it: that is the point
            send(server, path)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def event_of(server: GunicornServer, receiver: OtlpReceiver, exchange: Exchange) -> ReceivedSpan:
    spans = receiver.wait_for(
        lambda spans: any(s.trace_id == exchange.trace_id and s.is_server for s in spans)
    )
    (event,) = [s for s in spans if s.trace_id == exchange.trace_id and s.is_server]
    return event


def event_while(
    server: GunicornServer, receiver: OtlpReceiver, active: int, timeout: float = 30.0
) -> ReceivedSpan:
    """A quick request's event once the worker serves ``active`` requests, this one included."""
    for _ in range(int(timeout / 0.05)):
        event = event_of(server, receiver, send(server, "/ok/"))
        if event.attributes["gunicorn.worker.active_requests"] >= active:
            return event
        threading.Event().wait(0.05)
    raise AssertionError(f"the worker never served {active} requests at once")


@pytest.fixture
def gthread_server(gunicorn_server: StartGunicorn) -> Iterator[GunicornServer]:
    yield gunicorn_server(
        worker_class="gthread", threads=6, workers=1, timeout=300, env=MONITOR_ENV
    )


def test_a_threaded_worker_is_busy_while_any_of_its_requests_runs(
    gthread_server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """gunicorn.workers.busy counts the worker; active_requests counts its requests."""
    send_in_background(gthread_server, "/slow/?seconds=3", 2)
    quick = event_while(gthread_server, receiver, active=3)

    assert quick.attributes["gunicorn.workers.busy"] == 1
    assert quick.attributes["gunicorn.workers.utilization"] == 1.0
    assert quick.attributes["gunicorn.worker.active_requests"] == 3
    slow = receiver.wait_for_events("/slow/", count=2)
    assert all(event.attributes["gunicorn.workers.busy"] == 1 for event in slow)
    later = event_of(gthread_server, receiver, send(gthread_server, "/ok/"))
    assert later.attributes["gunicorn.worker.active_requests"] == 1


def test_the_master_reports_every_request_in_flight_of_a_killed_threaded_worker(
    gthread_server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """SIGKILL with three requests in flight: three crash events, each its own, all there."""
    send_in_background(gthread_server, STUCK_PATH, 3)
    event_while(gthread_server, receiver, active=4)
    (worker,) = gthread_server.worker_pids()
    os.kill(worker, signal.SIGKILL)

    events = receiver.wait_for_events("/slow/", count=3)
    gthread_server.wait_for_workers(1)
    assert send(gthread_server, "/ok/").status == 200  # the replacement serves

    assert len(events) == 3
    assert len({event.trace_id for event in events}) == 3
    for event in events:
        assert event.attributes["wide_event.type"] == "crash"
        assert event.attributes["error.type"] == "SIGKILL"
        assert event.attributes["wide_event.reported_by"] == "master"
        assert event.name == "GET slow/"
        assert event.attributes["http.route"] == "slow/"
        assert event.attributes["django.view"] == "djangoapp.views.slow"
        assert event.attributes["url.query"] == f"seconds={STUCK_SECONDS}&token=REDACTED"
    assert len(receiver.events_for("/slow/")) == 3


def test_figures_not_sampled_yet_are_absent_not_zero(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """Right after a worker starts the monitor has one reading of it: no CPU figure, no zeros."""
    server = gunicorn_server(workers=1, env={"WIDE_EVENTS_MONITOR_INTERVAL": "300"})
    event = event_of(server, receiver, send(server, "/ok/"))

    assert "gunicorn.worker.cpu.percent" not in event.attributes
    assert "gunicorn.workers.cpu.percent" not in event.attributes
    sampled = {
        key: value
        for key, value in event.attributes.items()
        if key.startswith(("gunicorn.worker.memory", "gunicorn.workers.memory"))
    }
    assert all(value > 0 for value in sampled.values()), sampled
