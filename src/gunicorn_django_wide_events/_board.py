"""The board: one shared-memory region, created by the master before the first fork.

Layout, all native byte order::

    header          capacity, entries per slot; the master (pid, start, gunicorn's timeout and
                    max_requests, timeouts and crashes so far); the server sample (seqlock)
    in_use[cap]     one byte per slot: a worker holds it (written by the master)
    busy[cap]       one byte per slot: requests its worker is serving now, at most 255
                    (written by the worker)
    slots[cap]      per worker: the master's sample of it (seqlock), the worker itself (pid and
                    spawn time, seqlock), then one entry per request it can serve at once
                    (seqlock each): what the request is, how far it got, its statement in flight;
                    then the slot's spool of finished spans (``_spool.py``), kept across workers

Every region has exactly one writer, so no lock is ever needed across processes, and none can
be left held by a killed process. A seqlock region is written as: counter made odd, fields,
counter made even; a reader retries when the counter was odd or changed while it read (a torn
read). Single bytes (``in_use``, ``busy``, a request's state) need no counter: a byte is
written whole. The mapping is shared memory without a name in any file system (a ``memfd``,
or anonymous when the live view is off), so nothing is left behind even when the master is
SIGKILLed; workers inherit it through fork. The memfd, owner-only, is how ``wide-events top``
reads a running gunicorn: through ``/proc/<master pid>/fd``, which only the same user (or root)
may open, read-only (see ``_live/``).
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any, Final

from ._os_threads import original
from ._spool import Spool

METHOD_BYTES: Final = 16
PATH_BYTES: Final = 256
QUERY_BYTES: Final = 256
ROUTE_BYTES: Final = 128
VIEW_BYTES: Final = 128
SQL_BYTES: Final = 1024
MAX_ENTRIES_PER_SLOT: Final = 255  # busy[] holds the count of entries in use in one byte
_READ_ATTEMPTS: Final = 100
# A writer descheduled mid-write (a busy machine) keeps its counter odd for a time slice or
# more: past the first spins a reader sleeps between attempts, about 10 ms in all, before it
# takes the region for one a writer died in.
_SPINS_BEFORE_SLEEPING: Final = 10
_SLEEP_BETWEEN_ATTEMPTS_S: Final = 0.0001

_HEADER: Final = struct.Struct("=III")  # capacity, entries per slot, spool bytes per slot
# pid, started_at, gunicorn's timeout and max_requests, then timeouts and crashes counted so far
# (each written whole by the master alone; a reader may see one a write behind another).
_MASTER: Final = struct.Struct("=idIIII")
_MASTER_AT: Final = _HEADER.size
_COUNTS: Final = struct.Struct("=II")
_COUNTS_AT: Final = _MASTER_AT + struct.calcsize("=idII")
MEMFD_NAME: Final = "gunicorn-django-wide-events-board"
_SEQ: Final = struct.Struct("=I")  # the counter in front of each seqlock region
# sampled_at, load1, backlog, master_rss, workers_cpu_percent, workers_rss; a figure nobody
# could sample yet is negative.
_SERVER: Final = struct.Struct("=ddqqdq")
# sampled_at, cpu_percent (negative until psutil has two readings), rss, threads, fds
_MONITOR: Final = struct.Struct("=ddqii")
_WORKER: Final = struct.Struct("=id")  # pid, spawned_at
# requests (the worker's count, this one included), started_at, trace_id, span_id,
# parent_span_id, event_out, state, method, path, query, route, view, db query count, db time
_ENTRY: Final = struct.Struct(
    f"=Qd16s8s8sBB{METHOD_BYTES}s{PATH_BYTES}s{QUERY_BYTES}s{ROUTE_BYTES}s{VIEW_BYTES}sIQ"
)
# What a request's start writes: all of _ENTRY, the three ids side by side.
_ENTRY_START: Final = struct.Struct(
    f"=Qd32sBB{METHOD_BYTES}s{PATH_BYTES}s{QUERY_BYTES}s{ROUTE_BYTES}s{VIEW_BYTES}sIQ"
)
_STARTED_AT: Final = struct.Struct("=d")
_STARTED_AT_AT: Final = struct.calcsize("=Q")
_EVENT_OUT_AT: Final = struct.calcsize("=Qd32s")
_STATE_AT: Final = _EVENT_OUT_AT + 1
_ROUTE_VIEW: Final = struct.Struct(f"={ROUTE_BYTES}s{VIEW_BYTES}s")
_ROUTE_AT: Final = struct.calcsize(f"=Qd32sBB{METHOD_BYTES}s{PATH_BYTES}s{QUERY_BYTES}s")
_PATH: Final = struct.Struct(f"={PATH_BYTES}s")
_PATH_AT: Final = struct.calcsize(f"=Qd32sBB{METHOD_BYTES}s")
_DB: Final = struct.Struct("=IQ")  # written in place, outside the seqlock (see write_db)
_DB_AT: Final = _ROUTE_AT + _ROUTE_VIEW.size
_SQL_AT: Final = _ENTRY.size  # the statement in flight follows the entry's fields
# What a reader takes in one seqlock read: the fields and the statement.
_ENTRY_READ: Final = struct.Struct(f"{_ENTRY.format}{SQL_BYTES}s")
_ENTRY_SIZE: Final = _SEQ.size + _ENTRY.size + SQL_BYTES
_SERVER_AT: Final = _MASTER_AT + _MASTER.size
_FLAGS_AT: Final = _SERVER_AT + _SEQ.size + _SERVER.size


class RequestState:
    """Values of an entry's ``state`` byte: where the request is, for a live view."""

    IDLE: Final = 0
    IN_APP: Final = 1
    SENDING: Final = 2  # the app returned; the body is going out (streaming, a large file)
    ABORTING: Final = 3  # its timeout event is out; the worker is ending it
    ENDING: Final = 4  # its span is ending: the event may be in the spool already

    NAMES: Final = {
        IDLE: "idle",
        IN_APP: "in view",
        SENDING: "streaming",
        ABORTING: "aborting",
        ENDING: "ending",
    }


