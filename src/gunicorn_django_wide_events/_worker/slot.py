"""A worker's own board slot: its requests in flight written as they go, read for its events.

Each request in flight holds one entry of the slot (``SlotEntry``): written as it starts, when
Django resolves its route, around each query and as it ends; that is what the master's fallback
and a live view read. Writing costs one ``struct.pack_into`` per step and reading a few
``unpack_from`` calls (see ``bench/board.py``); the monitor data read for an event is at most
one interval old, while the busy and total counts are live.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Final

from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from .. import _attributes as attr
from .._board import MAX_ENTRIES_PER_SLOT, Board, EntryWriter, RequestState, TornRead
from .._guard import never_raise

_BYTE_MAX: Final = MAX_ENTRIES_PER_SLOT  # what the busy byte holds at most
_read_guard = never_raise("board.read")
_write_guard = never_raise("board.write")


class WorkerSlot:
    """The slot ``slot`` of ``board``, owned by this worker process."""

    __slots__ = (
        "_buffer",
        "_busy_at",
        "_entries",
        "_free",
        "_lock",
        "_overflow",
        "_sample_attributes",
        "_sample_versions",
        "_sampled_at",
        "board",
        "in_flight",
        "pid",
        "requests",
        "slot",
        "spawned_at",
        "spool",
    )

    def __init__(self, board: Board, slot: int) -> None:
        self.board = board
        self.slot = slot
        self.pid = os.getpid()
        self.spawned_at = time.time()
        self.requests = 0
        self.in_flight = 0
        # The monitor's samples change once per interval; read them again only then.
        self._sample_versions = (-1, -1)
        self._sample_attributes: dict[str, AttributeValue] = {}
        self._sampled_at = 0.0
        board.write_worker(slot, self.pid, self.spawned_at)
        self.spool = board.spool(slot)
        self._entries = [
            SlotEntry(self, board.entry_writer(slot, entry))
            for entry in range(board.entries_per_slot)
        ]
        self._free = list(reversed(self._entries))  # entry 0 first
        self._overflow = EntryOverflow(self)
        # Requests of a threaded worker start and end concurrently: the counts and the free
        # list change together. One entry means one request at a time: no lock to take.
        self._lock = threading.Lock() if board.entries_per_slot > 1 else None
        self._buffer = board.buffer
        self._busy_at = board.busy_offset(slot)

    def request_started(
        self, span: Span, method: str, path: str, query: str = ""
    ) -> SlotEntry | NoEntry:
        """Note a request's start; its entry, or an overflow stand-in when all are taken."""
        try:
            lock = self._lock
            if lock is None:
                entry = self._count_start()
            else:
                with lock:
                    entry = self._count_start()
            if entry is None:
                return self._overflow  # counted in flight, but no room to say more
            context = span.get_span_context()
            parent = getattr(span, "parent", None)
            ids = context.trace_id << 128 | context.span_id << 64
            if parent:
                ids |= parent.span_id
            entry.writer.started(
                self.requests, time.time(), ids.to_bytes(32, "big"), method, path, query
            )
            return entry
        except Exception:
            _write_guard.report()
            return no_entry

    def request_finished(self, entry: SlotEntry | NoEntry) -> None:
        try:
            if isinstance(entry, SlotEntry):
                entry.writer.finished()
            lock = self._lock
            if lock is None:
                self._count_end(entry)
            else:
                with lock:
                    self._count_end(entry)
        except Exception:
            _write_guard.report()

    def _count_start(self) -> SlotEntry | None:
        self.requests += 1
        self.in_flight = in_flight = self.in_flight + 1
        self._buffer[self._busy_at] = in_flight if in_flight < _BYTE_MAX else _BYTE_MAX
        free = self._free
        return free.pop() if free else None

    def _count_end(self, entry: SlotEntry | NoEntry) -> None:
        self.in_flight = in_flight = self.in_flight - 1
        self._buffer[self._busy_at] = in_flight if in_flight < _BYTE_MAX else _BYTE_MAX
        if isinstance(entry, SlotEntry):
            self._free.append(entry)

    def add_attributes(self, attributes: dict[str, AttributeValue]) -> None:
        """The worker and its siblings, as the board shows them now."""
        try:
            board = self.board
            now = time.time()
            total, busy = board.count_in_use_and_busy()
            attributes[attr.GUNICORN_WORKER_ID] = self.slot
            attributes[attr.GUNICORN_WORKER_AGE] = round(now - self.spawned_at, 3)
            attributes[attr.GUNICORN_WORKER_REQUESTS] = self.requests
            attributes[attr.GUNICORN_WORKER_ACTIVE_REQUESTS] = self.in_flight
            attributes[attr.GUNICORN_WORKERS_TOTAL] = total
            attributes[attr.GUNICORN_WORKERS_BUSY] = busy
            attributes[attr.GUNICORN_WORKERS_IDLE] = max(total - busy, 0)
            if total:
                attributes[attr.GUNICORN_WORKERS_UTILIZATION] = round(busy / total, 4)
            versions = board.sample_versions(self.slot)
            if versions != self._sample_versions and self._read_samples():
                # The monitor wrote since the last read (once per interval) and it read whole.
                self._sample_versions = versions
            attributes.update(self._sample_attributes)
            spool = self.spool
            if spool is not None and (dropped := spool.take_dropped()):
                attributes[attr.WIDE_EVENT_EVENTS_DROPPED] = dropped
            if self._sampled_at:
                attributes[attr.GUNICORN_MONITOR_SAMPLE_AGE_MS] = round(
                    (now - self._sampled_at) * 1e3, 1
                )
        except Exception:
            _read_guard.report()

    def _read_samples(self) -> bool:
        """Keep the monitor's samples as attributes; False on a torn read or while the monitor
        is between this worker's sample and the server's (both kept as they were).

        The monitor writes every worker's sample, then the server's, each pass stamped alike:
        a server sample older than this worker's is the previous pass's, whose sums leave this
        worker's new figures out (the first pass after a fork sums no worker at all). A figure
        the monitor could not sample yet is negative on the board and left off the event.
        """
        try:
            own = self.board.read_monitor(self.slot)
            server = self.board.read_server()
        except TornRead:
            return False
        if own is not None and (server is None or server.sampled_at < own.sampled_at):
            return False
        attributes: dict[str, AttributeValue] = {}
        if own is not None:
            if own.cpu_percent >= 0:
                attributes[attr.GUNICORN_WORKER_CPU_PERCENT] = own.cpu_percent
            attributes[attr.GUNICORN_WORKER_MEMORY_RSS] = own.rss
            attributes[attr.GUNICORN_WORKER_THREADS] = own.threads
            if own.fds >= 0:
                attributes[attr.GUNICORN_WORKER_OPEN_FDS] = own.fds
        self._sample_attributes = attributes
        self._sampled_at = 0.0
        if server is None:
            return True
        if server.workers_cpu_percent >= 0:
            attributes[attr.GUNICORN_WORKERS_CPU_PERCENT] = server.workers_cpu_percent
        if server.workers_rss >= 0:
            attributes[attr.GUNICORN_WORKERS_MEMORY_RSS] = server.workers_rss
        attributes[attr.GUNICORN_MASTER_MEMORY_RSS] = server.master_rss
        attributes[attr.GUNICORN_HOST_LOAD_1M] = server.load1
        if server.backlog >= 0:
            attributes[attr.GUNICORN_LISTEN_BACKLOG] = server.backlog
        self._sampled_at = server.sampled_at
        return True


