"""The master's monitor and the shared-memory board, seen through the events of real workers.

Several sync workers under ``opentelemetry-instrument``; the monitor samples every 0.2 s so the
tests wait on conditions rather than on a full second.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import psutil
import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.events import send
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.waiting import wait_until

FORK_WARNING = "is multi-threaded, use of fork()"
# gunicorn 27's own control-socket thread restarts right after each fork, where Python 3.13
# looks for threads: its warning is not ours, so tests about our threads go without it.
NO_CONTROL_SOCKET = ("--no-control-socket",)
MONITOR_ENV = {"WIDE_EVENTS_MONITOR_INTERVAL": "0.2"}


def event_of(server: GunicornServer, receiver: OtlpReceiver, path: str = "/ok/") -> ReceivedSpan:
    exchange = send(server, path)
    spans = receiver.wait_for(
        lambda spans: any(s.trace_id == exchange.trace_id and s.is_server for s in spans)
    )
    (event,) = [s for s in spans if s.trace_id == exchange.trace_id and s.is_server]
    return event


def events_until(
    server: GunicornServer,
    receiver: OtlpReceiver,
    condition: Callable[[ReceivedSpan], bool],
    timeout: float = 30.0,
) -> ReceivedSpan:
    """Send requests until one's event satisfies ``condition`` (monitor data is sampled)."""
    deadline = time.monotonic() + timeout
    while True:
        event = event_of(server, receiver)
        if condition(event):
            return event
        if time.monotonic() > deadline:
            raise AssertionError(f"no event satisfied the condition; last: {event.attributes}")
        time.sleep(0.05)


