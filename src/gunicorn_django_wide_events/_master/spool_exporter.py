"""The spools' exporting process: one child of the master sends every worker slot's spool.

Every finished span is in the board's shared memory already, for durability (``_spool.py``),
so the workers need not send spans at all: a worker's request thread writes the record and is
done, and no export thread of the worker's encodes and sends under its GIL (about 20 µs of
the worker's CPU per request, docs/durability.md). This process, forked by the master, reads
every slot's records, encodes them in batches and sends them, and moves the slot's
acknowledged position once the collector took them. A worker that dies leaves its records to
it, whatever killed the worker.

It ignores the signals gunicorn's process group gets (a terminal's Ctrl-C, a TERM sent to the
group): it must outlive the workers' last requests. It ends when the master says so (SIGUSR1,
from ``on_exit``) or finds the master gone, after sending what is left, records held by a dead
worker's thread included, within ``WIDE_EVENTS_EXIT_FLUSH_TIMEOUT``. gunicorn reaps it like
any child; the master forks a new one after the next turn of gunicorn's loop. Its name is
``spool-exporter`` (``ps -o pid,comm``).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .._board import Board
from .._export.exporters import EncodedSpans
from .._export.log_routing import first_record_only
from .._export.processor import MAX_REQUEST_BYTES, ExporterFactory, build_exporter
from .._export.spooled import encoded_request
from .._guard import log_once, never_raise
from .._spool import Spool

# Its name in ps, top and /proc/PID/comm (at most 15 characters).
PROCESS_NAME: Final = "spool-exporter"
# How often the process looks at the spools: a header read per slot, microseconds in all.
POLL_S: Final = 0.05
# How often the watching thread looks whether the master is still there.
WATCH_S: Final = 0.5
# A failed export (the collector away) is tried again after this long at most.
RETRY_S: Final = 1.0
# Signals gunicorn handles, which its process group may get too: the process ignores them.
_IGNORED_SIGNALS: Final = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGTTIN", "SIGTTOU",
                           "SIGUSR2", "SIGWINCH")  # fmt: skip
_FINISH_SIGNAL: Final = signal.SIGUSR1
_pass_guard: Final = never_raise("spool_exporter.pass")


class SpoolReader:
    """Sends the spools' records to one exporter, pass after pass (the process's loop).

    A slot is sent once an eighth of its ring waits, or once its oldest record waited
    ``delay_s`` (``OTEL_BSP_SCHEDULE_DELAY``), in batches of ``batch_size`` records; a pass goes
    on with a slot only while its batches are full.
    """

    def __init__(
        self, spools: Sequence[Spool], exporter: SpanExporter, batch_size: int, delay_s: float
    ) -> None:
        self.spools = list(spools)
        self.exporter = exporter
        self.batch_size = batch_size
        self.delay_s = delay_s
        self._waiting_since: list[float | None] = [None] * len(self.spools)
        self._retry_at = 0.0

    def pass_once(self, now: float, *, finishing: bool = False) -> bool:
        """Send what is due; True if everything was sent (nothing waits in any spool).

        After a failed export the collector is given ``RETRY_S`` (or the delay, if shorter)
        before the next try, but not when finishing: then every pass tries.
        """
        if now < self._retry_at and not finishing:
            return False
        all_sent = True
        for index, spool in enumerate(self.spools):
            waiting = spool.unsent_bytes()
            if not waiting:
                self._waiting_since[index] = None
                continue
            since = self._waiting_since[index]
            if since is None:
                since = self._waiting_since[index] = now
            due = finishing or waiting >= spool.ring_size // 8 or now - since >= self.delay_s
            if not due:
                all_sent = False
                continue
            if not self._send_slot(spool, held_too=finishing):
                self._retry_at = now + min(self.delay_s, RETRY_S)
                return False
            if spool.unsent_bytes():  # more came meanwhile, or a record is held: they wait
                self._waiting_since[index] = now  # their turn, not a chase after each one
                all_sent = False
            else:
                self._waiting_since[index] = None
        return all_sent

    def _send_slot(self, spool: Spool, *, held_too: bool) -> bool:
        """Send the slot's records, batch after batch while they are full; False if an
        export failed (they stay, for a later pass)."""
        while True:
            records, through = spool.unsent(MAX_REQUEST_BYTES, self.batch_size, held_too=held_too)
            if records:
                payload, count = encoded_request(record.payload for record in records)
                if count and self.exporter.export(EncodedSpans(payload, count)) is not (
                    SpanExportResult.SUCCESS
                ):
                    return False
            if through > spool.acknowledged():
                spool.acknowledge(through)
            if len(records) < self.batch_size:
                return True


class SpoolExporter:
    """The master's handle on its exporting process: starts it, starts it again once
    gunicorn reaped it, tells it to finish."""

    def __init__(
        self,
        board: Board,
        exporter_type: ExporterFactory,
        batch_size: int,
        delay_s: float,
        exit_timeout_s: float,
    ) -> None:
        self.board = board
        self.exporter_type = exporter_type
        self.batch_size = batch_size
        self.delay_s = delay_s
        self.exit_timeout_s = exit_timeout_s
        self.pid: int | None = None

    def keep_running(self, inherited_fds: Sequence[int], exit_statuses: Any) -> None:
        """Fork the process unless it runs."""
        if self.pid is not None:
            if self._alive(exit_statuses):
                return
            log_once(
                "spool_exporter.restart",
                "gunicorn-django-wide-events: the spools' exporting process ended; "
                "starting another",
            )
            self.pid = None  # a failed fork is tried again at the next turn
        self.pid = self._fork(inherited_fds, finish_at_once=False)

    def finish(self, inherited_fds: Sequence[int], exit_statuses: Any) -> None:
        """gunicorn exits: the process sends what is left and ends; nobody waits for it. If
        it is not running, one is forked that does only that."""
        if self.pid is not None and self._alive(exit_statuses):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, _FINISH_SIGNAL)
                return
        self.pid = self._fork(inherited_fds, finish_at_once=True)

    def _alive(self, exit_statuses: Any) -> bool:
        """Whether the process runs: gunicorn did not reap it (``exit_statuses`` would say),
        and it is no zombie waiting to be reaped."""
        assert self.pid is not None
        if exit_statuses.pop(self.pid) is not None:
            return False
        try:
            reaped, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return reaped == 0

    def _fork(self, inherited_fds: Sequence[int], *, finish_at_once: bool) -> int:
        master_pid = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        _name_process(PROCESS_NAME)  # first: until then it looks like a worker
        code = 1
        try:
            for fd in inherited_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._run(master_pid, finish_at_once)
            code = 0
        finally:
            os._exit(code)

    def _run(self, master_pid: int, finish_at_once: bool) -> None:
        """The process: pass after pass until told to finish, then the last ones, bounded."""
        first_record_only.reset()  # its first export error is logged, as a worker's is
        finishing = threading.Event()
        if finish_at_once:
            finishing.set()
        for name in _IGNORED_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # The signal reaches a thread through a pipe: the main thread may be stuck in an
        # export, where no Python signal handler runs until it returns.
        signal.signal(_FINISH_SIGNAL, lambda signum, frame: None)
        readable, writable = os.pipe()
        os.set_blocking(writable, False)
        signal.set_wakeup_fd(writable)
        watch = (readable, master_pid, finishing, self.exit_timeout_s)
        threading.Thread(
            target=_watch, args=watch, name="spool-exporter-watch", daemon=True
        ).start()
        exporter = build_exporter(self.exporter_type, None)
        spools = [spool for slot in range(self.board.capacity) if (spool := self.board.spool(slot))]
        reader = SpoolReader(spools, exporter, self.batch_size, self.delay_s)
        while not finishing.is_set():
            with _pass_guard:
                reader.pass_once(time.monotonic())
            finishing.wait(POLL_S)
        deadline = time.monotonic() + self.exit_timeout_s
        while time.monotonic() < deadline:
            with _pass_guard:
                if reader.pass_once(time.monotonic(), finishing=True):
                    break
            time.sleep(min(RETRY_S, max(deadline - time.monotonic(), 0.0)))
        exporter.shutdown()


def _watch(readable: int, master_pid: int, finishing: threading.Event, timeout_s: float) -> None:
    """Until told to finish (SIGUSR1, through the wakeup pipe) or the master is gone; then the
    process has ``timeout_s`` left, wherever its main thread is (an export stuck on a dead
    collector)."""
    while not finishing.is_set():
        ready, _, _ = select.select([readable], [], [], WATCH_S)
        if ready and int(_FINISH_SIGNAL) in os.read(readable, 64):
            finishing.set()
        if os.getppid() != master_pid:
            finishing.set()
    time.sleep(timeout_s)
    os._exit(0)


def _name_process(name: str) -> None:
    """Tell this process from gunicorn's workers in ``ps -o comm``, ``top`` and psutil."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(name)
