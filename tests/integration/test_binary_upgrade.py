"""gunicorn's binary upgrade: USR2 starts a new master from the same command, then the old goes.

The new master is a fresh ``opentelemetry-instrument gunicorn`` process (gunicorn re-executes its
own command line with the listening sockets inherited), so the package sets itself up again
there: its own board, monitor and exporters, for workers that are its children.
"""

from __future__ import annotations

import os
import signal

import psutil

from tests.integration.conftest import BOOTED_WORKER, StartGunicorn, workers_of
from tests.integration.otlp_receiver import OtlpReceiver
from tests.integration.test_monitor_and_board import (
    FORK_WARNING,
    MONITOR_ENV,
    NO_CONTROL_SOCKET,
    event_of,
    events_until,
)
from tests.waiting import wait_until


def test_after_usr2_and_the_old_masters_exit_the_new_workers_send_whole_events(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    server = gunicorn_server(workers=2, env=MONITOR_ENV, extra_args=NO_CONTROL_SOCKET)
    old_workers = set(server.wait_for_workers(2))
    assert event_of(server, receiver).resource["process.pid"] in old_workers
    old_master = psutil.Process(server.pid)

    os.kill(server.pid, signal.SIGUSR2)

    def booted(children: list[psutil.Process]) -> list[int]:
        """Those gunicorn booted as workers (the log is the old and the new master's)."""
        pids = {int(pid) for pid in BOOTED_WORKER.findall(server.log_text())}
        return [child.pid for child in children if child.pid in pids]

    def new_master() -> psutil.Process | None:
        for child in old_master.children():
            if child.pid not in old_workers and len(booted(workers_of(child.pid))) == 2:
                return child
        return None

    wait_until(lambda: new_master() is not None, what="a new master with two workers")
    master = new_master()
    assert master is not None
    new_workers = set(booted(workers_of(master.pid)))
    os.kill(server.pid, signal.SIGTERM)
    assert server.process.wait(30) == 0

    # The new master's workers serve alone now, with its board and monitor behind their events.
    event = events_until(
        server,
        receiver,
        lambda e: (
            "gunicorn.worker.memory.rss" in e.attributes
            and e.attributes["gunicorn.workers.total"] == 2
        ),
    )
    assert event.resource["process.pid"] in new_workers
    assert event.resource["process.parent_pid"] == master.pid
    assert event.attributes["gunicorn.worker.id"] in (0, 1)
    assert event.attributes["wide_event.type"] == "request"
    assert master.is_running()
    log = server.log_text()
    assert FORK_WARNING not in log
    assert "gunicorn-django-wide-events" not in log, log
