"""Nothing lost: every request's event arrives, once, whatever happens to its worker.

The fault table of the docs (docs/durability.md), row by row: a worker killed with events not
exported yet, a worker killed for its timeout, gunicorn exiting with requests in flight, the
collector down during a timeout, and reloads and kills under load. Events are told apart by
the trace id each request carries.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from tests.integration.conftest import (
    VENV_BIN,
    GunicornServer,
    StartGunicorn,
    spool_exporter_of,
    the_spool_exporter_of,
)
from tests.integration.events import Exchange, send
from tests.integration.otlp_receiver import OtlpReceiver
from tests.waiting import wait_until

PROTOCOLS = ["grpc", "http/protobuf"]
# The spool's default size, said out loud: every server here but one has it.
SPOOL = {"WIDE_EVENTS_SPOOL_SIZE": "2097152"}
# The SDK's default: finished spans wait this long in a worker before they are exported.
DEFAULT_BATCH_DELAY = {**SPOOL, "OTEL_BSP_SCHEDULE_DELAY": "5000"}
ARRIVAL_TIMEOUT = 60.0


def server_events(receiver: OtlpReceiver, trace_ids: set[str]) -> Counter[str]:
    """How many SERVER spans arrived for each of ``trace_ids``."""
    return Counter(span.trace_id for span in receiver.server_spans() if span.trace_id in trace_ids)


def wait_for_each_once(receiver: OtlpReceiver, exchanges: list[Exchange]) -> None:
    """Every exchange's event arrived, exactly once (and none twice, even later)."""
    trace_ids = {exchange.trace_id for exchange in exchanges}
    try:
        receiver.wait_for(
            lambda _: set(server_events(receiver, trace_ids)) == trace_ids, timeout=ARRIVAL_TIMEOUT
        )
    except AssertionError:
        missing = trace_ids - set(server_events(receiver, trace_ids))
        raise AssertionError(f"{len(missing)} of {len(trace_ids)} events missing") from None
    counts = server_events(receiver, trace_ids)
    twice = [trace_id for trace_id, count in counts.items() if count > 1]
    assert not twice, f"{len(twice)} events arrived twice"