def test_every_event_carries_its_worker_and_the_server(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """Worker id, age, request count, sibling totals and monitor samples are on each event."""
    server = gunicorn_server(workers=3, env=MONITOR_ENV)
    server.wait_for_workers(3)
    event = events_until(server, receiver, lambda e: "gunicorn.worker.memory.rss" in e.attributes)

    attributes = event.attributes
    assert attributes["gunicorn.worker.id"] in range(3)
    assert attributes["gunicorn.worker.age"] >= 0
    assert attributes["gunicorn.worker.requests"] >= 1
    assert attributes["gunicorn.workers.total"] == 3
    assert attributes["gunicorn.workers.busy"] >= 1  # this request
    assert attributes["gunicorn.worker.memory.rss"] > 10_000_000
    # The sum over the three workers, from the same pass of the monitor as the own sample.
    assert attributes["gunicorn.workers.memory.rss"] > 3 * 10_000_000
    assert attributes["gunicorn.listen.backlog"] >= 0
    assert 0 <= attributes["gunicorn.monitor.sample_age_ms"] < 30_000
    resource = event.resource
    assert resource["gunicorn.worker.id"] == attributes["gunicorn.worker.id"]
    assert resource["process.parent_pid"] == server.pid
    assert resource["process.pid"] in server.worker_pids()
    assert resource["gunicorn.workers.configured"] == 3
    assert resource["gunicorn.worker.class"] == "gunicorn.workers.sync.SyncWorker"
    assert resource["service.instance.id"]


def test_concurrent_slow_requests_count_as_busy(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """A short request ending while a long one runs elsewhere sees two busy workers."""
    server = gunicorn_server(workers=3, env=MONITOR_ENV)
    server.wait_for_workers(3)
    barrier = threading.Barrier(2)

    def slow_request(seconds: float) -> None:
        barrier.wait()
        server.get(f"/slow/?seconds={seconds}")

    threads = [threading.Thread(target=slow_request, args=(s,)) for s in (0.5, 3.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    events = receiver.wait_for_events("/slow/", count=2)
    (short,) = [e for e in events if e.attributes["url.query"] == "seconds=0.5"]
    (long,) = [e for e in events if e.attributes["url.query"] == "seconds=3.0"]

    assert short.attributes["gunicorn.workers.busy"] >= 2
    assert short.resource["process.pid"] != long.resource["process.pid"]
    assert short.attributes["gunicorn.worker.id"] != long.attributes["gunicorn.worker.id"]


def test_ttin_and_ttou_change_the_worker_total(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """gunicorn.workers.total follows the master's worker count through TTIN and TTOU."""
    server = gunicorn_server(workers=2, env=MONITOR_ENV)
    server.wait_for_workers(2)
    assert event_of(server, receiver).attributes["gunicorn.workers.total"] == 2

    os.kill(server.pid, signal.SIGTTIN)
    server.wait_for_workers(3)
    events_until(server, receiver, lambda e: e.attributes["gunicorn.workers.total"] == 3)

    os.kill(server.pid, signal.SIGTTOU)
    wait_until(lambda: len(server.worker_pids()) == 2, what="TTOU to retire a worker")
    events_until(server, receiver, lambda e: e.attributes["gunicorn.workers.total"] == 2)


def test_killed_worker_frees_its_slot_for_its_replacement(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """A SIGKILLed worker's slot is freed when it is reaped; its replacement takes a slot."""
    server = gunicorn_server(workers=2, env=MONITOR_ENV)
    (victim, survivor) = server.wait_for_workers(2)

    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2,
        what="the killed worker to be replaced",
    )
    (replacement,) = set(server.worker_pids()) - {survivor}

    slots_by_pid: dict[int, int] = {}
    deadline = time.monotonic() + 30
    while set(slots_by_pid) != {survivor, replacement} and time.monotonic() < deadline:
        event = event_of(server, receiver)
        slots_by_pid[event.resource["process.pid"]] = event.attributes["gunicorn.worker.id"]
        assert event.attributes["gunicorn.workers.total"] == 2
    assert set(slots_by_pid) == {survivor, replacement}
    assert slots_by_pid[survivor] != slots_by_pid[replacement]
    assert set(slots_by_pid.values()) == {0, 1}  # the freed slot was reused, none leaked


def test_hup_reload_keeps_the_board_right(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """After HUP the new workers report the right total and fresh monitor data."""
    server = gunicorn_server(workers=2, env=MONITOR_ENV, extra_args=NO_CONTROL_SOCKET)
    old_workers = set(server.wait_for_workers(2))

    os.kill(server.pid, signal.SIGHUP)
    wait_until(
        lambda: len(server.worker_pids()) == 2 and not old_workers & set(server.worker_pids()),
        what="HUP to replace the workers",
    )
    event = events_until(
        server,
        receiver,
        lambda e: (
            e.resource["process.pid"] not in old_workers
            and "gunicorn.worker.memory.rss" in e.attributes
        ),
    )

    assert event.attributes["gunicorn.workers.total"] == 2
    assert event.attributes["gunicorn.worker.id"] in range(4)
    assert FORK_WARNING not in server.log_text()


def test_monitor_thread_never_crosses_a_fork(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """Many forks while the monitor runs: no multi-threaded-fork warning, thread still alive."""
    server = gunicorn_server(
        workers=2, env={"WIDE_EVENTS_MONITOR_INTERVAL": "0.05"}, extra_args=NO_CONTROL_SOCKET
    )
    server.wait_for_workers(2)
    for count in (3, 4, 5):  # one at a time: pending identical signals merge
        os.kill(server.pid, signal.SIGTTIN)
        server.wait_for_workers(count)
    events_until(server, receiver, lambda e: e.attributes["gunicorn.workers.total"] == 5)

    # The monitor runs again once gunicorn is done forking (the only thread besides main).
    wait_until(lambda: len(psutil.Process(server.pid).threads()) >= 2, what="the monitor")
    assert FORK_WARNING not in server.log_text()


def test_the_monitor_samples_a_new_worker_as_soon_as_gunicorn_forked_it(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """The monitor resumes once gunicorn's forks are done, not a turn of its loop later.

    With an interval longer than the test, the only sample of the worker is the one the monitor
    takes when it resumes after the fork. gunicorn's loop waits up to a second per turn, so a
    resume in the loop samples about a second after the worker started; one right after
    ``manage_workers`` samples within gunicorn's spawn (at most 0.1 s) and one psutil read.
    """
    server = gunicorn_server(workers=1, env={"WIDE_EVENTS_MONITOR_INTERVAL": "60"})
    server.wait_for_workers(1)
    event = events_until(server, receiver, lambda e: "gunicorn.worker.memory.rss" in e.attributes)

    attributes = event.attributes
    # worker age - sample age = when the sample was taken, counted from the worker's start.
    sampled_after_start_s = (
        attributes["gunicorn.worker.age"] - attributes["gunicorn.monitor.sample_age_ms"] / 1e3
    )
    assert sampled_after_start_s < 0.6, attributes


@pytest.mark.parametrize("signum", [signal.SIGKILL])
def test_master_killed_leaves_nothing_in_dev_shm(
    gunicorn_server: StartGunicorn, signum: signal.Signals
) -> None:
    """The board is anonymous memory: a SIGKILLed master leaves no /dev/shm segment behind."""
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    server = gunicorn_server(workers=2, env=MONITOR_ENV)
    server.wait_for_workers(2)
    os.killpg(server.pid, signum)
    server.process.wait(30)

    after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert after <= before
