"""The gevent worker's watchdog, in process: real greenlets on this thread, the watchdog's own
real thread beside them, real events on a local tracer (no monkey-patching: the test process
stays as it is; the patched worker is tested under gunicorn in test_gevent_workers.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from opentelemetry.trace import SpanKind

from gunicorn_django_wide_events._worker.greenlets import GreenletRequestEvent, GreenletWatchdog
from gunicorn_django_wide_events._worker.watchdog import Deadlines, Heartbeat
from tests.unit.worker.tracing import SQL_MAX, Tracing
from tests.waiting import wait_until

greenlet = pytest.importorskip("greenlet")

KILL_BUDGET_S = 0.3


class Tmp:
    """gunicorn's WorkerTmp as Heartbeat sees it: the last heartbeat, and notify()."""

    def __init__(self) -> None:
        self.stamp = time.monotonic()

    def last_update(self) -> float:
        return self.stamp

    def notify(self) -> None:
        self.stamp = time.monotonic()


def the_watchdog(budget_s: float, heartbeat: Heartbeat | None) -> GreenletWatchdog:
    watchdog = GreenletWatchdog(
        None,
        deadlines=Deadlines(lambda now: now + budget_s, budget_s, sync=False),
        heartbeat=heartbeat,
        kill_budget_s=KILL_BUDGET_S,
    )
    watchdog.start()
    return watchdog


@pytest.fixture
def heartbeat() -> Heartbeat:
    return Heartbeat(Tmp())


@pytest.fixture
def watchdogs() -> Iterator[list[GreenletWatchdog]]:
    started: list[GreenletWatchdog] = []
    yield started
    for watchdog in started:
        watchdog.stop()


def greenlet_event(tracing: Tracing, method: str = "GET") -> GreenletRequestEvent:
    span = tracing.tracer.start_span(method, kind=SpanKind.SERVER)
    return GreenletRequestEvent(span, method, sql_max_length=SQL_MAX)


def attributes_of(tracing: Tracing) -> dict[str, object]:
    return dict(tracing.only_span().attributes or {})


def waiting_in_the_view(watchdog: GreenletWatchdog, event: GreenletRequestEvent) -> None:
    """A request's greenlet: watched, then suspended where a view would wait on the hub."""
    watchdog.watch(event)
    greenlet.getcurrent().parent.switch()
    watchdog.release(event)


def test_a_request_that_keeps_yielding_gets_its_event_at_its_deadline_with_where_it_waits(
    tracing: Tracing, heartbeat: Heartbeat, watchdogs: list[GreenletWatchdog]
) -> None:
    watchdog = the_watchdog(0.2, heartbeat)
    watchdogs.append(watchdog)
    event = greenlet_event(tracing)
    request = greenlet.greenlet(waiting_in_the_view)
    request.switch(watchdog, event)  # runs until it waits

    def beating_until_the_event_is_out() -> bool:
        heartbeat.last = time.monotonic()  # the hub runs: gunicorn's worker loop beats
        return event.finished

    wait_until(beating_until_the_event_is_out, timeout=10)
    attributes = attributes_of(tracing)
    assert attributes["wide_event.type"] == "timeout"
    assert "in waiting_in_the_view" in str(attributes["code.stacktrace"])
    assert attributes["wide_event.deadline_ms"] == 200
    assert "wide_event.cpu_time_ms" not in attributes
    request.switch()  # the request goes on and ends: no second event
    assert len(tracing.finished()) == 1


def holding_the_hub(watchdog: GreenletWatchdog, event: GreenletRequestEvent) -> None:
    """A request's greenlet that never yields: a CPU loop until its event is out."""
    watchdog.watch(event)
    deadline = time.monotonic() + 10
    while not event.finished and time.monotonic() < deadline:
        pass
    watchdog.release(event)


def test_the_request_holding_the_hub_gets_its_event_once_the_heartbeat_is_too_old(
    tracing: Tracing,
    heartbeat: Heartbeat,
    watchdogs: list[GreenletWatchdog],
    caplog: pytest.LogCaptureFixture,
) -> None:
    watchdog = the_watchdog(30, heartbeat)
    watchdogs.append(watchdog)
    waiting = greenlet_event(tracing, "POST")
    bystander = greenlet.greenlet(waiting_in_the_view)
    bystander.switch(watchdog, waiting)
    holder = greenlet_event(tracing)
    started = time.monotonic()

    with caplog.at_level(logging.ERROR):
        greenlet.greenlet(holding_the_hub).switch(watchdog, holder)

    assert holder.finished
    assert time.monotonic() - started >= KILL_BUDGET_S - 0.05
    (span,) = tracing.finished()
    attributes = dict(span.attributes or {})
    assert attributes["wide_event.type"] == "timeout"
    assert "in holding_the_hub" in str(attributes["code.stacktrace"])
    assert "wide_event.cpu_time_ms" not in attributes
    assert not waiting.finished  # suspended: not the one holding the hub
    assert "holding the worker's hub" in caplog.text
    bystander.switch()


def test_gunicorns_abort_sends_the_event_of_the_greenlet_it_interrupts_only(
    tracing: Tracing, watchdogs: list[GreenletWatchdog]
) -> None:
    """SIGABRT's handler runs in the greenlet holding the hub: that request's event goes out;
    the others are left to the abort, and to the master."""
    watchdog = the_watchdog(30, None)
    watchdogs.append(watchdog)
    waiting = greenlet_event(tracing, "POST")
    bystander = greenlet.greenlet(waiting_in_the_view)
    bystander.switch(watchdog, waiting)
    holder = greenlet_event(tracing)

    def aborted_mid_request() -> None:
        watchdog.watch(holder)
        watchdog.fire_all()  # where gunicorn's handle_abort calls the worker_abort hook

    greenlet.greenlet(aborted_mid_request).switch()

    (span,) = tracing.finished()
    assert span.name == "GET"
    assert "in aborted_mid_request" in str(dict(span.attributes or {})["code.stacktrace"])
    assert not waiting.finished
    bystander.switch()


def test_without_a_gunicorn_timeout_there_is_no_heartbeat_deadline(
    tracing: Tracing, watchdogs: list[GreenletWatchdog]
) -> None:
    watchdog = the_watchdog(0.5, None)
    watchdogs.append(watchdog)
    event = greenlet_event(tracing)

    greenlet.greenlet(holding_the_hub).switch(watchdog, event)

    # Its own deadline still holds: the greenlet is running, the stack is the thread's.
    attributes = attributes_of(tracing)
    assert attributes["wide_event.deadline_ms"] == 500
    assert "in holding_the_hub" in str(attributes["code.stacktrace"])
    assert "no heartbeat deadline" in watchdog.describe("GeventWorker")


def test_a_greenlets_event_carries_no_cpu_time(tracing: Tracing) -> None:
    """The thread's CPU clock counts every greenlet: no figure of the request's own."""
    event = greenlet_event(tracing)
    event.end_response()
    assert "wide_event.cpu_time_ms" not in attributes_of(tracing)