def in_flight(server: GunicornServer) -> int:
    """Requests the board shows in flight, through the live view."""
    result = subprocess.run(
        [str(VENV_BIN / "wide-events"), "status", "--pid", str(server.pid), "--json"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if result.returncode:
        return 0
    data: dict[str, Any] = json.loads(result.stdout)
    return sum(len(worker["in_flight"]) for worker in data["workers"])


def send_in_background(server: GunicornServer, path: str) -> threading.Thread:
    def request() -> None:
        with contextlib.suppress(OSError):  # the worker is killed under it
            send(server, path)

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_events_not_exported_yet_survive_a_killed_idle_worker(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, protocol: str
) -> None:
    """20 requests, then SIGKILL before the batch delay: the spools' exporter sends them."""
    server = gunicorn_server(protocol=protocol, env=DEFAULT_BATCH_DELAY)
    exchanges = [send(server, f"/items/{n}/") for n in range(20)]
    (worker,) = server.wait_for_workers(1)
    os.kill(worker, signal.SIGKILL)

    wait_for_each_once(receiver, exchanges)
    assert all(e.status == 200 for e in exchanges)


def test_with_the_spool_off_a_stopping_worker_still_sends_what_it_batched(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """``WIDE_EVENTS_SPOOL_SIZE=0``: the SDK's batch processor in the worker's memory;
    gunicorn's SIGTERM (not a kill) lets the worker export the batch it holds before the delay
    is up."""
    server = gunicorn_server(env={**DEFAULT_BATCH_DELAY, "WIDE_EVENTS_SPOOL_SIZE": "0"})
    exchanges = [send(server, f"/items/{n}/") for n in range(20)]
    assert server.stop() == 0

    wait_for_each_once(receiver, exchanges)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_killed_spool_exporter_is_replaced_and_what_it_had_not_sent_arrives(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, protocol: str
) -> None:
    """The spools' exporter SIGKILLed with events waiting (5 s batch delay): the master forks
    another after its next turn, which sends them, and those served meanwhile."""
    server = gunicorn_server(protocol=protocol, env=DEFAULT_BATCH_DELAY)
    server.wait_for_workers(1)
    first = the_spool_exporter_of(server.pid)
    exchanges = [send(server, f"/items/{n}/") for n in range(20)]
    first.kill()

    def replaced() -> bool:
        exporter = spool_exporter_of(server.pid)
        return exporter is not None and exporter.pid != first.pid

    wait_until(replaced, what="another spools' exporter")
    exchanges += [send(server, f"/items/{n}/") for n in range(20, 25)]

    wait_for_each_once(receiver, exchanges)
    assert "the spools' exporting process ended; starting another" in server.log_text()


def test_the_spool_exporter_outlives_a_term_to_the_process_group(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """A TERM to gunicorn's whole process group (systemd's stop, a terminal): the exporter
    ignores it while gunicorn lets a slow request finish, sends its event and the others
    once gunicorn says so, and exits."""
    server = gunicorn_server(env=DEFAULT_BATCH_DELAY)
    server.wait_for_workers(1)
    exporter = the_spool_exporter_of(server.pid)
    exchanges = [send(server, f"/items/{n}/") for n in range(10)]
    slow = send_in_background(server, "/slow/?seconds=3")
    wait_until(lambda: in_flight(server) == 1, what="the slow request in flight")
    os.killpg(os.getpgid(server.pid), signal.SIGTERM)

    def exporter_gone() -> bool:
        try:
            return exporter.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    died_early = []

    def slow_request_done() -> bool:
        gone = exporter_gone()  # first: then the request still in flight means it died early
        serving = in_flight(server) == 1
        if gone and serving:
            died_early.append(exporter.pid)
        return not serving or gone

    wait_until(slow_request_done, what="the slow request's end")
    assert not died_early, "the exporter did not outlive the TERM"
    assert server.process.wait(30) == 0
    slow.join(30)
    wait_for_each_once(receiver, exchanges)
    assert len(receiver.events_for("/slow/")) == 1
    exporter.wait(timeout=10)


def test_a_sigkilled_masters_spools_are_sent_by_its_exporter(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """The master SIGKILLed (5 s batch delay, so nothing was sent yet): its exporter sees it
    gone and sends what the spools hold, then exits."""
    server = gunicorn_server(env={**DEFAULT_BATCH_DELAY, "WIDE_EVENTS_EXIT_FLUSH_TIMEOUT": "3"})
    server.wait_for_workers(1)
    exporter = the_spool_exporter_of(server.pid)
    exchanges = [send(server, f"/items/{n}/") for n in range(20)]
    os.kill(server.pid, signal.SIGKILL)

    wait_for_each_once(receiver, exchanges)
    exporter.wait(timeout=3 + 5)


def test_events_before_a_timeout_that_gunicorn_enforces_by_sigkill_survive(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """20 requests, then one holding the GIL: gunicorn kills the worker; 21 events arrive."""
    server = gunicorn_server(timeout=3, env=DEFAULT_BATCH_DELAY)
    exchanges = [send(server, f"/items/{n}/") for n in range(20)]
    with contextlib.suppress(OSError):
        exchanges.append(send(server, "/hold-gil/"))
    stuck = receiver.wait_for_events("/hold-gil/", timeout=ARRIVAL_TIMEOUT)

    wait_for_each_once(receiver, exchanges[:20])
    assert [event.attributes["wide_event.type"] for event in stuck] == ["timeout"]


def test_gunicorn_exiting_past_its_graceful_timeout_sends_the_requests_in_flight(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """TERM with two requests in flight and --graceful-timeout 3: both events, and the rest."""
    server = gunicorn_server(
        workers=2, env=DEFAULT_BATCH_DELAY, extra_args=("--graceful-timeout", "3")
    )
    server.wait_for_workers(2)
    quick = [send(server, f"/items/{n}/") for n in range(6)]
    for _ in range(2):
        send_in_background(server, "/slow/?seconds=60")
    wait_until(lambda: in_flight(server) == 2, what="both slow requests in flight")
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(30)

    slow = receiver.wait_for_events("/slow/", count=2, timeout=ARRIVAL_TIMEOUT)
    wait_for_each_once(receiver, quick)
    assert len(slow) == 2
    for event in slow:
        assert event.attributes["wide_event.type"] == "crash"
        # gunicorn SIGKILLs them at exit: reaped first (SIGKILL) or found by on_exit (shutdown)
        assert event.attributes["error.type"] in {"shutdown", "SIGKILL"}
        assert event.attributes["wide_event.reported_by"] == "master"
        assert event.attributes["http.route"] == "slow/"
    assert time.monotonic() - started < 15  # gunicorn's own exit is not held up


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_timeout_event_during_a_collector_outage_is_kept_and_sent_later(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, protocol: str
) -> None:
    """The urgent export fails: the log says so; the event arrives when the collector is back."""
    server = gunicorn_server(protocol=protocol, timeout=3, env=SPOOL)
    receiver.set_unavailable(True)
    try:
        exchange: Exchange | None = None
        with contextlib.suppress(OSError):
            exchange = send(server, "/slow/?seconds=30")
        assert exchange is None or exchange.status == 500
        wait_until(lambda: "not delivered yet" in server.log_text(), what="the honest log line")
        assert "timeout event sent" not in server.log_text()
        server.wait_for_workers(1)
        assert receiver.events_for("/slow/") == []
    finally:
        receiver.set_unavailable(False)
    (event,) = receiver.wait_for_events("/slow/", timeout=ARRIVAL_TIMEOUT)
    assert event.attributes["wide_event.type"] == "timeout"
    assert "wide_event.reported_by" not in event.attributes  # the worker's own, stack and all
    assert "code.stacktrace" in event.attributes
    send(server, "/ok/")
    assert len(receiver.events_for("/slow/")) == 1


def test_reloads_and_kills_under_load_lose_no_event_and_double_none(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """30 HUPs and 10 SIGKILLs while three clients send: every answered request has exactly
    one event."""
    server = gunicorn_server(workers=2, env={**SPOOL, "OTEL_BSP_SCHEDULE_DELAY": "200"})
    server.wait_for_workers(2)
    answered: list[Exchange] = []
    failed = 0
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        nonlocal failed
        while not stop.is_set():
            try:
                exchange = send(server, "/ok/")
            except (OSError, http.client.HTTPException):  # its worker was killed under it
                with lock:
                    failed += 1
                continue
            with lock:
                answered.append(exchange)

    clients = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for thread in clients:
        thread.start()
    actions: list[Callable[[], None]] = []
    for _ in range(10):
        actions += [lambda: os.kill(server.pid, signal.SIGHUP)] * 3
        # Anywhere: a worker sends no spans, so no kill of one lands inside an export.
        actions.append(lambda: os.kill(server.worker_pids()[0], signal.SIGKILL))
    try:
        for action in actions:
            count = len(answered)
            wait_until(lambda c=count: len(answered) >= c + 20, what="traffic between faults")
            action()
            wait_until(lambda: len(server.worker_pids()) == 2, what="two workers again")
        after = len(answered)
        wait_until(lambda: len(answered) >= after + 30, what="traffic after the last fault")
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)

    wait_for_each_once(receiver, answered)
    every = server_events(receiver, {span.trace_id for span in receiver.server_spans()})
    assert not [trace_id for trace_id, count in every.items() if count > 1]
    assert len(answered) > 800
