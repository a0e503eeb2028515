"""The board: one anonymous shared-memory region, created by the master before the first fork.

Layout, all native byte order::

    header        capacity, then the server sample (seqlock)
    in_use[cap]   one byte per slot: a worker holds it (written by the master)
    busy[cap]     one byte per slot: its worker is serving a request (written by the worker)
    slots[cap]    per worker: the master's sample of it (seqlock), its request (seqlock)

Every region has exactly one writer, so no lock is ever needed, and none can be left held by a
killed process. A seqlock region is written as: counter made odd, fields, counter made even; a
reader retries when the counter was odd or changed while it read (a torn read). Single bytes
(``in_use``, ``busy``) need no counter: a byte is written whole. The mapping is anonymous
(``mmap(-1, ...)``), so nothing is left behind in ``/dev/shm`` even when the master is
SIGKILLed; workers inherit it through fork.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Any, Final

PATH_BYTES: Final = 256
SQL_BYTES: Final = 1024
METHOD_BYTES: Final = 16
_READ_ATTEMPTS: Final = 100

_HEADER: Final = struct.Struct("=I")  # capacity
_SEQ: Final = struct.Struct("=I")  # the counter in front of each seqlock region
# sampled_at, load1, backlog, master_rss, workers_cpu_percent, workers_rss
_SERVER: Final = struct.Struct("=ddqqdq")
# sampled_at, cpu_percent, rss, threads, fds
_MONITOR: Final = struct.Struct("=ddqii")
# pid, spawned_at, requests, started_at, trace_id, span_id, parent_span_id, event_out, method,
# path, sql
_REQUEST: Final = struct.Struct(f"=idQd16s8s8sB{METHOD_BYTES}s{PATH_BYTES}s{SQL_BYTES}s")

_EVENT_OUT_AT: Final = struct.calcsize("=idQd16s8s8s")  # offset of event_out in _REQUEST
# What changes when a request starts: requests to path, the tail of _REQUEST without the sql
# (the three ids side by side: trace_id, span_id, parent_span_id).
_REQUEST_START: Final = struct.Struct(f"=Qd32sB{METHOD_BYTES}s{PATH_BYTES}s")
_REQUEST_START_AT: Final = struct.calcsize("=id")  # offset of requests in _REQUEST
_STARTED_AT: Final = struct.Struct("=d")
_STARTED_AT_AT: Final = struct.calcsize("=idQ")  # offset of started_at in _REQUEST
_SQL_AT: Final = _REQUEST_START_AT + _REQUEST_START.size  # offset of sql in _REQUEST
_SERVER_AT: Final = _HEADER.size
_FLAGS_AT: Final = _SERVER_AT + _SEQ.size + _SERVER.size


@dataclass(frozen=True, slots=True)
class ServerSample:
    sampled_at: float
    load1: float
    backlog: int  # -1 when the platform does not tell
    master_rss: int
    workers_cpu_percent: float  # summed over all workers
    workers_rss: int  # summed over all workers


@dataclass(frozen=True, slots=True)
class WorkerSample:
    sampled_at: float
    cpu_percent: float
    rss: int
    threads: int
    fds: int


@dataclass(frozen=True, slots=True)
class WorkerRequest:
    pid: int
    spawned_at: float
    requests: int
    started_at: float  # 0.0 when idle
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes  # all zero for a root span
    event_out: bool
    method: str
    path: str
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

    def __init__(self, capacity: int, buffer: mmap.mmap | bytearray | None = None) -> None:
        if not 0 < capacity <= 0xFFFF:
            raise ValueError(f"board capacity must be between 1 and 65535, not {capacity}")
        self.capacity = capacity
        self._in_use_at = _FLAGS_AT
        self._busy_at = _FLAGS_AT + capacity
        self._slots_at = _FLAGS_AT + 2 * capacity
        self._monitor_size = _SEQ.size + _MONITOR.size
        self._slot_size = self._monitor_size + _SEQ.size + _REQUEST.size
        self.size = self._slots_at + capacity * self._slot_size
        self.buffer = buffer if buffer is not None else mmap.mmap(-1, self.size)
        _HEADER.pack_into(self.buffer, 0, capacity)

    # -- slots: assigned and freed by the master ------------------------------------------

    def assign_slot(self) -> int | None:
        """Take the lowest free slot for a worker about to be forked; None when full."""
        in_use = self.buffer[self._in_use_at : self._in_use_at + self.capacity]
        slot = in_use.find(0)
        if slot < 0:
            return None
        self._reset_slot(slot)
        self.buffer[self._in_use_at + slot] = 1
        return slot

    def free_slot(self, slot: int) -> None:
        self._slot_offset(slot)  # raises for a slot outside the board
        self.buffer[self._busy_at + slot] = 0
        self.buffer[self._in_use_at + slot] = 0

    def count_in_use_and_busy(self) -> tuple[int, int]:
        """Both counts from one read of the flags (``busy`` follows ``in_use``)."""
        capacity = self.capacity
        flags = self.buffer[self._in_use_at : self._busy_at + capacity]
        return flags.count(1, 0, capacity), flags.count(1, capacity)

    def _reset_slot(self, slot: int) -> None:
        start = self._slots_at + slot * self._slot_size
        self.buffer[start : start + self._slot_size] = bytes(self._slot_size)
        self.buffer[self._busy_at + slot] = 0

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

    # -- a worker's request: written by the worker itself ---------------------------------

    def write_request(
        self,
        slot: int,
        *,
        pid: int,
        spawned_at: float,
        requests: int,
        started_at: float = 0.0,
        trace_id: bytes = b"",
        span_id: bytes = b"",
        parent_span_id: bytes = b"",
        event_out: bool = False,
        method: str = "",
        path: str = "",
        sql: str = "",
    ) -> None:
        offset = self._request_offset(slot)
        seq = self._begin_write(offset)
        _REQUEST.pack_into(
            self.buffer,
            offset + _SEQ.size,
            pid,
            spawned_at,
            requests,
            started_at,
            trace_id,
            span_id,
            parent_span_id,
            event_out,
            _clip(method, METHOD_BYTES),
            _clip(path, PATH_BYTES),
            _clip(sql, SQL_BYTES),
        )
        self._end_write(offset, seq + 2)
        self.buffer[self._busy_at + slot] = 1 if started_at else 0

    def request_writer(self, slot: int) -> RequestWriter:
        return RequestWriter(self, self._request_offset(slot), slot)

    def sql_offset(self, slot: int) -> int:
        """Where ``slot``'s statement in flight lives, for ``write_sql``."""
        return self._request_offset(slot) + _SEQ.size + _SQL_AT

    def write_sql(self, at: int, sql: str) -> None:
        """The statement the request is running now (at ``sql_offset(slot)``; "" once done).

        Written in place, outside the seqlock, on every query: the one reader is the master
        after the worker died (nobody writes then), and a worker killed mid-write must not
        leave the counter odd, which would hide the whole request from that reader. A torn
        statement decodes with replacement characters.
        """
        if not sql:
            self.buffer[at] = 0
            return
        data = sql[:SQL_BYTES].encode("utf-8", "replace")[: SQL_BYTES - 1] + b"\0"
        self.buffer[at : at + len(data)] = data

    def mark_event_out(self, slot: int) -> None:
        """The request in ``slot`` has its event out: nobody else may send one for it."""
        offset = self._request_offset(slot)
        seq = self._begin_write(offset)
        self.buffer[offset + _SEQ.size + _EVENT_OUT_AT] = 1
        self._end_write(offset, seq + 2)

    def read_request(self, slot: int) -> WorkerRequest:
        values = self._read(_REQUEST, self._request_offset(slot))
        pid, spawned_at, requests, started_at, trace_id, span_id, parent_id, event_out = values[:8]
        method, path, sql = (_text(raw) for raw in values[8:])
        return WorkerRequest(
            pid, spawned_at, requests, started_at, trace_id, span_id, parent_id, bool(event_out),
            method, path, sql,
        )  # fmt: skip

    # -- seqlock ---------------------------------------------------------------------------

    def _slot_offset(self, slot: int) -> int:
        if not 0 <= slot < self.capacity:
            raise IndexError(f"slot {slot} is outside the board (capacity {self.capacity})")
        return self._slots_at + slot * self._slot_size

    def _request_offset(self, slot: int) -> int:
        """Where ``slot``'s request region (its seqlock counter, then ``_REQUEST``) starts."""
        return self._slot_offset(slot) + self._monitor_size

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
        for _ in range(_READ_ATTEMPTS):
            (seq,) = _SEQ.unpack_from(buffer, offset)
            if seq & 1:
                continue
            values = layout.unpack_from(buffer, payload_at)
            (seq_after,) = _SEQ.unpack_from(buffer, offset)
            if seq_after == seq:
                return values
        raise TornRead(f"no consistent read at offset {offset} in {_READ_ATTEMPTS} attempts")