@dataclass(frozen=True, slots=True)
class MasterInfo:
    pid: int
    started_at: float
    timeout_s: int  # gunicorn's --timeout
    max_requests: int  # 0: none
    timeouts: int  # timeout events since the master started (watchdog's or its own)
    crashes: int  # workers that died mid-request otherwise


@dataclass(frozen=True, slots=True)
class ServerSample:
    sampled_at: float
    load1: float
    backlog: int  # -1 when the platform does not tell
    master_rss: int
    workers_cpu_percent: float  # summed over the workers sampled; -1.0 when none was
    workers_rss: int  # summed over the workers sampled; -1 when none was


@dataclass(frozen=True, slots=True)
class WorkerSample:
    sampled_at: float
    cpu_percent: float  # -1.0 at a process's first sample: psutil needs two readings
    rss: int
    threads: int
    fds: int  # -1 where the platform does not tell


@dataclass(frozen=True, slots=True)
class WorkerRequest:
    """One request entry of a slot, as read back (an idle entry has ``started_at`` 0.0)."""

    pid: int
    spawned_at: float
    requests: int
    started_at: float
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes  # all zero for a root span
    event_out: bool
    state: int
    method: str
    path: str
    query: str
    route: str
    view: str
    db_query_count: int
    db_duration_ns: int
    sql: str


class TornRead(RuntimeError):
    """A region kept changing while it was read: its writer may have died mid-write."""


def _text(raw: bytes) -> str:
    return raw.partition(b"\0")[0].decode("utf-8", "replace")


def _clip(text: str, size: int) -> bytes:
    # Cutting UTF-8 mid-character is fine: reading decodes with "replace".
    return text.encode("utf-8", "replace")[:size]