class SlotEntry:
    """The board entry of one request in flight."""

    __slots__ = ("slot", "writer")

    def __init__(self, slot: WorkerSlot, writer: EntryWriter) -> None:
        self.slot = slot
        self.writer = writer

    def route_resolved(self, route: str, view: str) -> None:
        try:
            self.writer.route_resolved(route, view)
        except Exception:
            _write_guard.report()

    def path_redacted(self, path: str) -> None:
        try:
            self.writer.path_changed(path)
        except Exception:
            _write_guard.report()

    def sql_started(self, sql: str) -> None:
        try:
            self.writer.sql_started(sql)
        except Exception:
            _write_guard.report()

    def sql_finished(self, query_count: int, duration_ns: int) -> None:
        try:
            self.writer.sql_finished(query_count, duration_ns)
        except Exception:
            _write_guard.report()

    def sending(self) -> None:
        """The app returned its response; the body is going out."""
        try:
            self.writer.state(RequestState.SENDING)
        except Exception:
            _write_guard.report()

    def ending(self) -> None:
        """The request's span ends now: whoever reads the board after a kill looks in the spool."""
        try:
            self.writer.state(RequestState.ENDING)
        except Exception:
            _write_guard.report()

    def event_out(self) -> None:
        with _write_guard:
            self.writer.event_out()

    def finished(self) -> None:
        self.slot.request_finished(self)


class NoEntry:
    """Stands in for a request with no board entry: no slot, or every entry taken."""

    __slots__ = ()

    def route_resolved(self, route: str, view: str) -> None:
        return None

    def path_redacted(self, path: str) -> None:
        return None

    def sql_started(self, sql: str) -> None:
        return None

    def sql_finished(self, query_count: int, duration_ns: int) -> None:
        return None

    def sending(self) -> None:
        return None

    def ending(self) -> None:
        return None

    def event_out(self) -> None:
        return None

    def finished(self) -> None:
        return None


no_entry = NoEntry()


class EntryOverflow(NoEntry):
    """A request of a slot whose entries are all taken: it still counts as in flight."""

    __slots__ = ("slot",)

    def __init__(self, slot: WorkerSlot) -> None:
        self.slot = slot

    def finished(self) -> None:
        self.slot.request_finished(self)


class NoSlot:
    """Stands in for a worker that got no slot (board full): events simply lack board data."""

    __slots__ = ()

    def request_started(
        self, span: Span, method: str, path: str, query: str = ""
    ) -> SlotEntry | NoEntry:
        return no_entry

    def add_attributes(self, attributes: dict[str, AttributeValue]) -> None:
        return None


no_slot = NoSlot()
