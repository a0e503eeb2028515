"""A worker slot's spool: its finished spans, as records, in the board until acknowledged.

A span that ended lives in shared memory, not only in the worker's, so a worker killed for any
reason loses nothing: the next worker of the slot sends what it left, or the master does when
it exits. The layout, in the board after the slot's request entries, native byte order::

    header   head, tail (byte positions, only ever growing), events dropped (not yet reported),
             acknowledged (the position up to which the exporting process has sent all)
    ring     records, each: length, kind, state, span count, then the payload, 8-aligned

Records are appended at ``head`` and leave at ``tail`` once sent. A record never straddles the
end of the ring: the rest of the ring is skipped (a wrap marker) and it starts at the front.
When the ring is full the oldest records make room: sent ones go, plain requests are dropped
(and counted), precious records (timeouts and crashes) are never dropped for room: they move
to the newest end.

Two processes use a spool, and no lock is shared between them. Its writer (the slot's worker,
its threads under one lock) appends, makes room, and marks the records its own thread sent at
once (a timeout event). The master's exporting process (``_master/spool_exporter.py``) reads
the records past the acknowledged position and, once the collector took them, moves that
position, the one field it writes; the writer takes everything before it as gone. Each
position is one aligned 8-byte field, read and written whole. The writer moves the tail before
it overwrites what it passes (room for a new record), and the reader checks the tail after its
copy, so a record overwritten while it was read is never sent.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

_HEADER: Final = struct.Struct("=QQI4x")  # head, tail, dropped: the writer's
_ACKNOWLEDGED: Final = struct.Struct("=Q")  # the exporting process's, after the writer's
_RECORD: Final = struct.Struct("=IBBH")  # payload length, kind, state, span count
_WRAP: Final = 0xFFFFFFFF  # a record length that says: the rest of the ring is unused
_STATE_AT: Final = struct.calcsize("=IB")  # the state byte within a record's header
HEADER_SIZE: Final = _HEADER.size + _ACKNOWLEDGED.size
MIN_RING_SIZE: Final = 4096


class Kind:
    PLAIN: Final = 1
    PRECIOUS: Final = 2  # a timeout or crash event: never dropped to make room


class State:
    PENDING: Final = 0
    SENT: Final = 1
    HELD: Final = 2  # being sent at once by the thread that ended it (a timeout event)


class Record(NamedTuple):
    position: int  # where its header starts, as a byte position (not modulo the ring)
    kind: int
    spans: int
    payload: bytes | memoryview


def _aligned(size: int) -> int:
    return (size + 7) & ~7


class Spool:
    """The spool of one slot, over ``buffer[offset : offset + size]``."""

    def __init__(self, buffer: Any, offset: int, size: int) -> None:
        if size < HEADER_SIZE + MIN_RING_SIZE:
            raise ValueError(f"a spool needs at least {HEADER_SIZE + MIN_RING_SIZE} bytes")
        self._buffer = buffer
        self._header_at = offset
        self._ring_at = offset + HEADER_SIZE
        self.ring_size = (size - HEADER_SIZE) & ~7
        self.has_dropped = False  # this process dropped an event for room (for one log line)
        self._lock = threading.Lock()

    # -- the header -------------------------------------------------------------------------

    def _read_header(self) -> tuple[int, int, int]:
        """head, tail, dropped; the tail past every record the exporting process sent."""
        head, tail, dropped = _HEADER.unpack_from(self._buffer, self._header_at)
        acknowledged = self.acknowledged()
        return int(head), int(max(tail, min(acknowledged, head))), int(dropped)

    def _write_header(self, head: int, tail: int, dropped: int) -> None:
        _HEADER.pack_into(self._buffer, self._header_at, head, tail, dropped & 0xFFFFFFFF)

    def acknowledged(self) -> int:
        (position,) = _ACKNOWLEDGED.unpack_from(self._buffer, self._header_at + _HEADER.size)
        return int(position)

    def acknowledge(self, position: int) -> None:
        """The exporting process sent everything before ``position`` (only it calls this)."""
        _ACKNOWLEDGED.pack_into(self._buffer, self._header_at + _HEADER.size, position)

    def clear(self) -> None:
        with self._lock:
            self._write_header(0, 0, 0)
            self.acknowledge(0)

    def take_dropped(self) -> int:
        """Events dropped for room since the last call (each is reported once)."""
        with self._lock:
            head, tail, dropped = self._read_header()
            if dropped:
                self._write_header(head, tail, 0)
            return dropped

    # -- records ----------------------------------------------------------------------------

    def _at(self, position: int) -> int:
        return self._ring_at + position % self.ring_size

    def _record_at(
        self, position: int, copy: memoryview | None = None, start: int = 0
    ) -> tuple[int, int, int, int]:
        """length, kind, state, spans of the record at ``position`` (length _WRAP: a marker),
        read from the ring, or from ``copy``, which holds the ring's bytes from ``start``."""
        if self.ring_size - position % self.ring_size < _RECORD.size:
            return _WRAP, 0, 0, 0  # too little ring left for a header: skipped as if marked
        if copy is None:
            length, kind, state, spans = _RECORD.unpack_from(self._buffer, self._at(position))
        else:
            length, kind, state, spans = _RECORD.unpack_from(copy, position - start)
        return int(length), int(kind), int(state), int(spans)

    def _next(self, position: int, length: int) -> int:
        if length == _WRAP:
            return position + self.ring_size - position % self.ring_size
        return position + _RECORD.size + _aligned(length)

    def append(
        self, payload: bytes, spans: int, kind: int = Kind.PLAIN, held: bool = False
    ) -> int | None:
        """Add a record; its position, or None when it could not be kept.

        ``held``: its own thread sends it now; ``pending`` leaves it out until ``release``.
        Room is made from the oldest end: sent records go, plain ones are dropped (and
        counted), precious ones move to the newest end; a record held by a sending thread
        stops it, and then the new record is the one dropped.
        """
        need = _RECORD.size + _aligned(len(payload))
        if need > self.ring_size:
            with self._lock:
                head, tail, dropped = self._read_header()
                self._write_header(head, tail, dropped + spans)
            self.has_dropped = True
            return None
        state = State.HELD if held else State.PENDING
        with self._lock:
            head, tail, dropped = self._read_header()
            offset = head % self.ring_size
            if need <= self.ring_size - offset and head + need - tail <= self.ring_size:
                # The common case, once a request: room before the end, none to make.
                at = self._ring_at + offset
                _RECORD.pack_into(self._buffer, at, len(payload), kind, state, spans)
                self._buffer[at + _RECORD.size : at + _RECORD.size + len(payload)] = payload
                _HEADER.pack_into(self._buffer, self._header_at, head + need, tail, dropped)
                return head
            return self._append_making_room((head, tail, dropped), payload, (kind, state, spans))

    def _append_making_room(
        self, header: tuple[int, int, int], payload: bytes, record: tuple[int, int, int]
    ) -> int | None:
        """``append`` where the ring's end is near or it is full (under the lock)."""
        head, tail, dropped = header
        kind, state, spans = record
        dropped_before = dropped
        moved: list[tuple[bytes, int, int]] = []  # precious records taken off the old end
        fits = True
        while head + self._extent(head, [m[0] for m in moved] + [payload]) - tail > (
            self.ring_size
        ):
            if tail >= head:
                fits = False
                break
            length, old_kind, old_state, old_spans = self._record_at(tail)
            if length == _WRAP or old_state == State.SENT:
                pass
            elif old_kind == Kind.PLAIN and old_state == State.PENDING:
                dropped += old_spans
            elif old_kind == Kind.PRECIOUS and old_state == State.PENDING:
                at = self._at(tail) + _RECORD.size
                moved.append((bytes(self._buffer[at : at + length]), old_kind, old_spans))
            else:  # a record its thread is sending right now stays where it is
                fits = False
                break
            tail = self._next(tail, length)
        # The tail first: the exporting process must see a record gone before it is overwritten.
        self._write_header(head, tail, dropped)
        for old_payload, old_kind, old_spans in moved:
            head = self._write(head, old_payload, old_kind, State.PENDING, old_spans)[1]
        position = None
        if fits:
            position, head = self._write(head, payload, kind, state, spans)
        else:
            dropped += spans
        if dropped > dropped_before:
            self.has_dropped = True
        self._write_header(head, tail, dropped)
        return position

    def _extent(self, head: int, payloads: list[bytes]) -> int:
        """Bytes from ``head`` that writing ``payloads`` there takes, end-of-ring skips too."""
        position = head
        for payload in payloads:
            need = _RECORD.size + _aligned(len(payload))
            room_to_end = self.ring_size - position % self.ring_size
            if room_to_end < need:
                position += room_to_end
            position += need
        return position - head

    def _write(
        self, head: int, payload: bytes, kind: int, state: int, spans: int
    ) -> tuple[int, int]:
        """Write one record at ``head`` (after a wrap marker if the ring's end is too near);
        its position and the new head."""
        need = _RECORD.size + _aligned(len(payload))
        room_to_end = self.ring_size - head % self.ring_size
        if room_to_end < need:
            if room_to_end >= _RECORD.size:
                _RECORD.pack_into(self._buffer, self._at(head), _WRAP, 0, 0, 0)
            head += room_to_end
        at = self._at(head)
        _RECORD.pack_into(self._buffer, at, len(payload), kind, state, spans)
        self._buffer[at + _RECORD.size : at + _RECORD.size + len(payload)] = payload
        return head, head + need

    def pending(
        self, limit_bytes: int, limit_records: int | None = None, *, held_too: bool = False
    ) -> list[Record]:
        """Records not sent yet, oldest first, up to about ``limit_bytes`` of payload and at
        most ``limit_records`` of them.

        ``held_too``: also those a thread was sending at once, when that process is gone.
        """
        wanted = (State.PENDING, State.HELD) if held_too else (State.PENDING,)
        with self._lock:
            head, tail, _ = self._read_header()
            found: list[Record] = []
            total = 0
            for position, length, kind, state, spans in self._walk(head, tail):
                if state not in wanted:
                    continue
                if found and (total + length > limit_bytes or len(found) == limit_records):
                    break
                at = self._at(position) + _RECORD.size
                found.append(Record(position, kind, spans, bytes(self._buffer[at : at + length])))
                total += length
            return found

    def pending_count(self) -> int:
        """Records not sent yet, held ones included (for a process that did not hold them)."""
        with self._lock:
            head, tail, _ = self._read_header()
            return sum(1 for _, _, _, state, _ in self._walk(head, tail) if state != State.SENT)

    def unsent(
        self, limit_bytes: int, limit_records: int, *, held_too: bool = False
    ) -> tuple[list[Record], int]:
        """For the exporting process: the records past the acknowledged position still to be
        sent, oldest first, within the limits, and the position to acknowledge once they are.

        Records the writer marked sent are passed over; one its thread is sending at once
        (held) stops the batch, unless ``held_too`` (the writer is gone). Reads no lock: a
        record the writer overwrote meanwhile (the tail passed it) is left out.
        """
        head, through, _ = self._read_header()
        start = through
        # One copy of what waits, read from there: the records' payloads are views of it.
        copy = memoryview(self._copy(start, head))
        found: list[Record] = []
        total = 0
        for position, length, kind, state, spans in self._walk(start + len(copy), start, copy):
            if state == State.HELD and not held_too:
                break
            if state != State.SENT:
                if found and (total + length > limit_bytes or len(found) == limit_records):
                    break
                at = position - start + _RECORD.size
                found.append(Record(position, kind, spans, copy[at : at + length]))
                total += length
            through = self._next(position, length)
        _, tail, _ = _HEADER.unpack_from(self._buffer, self._header_at)
        return [record for record in found if record.position >= tail], max(through, tail)

    def _copy(self, start: int, end: int) -> bytes:
        """The ring's bytes from position ``start`` to ``end``, across its end if need be."""
        first = self._at(start)
        if end - start <= self.ring_size - start % self.ring_size:
            return bytes(self._buffer[first : first + end - start])
        to_end = bytes(self._buffer[first : self._ring_at + self.ring_size])
        rest = end - start - len(to_end)
        return to_end + bytes(self._buffer[self._ring_at : self._ring_at + rest])

    def unsent_bytes(self) -> int:
        """Bytes of records past the acknowledged position (a cheap look, no walk)."""
        head, tail, _ = self._read_header()
        return head - tail

    def records(self) -> list[bytes]:
        """The payloads of the records not yet passed, sent or not, oldest first."""
        with self._lock:
            head, tail, _ = self._read_header()
            return [
                bytes(self._buffer[self._at(position) + _RECORD.size :][:length])
                for position, length, _, _, _ in self._walk(head, tail)
            ]

    def adopt(self) -> None:
        """A new worker takes the slot: records its dead predecessor held are pending again."""
        with self._lock:
            head, tail, _ = self._read_header()
            for position, _, _, state, _ in list(self._walk(head, tail)):
                if state == State.HELD:
                    self._buffer[self._at(position) + _STATE_AT] = State.PENDING

    def hold(self, records: list[Record]) -> None:
        """``records`` are being sent: no other pass of this process may send them too."""
        self._set_state(records, State.HELD)

    def release(self, records: list[Record]) -> None:
        """Sending held records failed: they are pending, for the next pass."""
        self._set_state(records, State.PENDING)

    def _set_state(self, records: list[Record], state: int) -> None:
        with self._lock:
            _, tail, _ = self._read_header()
            for record in records:
                if record.position >= tail:
                    self._buffer[self._at(record.position) + _STATE_AT] = state

    def mark_sent(self, records: list[Record]) -> None:
        """The collector took ``records``: mark them, and let the tail pass what is sent."""
        with self._lock:
            head, tail, dropped = self._read_header()
            for record in records:
                if record.position >= tail:
                    self._buffer[self._at(record.position) + _STATE_AT] = State.SENT
            while tail < head:
                length, _, state, _ = self._record_at(tail)
                if length != _WRAP and state != State.SENT:
                    break
                tail = self._next(tail, length)
            self._write_header(head, tail, dropped)

    def _walk(
        self, head: int, tail: int, copy: memoryview | None = None
    ) -> Iterator[tuple[int, int, int, int, int]]:
        """The records from ``tail`` to ``head``: of the ring, or of ``copy`` of it (which
        starts at ``tail`` and ends at ``head``)."""
        position = tail
        while position < head:
            length, kind, state, spans = self._record_at(position, copy, tail)
            if length != _WRAP:
                if length > self.ring_size:  # a torn header (a writer died mid-append): stop
                    return
                yield position, length, kind, state, spans
            position = self._next(position, length)