class Board:
    """The shared region and every read and write of it; it starts no thread of its own."""

    def __init__(
        self,
        capacity: int,
        entries_per_slot: int = 1,
        *,
        spool_bytes: int = 0,
        shared: bool = False,
        buffer: mmap.mmap | None = None,
    ) -> None:
        """A new board (``shared``: in a memfd a live view can open), or one ``open`` read."""
        if not 0 < capacity <= 0xFFFF:
            raise ValueError(f"board capacity must be between 1 and 65535, not {capacity}")
        if not 0 < entries_per_slot <= MAX_ENTRIES_PER_SLOT:
            raise ValueError(
                f"entries per slot must be between 1 and {MAX_ENTRIES_PER_SLOT}, "
                f"not {entries_per_slot}"
            )
        self.capacity = capacity
        self.entries_per_slot = entries_per_slot
        self._in_use_at = _FLAGS_AT
        self._busy_at = _FLAGS_AT + capacity
        self._slots_at = _FLAGS_AT + 2 * capacity
        self._monitor_size = _SEQ.size + _MONITOR.size
        self._worker_size = _SEQ.size + _WORKER.size
        self._entries_offset = self._monitor_size + self._worker_size
        self._spool_offset = self._entries_offset + entries_per_slot * _ENTRY_SIZE
        self.spool_bytes = spool_bytes & ~7
        self._slot_size = self._spool_offset + self.spool_bytes
        self.size = self._slots_at + capacity * self._slot_size
        self.fd: int | None = None
        if buffer is not None:
            self.buffer = buffer
            return
        if shared and hasattr(os, "memfd_create"):
            self.fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC)
            os.fchmod(self.fd, 0o600)
            os.ftruncate(self.fd, self.size)
            self.buffer = mmap.mmap(self.fd, self.size)
        else:
            self.buffer = mmap.mmap(-1, self.size)
        _HEADER.pack_into(self.buffer, 0, capacity, entries_per_slot, self.spool_bytes)

    @classmethod
    def open(cls, path: str) -> Board:
        """A running gunicorn's board, read-only, from its memfd's path (``/proc/PID/fd/N``).

        Raises:
            OSError: the path cannot be opened or mapped.
            ValueError: what it holds is no board.
        """
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < _SERVER_AT:
                raise ValueError(f"{path} is too small to be a board")
            buffer = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ)
        capacity, entries, spool_bytes = _HEADER.unpack_from(buffer, 0)
        try:
            board = cls(capacity, entries, spool_bytes=spool_bytes, buffer=buffer)
        except ValueError:
            buffer.close()
            raise
        if board.size != size:
            buffer.close()
            raise ValueError(f"{path} does not hold a board of its own size")
        return board

    # -- the master itself ------------------------------------------------------------------

    def write_master(self, pid: int, started_at: float, timeout_s: int, max_requests: int) -> None:
        timeouts, crashes = _COUNTS.unpack_from(self.buffer, _COUNTS_AT)
        _MASTER.pack_into(
            self.buffer, _MASTER_AT, pid, started_at, timeout_s, max_requests, timeouts, crashes
        )

    def count_exit(self, *, timeout: bool) -> None:
        """A worker died mid-request: one more timeout, or one more crash."""
        timeouts, crashes = _COUNTS.unpack_from(self.buffer, _COUNTS_AT)
        if timeout:
            timeouts += 1
        else:
            crashes += 1
        _COUNTS.pack_into(self.buffer, _COUNTS_AT, timeouts & 0xFFFFFFFF, crashes & 0xFFFFFFFF)

    def read_master(self) -> MasterInfo:
        return MasterInfo(*_MASTER.unpack_from(self.buffer, _MASTER_AT))

    # -- slots: assigned and freed by the master ------------------------------------------

    def free_slots(self) -> list[int]:
        in_use = self.buffer[self._in_use_at : self._in_use_at + self.capacity]
        return [slot for slot, flag in enumerate(in_use) if not flag]

    def assign_slot(self, slot: int | None = None) -> int | None:
        """Take ``slot`` (or the lowest free one) for a worker about to be forked; None: full."""
        if slot is None:
            in_use = self.buffer[self._in_use_at : self._in_use_at + self.capacity]
            slot = in_use.find(0)
            if slot < 0:
                return None
        elif self.buffer[self._in_use_at + self._check(slot)]:
            raise ValueError(f"slot {slot} is in use")
        self._reset_slot(slot)
        self.buffer[self._in_use_at + slot] = 1
        return slot

    def free_slot(self, slot: int) -> None:
        self._slot_offset(slot)  # raises for a slot outside the board
        self.buffer[self._busy_at + slot] = 0
        self.buffer[self._in_use_at + slot] = 0

    def count_in_use_and_busy(self) -> tuple[int, int]:
        """Workers holding a slot, and those of them serving any request, from one read."""
        capacity = self.capacity
        flags = self.buffer[self._in_use_at : self._busy_at + capacity]
        # A slot not in use has busy 0 (reset and freed so), so nonzero busy bytes count.
        return flags.count(1, 0, capacity), capacity - flags.count(0, capacity)

    def in_flight(self, slot: int) -> int:
        """Requests ``slot``'s worker is serving now, as it last wrote."""
        return self.buffer[self.busy_offset(slot)]

    def busy_offset(self, slot: int) -> int:
        """Where ``slot``'s worker writes the count of its requests in flight (one byte)."""
        self._slot_offset(slot)  # raises for a slot outside the board
        return self._busy_at + slot

    def _reset_slot(self, slot: int) -> None:
        """Zero all but the spool, whose records the slot's next worker sends."""
        start = self._slots_at + slot * self._slot_size
        self.buffer[start : start + self._spool_offset] = bytes(self._spool_offset)
        self.buffer[self._busy_at + slot] = 0

    def spool(self, slot: int) -> Spool | None:
        """The spool of ``slot`` (a new object, with its own lock), or None without spools."""
        if not self.spool_bytes:
            return None
        return Spool(self.buffer, self._slot_offset(slot) + self._spool_offset, self.spool_bytes)

    # -- the server sample: written by the master's monitor -------------------------------

    def write_server(self, sample: ServerSample) -> None:
        seq = self._begin_write(_SERVER_AT)
        _SERVER.pack_into(
            self.buffer,
            _SERVER_AT + _SEQ.size,
            sample.sampled_at,
            sample.load1,
            sample.backlog,
            sample.master_rss,
            sample.workers_cpu_percent,
            sample.workers_rss,
        )
        self._end_write(_SERVER_AT, seq + 2)

    def read_server(self) -> ServerSample | None:
        """The last server sample, or None before the first one."""
        values = self._read(_SERVER, _SERVER_AT)
        return ServerSample(*values) if values[0] else None

    def sample_versions(self, slot: int) -> tuple[int, int]:
        """The seqlock counters of the server sample and of ``slot``'s sample: while both are
        unchanged (and even), so are the samples, and a reader may keep what it last read."""
        return (
            _SEQ.unpack_from(self.buffer, _SERVER_AT)[0],
            _SEQ.unpack_from(self.buffer, self._slot_offset(slot))[0],
        )

    # -- a worker's sample: written by the master's monitor -------------------------------

    def write_monitor(self, slot: int, sample: WorkerSample) -> None:
        offset = self._slot_offset(slot)
        seq = self._begin_write(offset)
        _MONITOR.pack_into(
            self.buffer,
            offset + _SEQ.size,
            sample.sampled_at,
            sample.cpu_percent,
            sample.rss,
            sample.threads,
            sample.fds,
        )
        self._end_write(offset, seq + 2)

    def read_monitor(self, slot: int) -> WorkerSample | None:
        values = self._read(_MONITOR, self._slot_offset(slot))
        return WorkerSample(*values) if values[0] else None

    # -- the worker itself and its requests: written by the worker ------------------------

    def write_worker(self, slot: int, pid: int, spawned_at: float) -> None:
        offset = self._slot_offset(slot) + self._monitor_size
        seq = self._begin_write(offset)
        _WORKER.pack_into(self.buffer, offset + _SEQ.size, pid, spawned_at)
        self._end_write(offset, seq + 2)

    def read_worker(self, slot: int) -> tuple[int, float]:
        """``slot``'s worker: its pid and spawn time (0 and 0.0 before it wrote them)."""
        pid, spawned_at = self._read(_WORKER, self._slot_offset(slot) + self._monitor_size)
        return int(pid), float(spawned_at)

    def entry_writer(self, slot: int, entry: int) -> EntryWriter:
        return EntryWriter(self, self._entry_offset(slot, entry))

    def write_request(
        self,
        slot: int,
        entry: int = 0,
        *,
        requests: int,
        started_at: float = 0.0,
        trace_id: bytes = b"",
        span_id: bytes = b"",
        parent_span_id: bytes = b"",
        event_out: bool = False,
        state: int = RequestState.IDLE,
        method: str = "",
        path: str = "",
        query: str = "",
        route: str = "",
        view: str = "",
        db_query_count: int = 0,
        db_duration_ns: int = 0,
        sql: str = "",
    ) -> None:
        """Every field of one entry at once, and the slot's in-flight count as 1 when it has
        started, 0 when not (tests and tools that write one entry; workers use ``EntryWriter``
        and count for themselves)."""
        offset = self._entry_offset(slot, entry)
        seq = self._begin_write(offset)
        _ENTRY.pack_into(
            self.buffer,
            offset + _SEQ.size,
            requests,
            started_at,
            trace_id,
            span_id,
            parent_span_id,
            event_out,
            state,
            _clip(method, METHOD_BYTES),
            _clip(path, PATH_BYTES),
            _clip(query, QUERY_BYTES),
            _clip(route, ROUTE_BYTES),
            _clip(view, VIEW_BYTES),
            db_query_count,
            db_duration_ns,
        )
        write_sql(self.buffer, offset + _SEQ.size + _SQL_AT, sql)
        self._end_write(offset, seq + 2)
        self.buffer[self._busy_at + slot] = 1 if started_at else 0

    def read_request(self, slot: int, entry: int = 0) -> WorkerRequest:
        pid, spawned_at = self.read_worker(slot)
        offset = self._entry_offset(slot, entry)
        values = self._read(_ENTRY_READ, offset)
        requests, started_at, trace_id, span_id, parent_id, event_out, state = values[:7]
        method, path, query, route, view = (_text(raw) for raw in values[7:12])
        db_query_count, db_duration_ns = values[12:14]
        sql = _text(values[14])
        return WorkerRequest(
            pid, spawned_at, requests, started_at, trace_id, span_id, parent_id, bool(event_out),
            state, method, path, query, route, view, db_query_count, db_duration_ns, sql,
        )  # fmt: skip

    def requests_in_flight(self, slot: int) -> list[tuple[int, WorkerRequest]]:
        """Every entry of ``slot`` with a request started and not finished, by entry index."""
        found = []
        for entry in range(self.entries_per_slot):
            request = self.read_request(slot, entry)
            if request.started_at:
                found.append((entry, request))
        return found

    def requests_started(self, slot: int) -> int:
        """Requests ``slot``'s worker has started, as it wrote at its last one (0 before any):
        the entries keep the count after their request finished."""
        return max(
            self.read_request(slot, entry).requests for entry in range(self.entries_per_slot)
        )

    def mark_event_out(self, slot: int, entry: int = 0) -> None:
        """The request in that entry has its event out: nobody else may send one for it."""
        offset = self._entry_offset(slot, entry)
        seq = self._begin_write(offset)
        self.buffer[offset + _SEQ.size + _EVENT_OUT_AT] = 1
        self._end_write(offset, seq + 2)

    # -- offsets and the seqlock -----------------------------------------------------------

    def _check(self, slot: int) -> int:
        self._slot_offset(slot)
        return slot

    def _slot_offset(self, slot: int) -> int:
        if not 0 <= slot < self.capacity:
            raise IndexError(f"slot {slot} is outside the board (capacity {self.capacity})")
        return self._slots_at + slot * self._slot_size

    def _entry_offset(self, slot: int, entry: int) -> int:
        """Where entry ``entry`` of ``slot`` (its seqlock counter, then ``_ENTRY``) starts."""
        if not 0 <= entry < self.entries_per_slot:
            raise IndexError(f"entry {entry} is outside the slot ({self.entries_per_slot})")
        return self._slot_offset(slot) + self._entries_offset + entry * _ENTRY_SIZE

    # The counter is written with a slice assignment, not _SEQ.pack_into: pack_into zero-fills
    # its bytes before writing them, and a reader that saw that passing 0 before and after a
    # payload write would take a torn read as whole.

    def _begin_write(self, offset: int) -> int:
        buffer = self.buffer
        seq: int = _SEQ.unpack_from(buffer, offset)[0]
        seq |= 1  # odd: a write is under way (also after a writer died mid-write)
        buffer[offset : offset + _SEQ.size] = _SEQ.pack(seq)
        return seq - 1

    def _end_write(self, offset: int, seq: int) -> None:
        self.buffer[offset : offset + _SEQ.size] = _SEQ.pack(seq & 0xFFFFFFFF)

    def _read(self, layout: struct.Struct, offset: int) -> tuple[Any, ...]:
        """Read the seqlock region at ``offset``: its counter, then ``layout`` right after it.

        The counter is a word of its own, outside ``layout``: ``struct.pack_into`` zero-fills
        the bytes it packs before writing them, so a counter inside would read 0, an even
        "stable" value, in the middle of a write.
        """
        buffer = self.buffer
        payload_at = offset + _SEQ.size
        for attempt in range(_READ_ATTEMPTS):
            if attempt >= _SPINS_BEFORE_SLEEPING:
                # The real sleep: gevent's would make a hub for the watchdog's OS thread.
                original("time", "sleep")(_SLEEP_BETWEEN_ATTEMPTS_S)
            (seq,) = _SEQ.unpack_from(buffer, offset)
            if seq & 1:
                continue
            values = layout.unpack_from(buffer, payload_at)
            (seq_after,) = _SEQ.unpack_from(buffer, offset)
            if seq_after == seq:
                return values
        raise TornRead(f"no consistent read at offset {offset} in {_READ_ATTEMPTS} attempts")


