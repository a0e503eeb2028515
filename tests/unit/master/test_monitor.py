"""The master's monitor: listen_backlog, and Monitor.sample writing worker and server samples."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

import psutil
import pytest

from gunicorn_django_wide_events._board import Board
from gunicorn_django_wide_events._master.monitor import Monitor, listen_backlog
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("fresh_reports")


# -- monitor.listen_backlog --------------------------------------------------------------------


def test_listen_backlog_without_listeners_is_unknown() -> None:
    """listen_backlog of no listeners is -1."""
    assert listen_backlog([]) == -1


def test_listen_backlog_of_non_tcp_sockets_is_unknown() -> None:
    """A unix socket (or anything not TCP) says nothing: -1."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix_socket:
        assert listen_backlog([unix_socket, object()]) == -1


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="TCP_INFO is Linux only")
def test_listen_backlog_counts_connections_not_yet_accepted() -> None:
    """A listener with 3 connected, unaccepted clients reports 3 (0 before they connect)."""
    with ExitStack() as stack:
        listener = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        assert listen_backlog([listener]) == 0
        for _ in range(3):
            client = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            client.settimeout(5)
            client.connect(listener.getsockname())
        wait_until(lambda: listen_backlog([listener]) == 3, timeout=5.0, what="a backlog of 3")


# -- Monitor.sample ----------------------------------------------------------------------------


def no_listeners() -> list[Any]:
    return []


def test_monitor_sample_writes_worker_and_server_samples() -> None:
    """sample() writes a sample of each worker into its slot, then the server sample."""
    board = Board(4)
    pid = os.getpid()
    monitor = Monitor(board, 1.0, workers=lambda: {0: pid}, listeners=no_listeners)
    before = time.time()
    monitor.sample()
    after = time.time()

    own = board.read_monitor(0)
    assert own is not None
    assert before <= own.sampled_at <= after
    assert own.rss > 1_000_000
    assert own.threads >= 1
    assert own.fds >= 3
    assert own.cpu_percent == -1.0  # psutil's first reading of a process is no figure
    assert board.read_monitor(1) is None

    server = board.read_server()
    assert server is not None
    assert server.sampled_at == own.sampled_at
    assert server.backlog == -1
    assert server.master_rss > 1_000_000
    assert server.workers_rss == own.rss
    assert server.workers_cpu_percent == -1.0  # no worker's CPU known yet: no sum either
    assert server.load1 == pytest.approx(os.getloadavg()[0], abs=1)

    monitor.sample()
    own = board.read_monitor(0)
    server = board.read_server()
    assert own is not None
    assert server is not None
    assert own.cpu_percent >= 0
    assert server.workers_cpu_percent == own.cpu_percent


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="TCP_INFO is Linux only")
def test_monitor_sample_reports_the_backlog_of_its_listeners() -> None:
    """sample() with a listening TCP socket writes its backlog (0 when none is waiting)."""
    board = Board(1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        Monitor(board, 1.0, workers=dict, listeners=lambda: [listener]).sample()
    server = board.read_server()
    assert server is not None
    assert server.backlog == 0
    assert server.workers_rss == -1  # no worker sampled: unknown, not 0


def exited_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert not psutil.pid_exists(process.pid)
    return process.pid


def test_monitor_skips_a_pid_that_does_not_exist() -> None:
    """A worker pid that does not exist is skipped without raising; the others are sampled."""
    board = Board(4)
    gone = exited_pid()
    monitor = Monitor(board, 1.0, workers=lambda: {1: gone, 2: os.getpid()}, listeners=no_listeners)
    monitor.sample()
    assert board.read_monitor(1) is None
    own = board.read_monitor(2)
    assert own is not None
    server = board.read_server()
    assert server is not None
    assert server.workers_rss == own.rss


def test_monitor_skips_a_worker_that_exited_since_the_last_sample() -> None:
    """A worker sampled once then gone is skipped next time; its last sample stays."""
    board = Board(2)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as child:
        try:
            workers = {0: child.pid}
            monitor = Monitor(board, 1.0, workers=lambda: workers, listeners=no_listeners)
            monitor.sample()
            first = board.read_monitor(0)
            assert first is not None
        finally:
            child.kill()
            child.wait()
    time.sleep(0.01)
    monitor.sample()
    assert board.read_monitor(0) == first
    server = board.read_server()
    assert server is not None
    assert server.workers_rss == -1  # no worker sampled: unknown, not 0
    assert server.sampled_at > first.sampled_at