class RequestWriter:
    """A worker's own request region, written as each request starts and finishes.

    ``Board.write_request`` packs every field; a request's start writes only what changes (no
    pid, no statement) and its end only ``started_at`` (0: the slot is idle) and ``event_out``.
    """

    __slots__ = ("_board", "_buffer", "_busy_at", "_offset")

    def __init__(self, board: Board, offset: int, slot: int) -> None:
        self._board = board
        self._buffer = board.buffer
        self._offset = offset
        self._busy_at = board._busy_at + slot

    def started(self, requests: int, started_at: float, ids: bytes, method: str, path: str) -> None:
        """``ids``: trace_id (16 bytes), span_id and parent_span_id (8 each), big-endian."""
        board = self._board
        buffer = self._buffer
        offset = self._offset
        seq = board._begin_write(offset)
        _REQUEST_START.pack_into(
            buffer,
            offset + _SEQ.size + _REQUEST_START_AT,
            requests,
            started_at,
            ids,
            False,
            # "16s" and "256s" cut longer bytes themselves (mid-character: read with "replace").
            method.encode("utf-8", "replace"),
            path.encode("utf-8", "replace"),
        )
        board._end_write(offset, seq + 2)
        buffer[self._busy_at] = 1

    def finished(self) -> None:
        board = self._board
        buffer = self._buffer
        offset = self._offset
        seq = board._begin_write(offset)
        _STARTED_AT.pack_into(buffer, offset + _SEQ.size + _STARTED_AT_AT, 0.0)
        buffer[offset + _SEQ.size + _EVENT_OUT_AT] = 0
        board._end_write(offset, seq + 2)
        buffer[self._busy_at] = 0


SLOT_ATTRIBUTE: Final = "wide_events_slot"
"""Set on gunicorn's ``Worker`` object by the master before fork: the slot it gets."""


def slot_of(worker: Any) -> int | None:
    """The board slot of a gunicorn worker object, if the master gave it one."""
    slot = getattr(worker, SLOT_ATTRIBUTE, None)
    return slot if isinstance(slot, int) else None
