"""The master's monitor thread: samples every worker and the server onto the board.

Once per interval it reads each worker with psutil (CPU, memory, threads, file descriptors), the
master's memory, the machine's load and the listen backlog, and writes them to the board, where
workers pick them up for their events. It never touches OpenTelemetry.

Fork Safety:
    The monitor uses ``os.register_at_fork()`` the way gunicorn's control-socket server does.
    Before fork: the thread is stopped and joined, so no thread of ours is alive when gunicorn
    forks. After fork in the parent: it is *not* started there, unlike gunicorn's own thread:
    Python 3.13 counts the threads for its multi-threaded-fork warning after the parent's
    handlers ran, so a thread restarted there would be reported. ``resume()`` starts it again
    once gunicorn is done forking for this round (after ``Arbiter.manage_workers``, see
    ``_gunicorn.py``).
    After fork in the child: the copy is forgotten (workers do not monitor).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import psutil

from .._board import Board, ServerSample, WorkerSample
from .._forking import wait_for_native_threads
from .._guard import log_once

_active_monitors: set[Monitor] = set()
_fork_handlers_registered = False


def _before_fork() -> None:
    for monitor in list(_active_monitors):
        monitor.stop_for_fork()
    # Registered before gunicorn's control-socket server, this runs after it stopped its
    # thread too: let the OS threads of both finish exiting before the fork copies them.
    wait_for_native_threads(timeout_s=0.1)


def _after_fork_in_child() -> None:
    _active_monitors.clear()


def register_fork_handlers() -> None:
    """Called in the master before gunicorn starts its control socket (see ``_before_fork``)."""
    global _fork_handlers_registered  # noqa: PLW0603
    if not _fork_handlers_registered:
        _fork_handlers_registered = True
        os.register_at_fork(
            before=_before_fork,
            after_in_child=_after_fork_in_child,
        )


# struct tcp_info: for a listening socket Linux reports the accept queue's length in
# tcpi_unacked and its limit in tcpi_sacked, 24 bytes in (include/uapi/linux/tcp.h).
_TCP_INFO_SIZE: Final = 104
_TCP_INFO_QUEUE: Final = struct.Struct("=I")
_TCP_INFO_QUEUE_AT: Final = 24


def listen_backlog(listeners: Iterable[Any]) -> int:
    """Connections waiting in the accept queues of the TCP listeners; -1 if nobody can tell.

    Asked of the sockets the master already holds (``TCP_INFO``, Linux): about a microsecond,
    where reading ``/proc/net/tcp`` costs milliseconds.
    """
    total, known = 0, False
    for listener in listeners:
        sock = getattr(listener, "sock", listener)
        if not isinstance(sock, socket.socket) or sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            continue
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        except (AttributeError, OSError):
            continue
        if len(info) >= _TCP_INFO_QUEUE_AT + _TCP_INFO_QUEUE.size:
            total += _TCP_INFO_QUEUE.unpack_from(info, _TCP_INFO_QUEUE_AT)[0]
            known = True
    return total if known else -1


class Monitor:
    """Samples the workers named by ``workers()`` (slot -> pid) every ``interval_s``."""

    def __init__(
        self,
        board: Board,
        interval_s: float,
        workers: Callable[[], dict[int, int]],
        listeners: Callable[[], Iterable[Any]],
    ) -> None:
        self.board = board
        self.interval_s = interval_s
        self._workers = workers
        self._listeners = listeners
        self._processes: dict[int, psutil.Process] = {}
        self._master = psutil.Process()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._running = False

    def start(self) -> None:
        register_fork_handlers()
        _active_monitors.add(self)
        self._running = True
        self._start_thread()

    def stop(self) -> None:
        self._running = False
        _active_monitors.discard(self)
        self._stop_thread()

    def stop_for_fork(self) -> None:
        self._stop_thread()

    def resume(self) -> None:
        """Start the thread again if a fork stopped it (called from the arbiter's loop)."""
        if self._running and self._thread is None:
            self._start_thread()

    def _start_thread(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="wide-events-monitor", daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join()

    def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # the monitor must outlive any one bad sample
                log_once("monitor.sample", "gunicorn-django-wide-events: monitor sample failed",
                         exc_info=True)  # fmt: skip
            if self._stopping.wait(self.interval_s):
                return

    def sample(self) -> None:
        """One pass: every worker, then the server."""
        now = time.time()
        workers = self._workers()
        for pid in set(self._processes) - set(workers.values()):
            del self._processes[pid]
        # Sums over the workers sampled; unknown (-1) while none is, not a fake zero.
        cpu_total, rss_total = -1.0, -1
        for slot, pid in workers.items():
            sample = self._sample_worker(pid, now)
            if sample is not None:
                self.board.write_monitor(slot, sample)
                rss_total = max(rss_total, 0) + sample.rss
                if sample.cpu_percent >= 0:
                    cpu_total = max(cpu_total, 0.0) + sample.cpu_percent
        self.board.write_server(self._sample_server(now, cpu_total, rss_total))

    def _sample_worker(self, pid: int, now: float) -> WorkerSample | None:
        process = self._processes.get(pid)
        try:
            first = process is None
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
            with process.oneshot():
                cpu_percent = process.cpu_percent(None)
                return WorkerSample(
                    sampled_at=now,
                    # psutil's first reading of a process is 0.0 by definition, not a figure.
                    cpu_percent=-1.0 if first else cpu_percent,
                    rss=process.memory_info().rss,
                    threads=process.num_threads(),
                    fds=process.num_fds() if hasattr(process, "num_fds") else -1,
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._processes.pop(pid, None)
            return None

    def _sample_server(self, now: float, cpu_total: float, rss_total: int) -> ServerSample:
        return ServerSample(
            sampled_at=now,
            load1=os.getloadavg()[0],
            backlog=listen_backlog(self._listeners()),
            master_rss=self._master.memory_info().rss,
            workers_cpu_percent=cpu_total,
            workers_rss=rss_total,
        )