def write_sql(buffer: Any, at: int, sql: str) -> None:
    """The statement a request is running now ("" once done), written in place.

    Outside the seqlock, on every query: its readers are the master after the worker died
    (nobody writes then) and a live view, and a worker killed mid-write must not leave the
    counter odd, which would hide the whole request from them. A torn statement decodes with
    replacement characters.
    """
    if not sql:
        buffer[at] = 0
        return
    data = sql[:SQL_BYTES].encode("utf-8", "replace")[: SQL_BYTES - 1] + b"\0"
    buffer[at : at + len(data)] = data


class EntryWriter:
    """One request entry of a worker's slot, written as its request starts, runs and ends.

    ``Board.write_request`` packs every field; a request's start packs everything but the
    statement, and the rest of its life writes only what changed.
    """

    __slots__ = ("_board", "_buffer", "_offset", "_payload_at", "_sql_at")

    def __init__(self, board: Board, offset: int) -> None:
        self._board = board
        self._buffer = board.buffer
        self._offset = offset
        self._payload_at = offset + _SEQ.size
        self._sql_at = self._payload_at + _SQL_AT

    def started(  # noqa: PLR0917 (once per request: positional, as struct.pack_into takes them)
        self, requests: int, started_at: float, ids: bytes, method: str, path: str, query: str
    ) -> None:
        """``ids``: trace_id (16 bytes), span_id and parent_span_id (8 each), big-endian."""
        board = self._board
        offset = self._offset
        seq = board._begin_write(offset)
        _ENTRY_START.pack_into(
            self._buffer,
            self._payload_at,
            requests,
            started_at,
            ids,
            False,
            RequestState.IN_APP,
            # "16s", "256s" cut longer bytes themselves (mid-character: read with "replace").
            method.encode("utf-8", "replace"),
            path.encode("utf-8", "replace"),
            query.encode("utf-8", "replace"),
            b"",
            b"",
            0,
            0,
        )
        board._end_write(offset, seq + 2)

    def route_resolved(self, route: str, view: str) -> None:
        """In place, outside the seqlock, like the statement: a torn one reads "replaced"."""
        _ROUTE_VIEW.pack_into(
            self._buffer,
            self._payload_at + _ROUTE_AT,
            route.encode("utf-8", "replace"),
            view.encode("utf-8", "replace"),
        )

    def sql_started(self, sql: str) -> None:
        write_sql(self._buffer, self._sql_at, sql)

    def sql_finished(self, query_count: int, duration_ns: int) -> None:
        """The statement is done: none in flight, the request's totals so far.

        In place, outside the seqlock, like the statement: two numbers a reader may see one
        query apart.
        """
        buffer = self._buffer
        buffer[self._sql_at] = 0
        _DB.pack_into(buffer, self._payload_at + _DB_AT, query_count, duration_ns)

    def state(self, state: int) -> None:
        self._buffer[self._payload_at + _STATE_AT] = state

    def event_out(self) -> None:
        """The request's event is out (a timeout): nobody else may send one for it."""
        board = self._board
        offset = self._offset
        seq = board._begin_write(offset)
        buffer = self._buffer
        buffer[self._payload_at + _EVENT_OUT_AT] = 1
        buffer[self._payload_at + _STATE_AT] = RequestState.ABORTING
        board._end_write(offset, seq + 2)

    def path_changed(self, path: str) -> None:
        """The request's path, rewritten (its secrets redacted) once the app resolved it.

        Under the seqlock, unlike the route: a reader sees the path as sent or as redacted,
        never a torn mix that keeps part of a secret.
        """
        board = self._board
        offset = self._offset
        seq = board._begin_write(offset)
        _PATH.pack_into(self._buffer, self._payload_at + _PATH_AT, path.encode("utf-8", "replace"))
        board._end_write(offset, seq + 2)

    def finished(self) -> None:
        board = self._board
        offset = self._offset
        buffer = self._buffer
        seq = board._begin_write(offset)
        _STARTED_AT.pack_into(buffer, self._payload_at + _STARTED_AT_AT, 0.0)
        # event_out and state side by side: not out, idle (the statement was cleared by then).
        buffer[self._payload_at + _EVENT_OUT_AT : self._payload_at + _STATE_AT + 1] = b"\0\0"
        board._end_write(offset, seq + 2)


SLOT_ATTRIBUTE: Final = "wide_events_slot"
"""Set on gunicorn's ``Worker`` object by the master before fork: the slot it gets."""


def slot_of(worker: Any) -> int | None:
    """The board slot of a gunicorn worker object, if the master gave it one."""
    slot = getattr(worker, SLOT_ATTRIBUTE, None)
    return slot if isinstance(slot, int) else None
