"""The spool: a slot's encoded spans in shared memory until the collector took them."""

from __future__ import annotations

import pytest

from gunicorn_django_wide_events._spool import HEADER_SIZE, Kind, Spool

RING = 4096


def spool() -> Spool:
    return Spool(bytearray(HEADER_SIZE + RING), 0, HEADER_SIZE + RING)


def payload(n: int, size: int = 100) -> bytes:
    return bytes([n % 251 + 1]) * size


def test_too_small_a_spool_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        Spool(bytearray(100), 0, 100)


def test_records_come_back_in_order_until_sent() -> None:
    s = spool()
    for n in range(3):
        assert s.append(payload(n), 1) is not None
    records = s.pending(1 << 20)
    assert [r.payload for r in records] == [payload(n) for n in range(3)]
    s.mark_sent(records[:2])
    assert [r.payload for r in s.pending(1 << 20)] == [payload(2)]
    assert s.pending_count() == 1


def test_pending_stops_at_the_byte_limit_but_returns_at_least_one() -> None:
    s = spool()
    for n in range(5):
        s.append(payload(n, 300), 1)
    assert len(s.pending(650)) == 2
    assert len(s.pending(10)) == 1


def test_a_full_ring_drops_the_oldest_plain_records_and_counts_them() -> None:
    s = spool()
    precious = s.append(payload(0, 1000), 1, Kind.PRECIOUS)
    assert precious is not None
    for n in range(1, 20):
        s.append(payload(n, 1000), 1)
    kept = s.pending(1 << 20)
    assert [r.kind for r in kept].count(Kind.PRECIOUS) == 1  # never dropped for room
    assert [r.payload for r in kept if r.kind == Kind.PLAIN] == [
        payload(n, 1000) for n in (17, 18, 19)
    ]  # four records fit: the precious one moved to the newest end, the oldest plain ones went
    assert s.take_dropped() == 16
    assert s.has_dropped  # for the one log line
    assert s.take_dropped() == 0  # reported once


def test_the_ring_wraps_and_stays_readable() -> None:
    s = spool()
    seen = []
    for n in range(200):
        s.append(payload(n, 296), 1)
        records = s.pending(1 << 20)
        seen += [r.payload for r in records]
        s.mark_sent(records)
    assert seen == [payload(n, 296) for n in range(200)]
    assert s.pending_count() == 0


def test_held_records_are_skipped_released_or_adopted() -> None:
    s = spool()
    s.append(payload(1), 1)
    s.append(payload(2), 1, Kind.PRECIOUS, held=True)
    (first,) = s.pending(1 << 20)
    assert first.payload == payload(1)
    assert s.pending_count() == 2  # a held record is not sent yet
    assert len(s.pending(1 << 20, held_too=True)) == 2
    s.hold([first])
    assert s.pending(1 << 20) == []
    s.release([first])
    assert [r.payload for r in s.pending(1 << 20)] == [payload(1)]
    s.adopt()  # a new process: what the dead one held is pending again
    assert [r.payload for r in s.pending(1 << 20)] == [payload(1), payload(2)]


def test_records_lists_what_is_not_passed_yet_sent_or_not() -> None:
    s = spool()
    for n in range(3):
        s.append(payload(n), 1)
    s.mark_sent(s.pending(1 << 20)[1:2])  # sent, but the tail cannot pass the first yet
    assert s.records() == [payload(0), payload(1), payload(2)]
    s.mark_sent(s.pending(1 << 20))
    assert s.records() == []


def test_an_append_that_wraps_after_the_fast_path_stays_readable() -> None:
    s = spool()
    sizes = [1000, 1000, 1000, 900, 1000]  # the fifth does not fit before the ring's end
    for n, size in enumerate(sizes[:4]):
        s.append(payload(n, size), 1)
    s.mark_sent(s.pending(1 << 20)[:2])
    s.append(payload(4, sizes[4]), 1)
    assert [r.payload for r in s.pending(1 << 20)] == [
        payload(n, size) for n, size in enumerate(sizes) if n >= 2
    ]


def test_a_record_larger_than_the_ring_is_dropped_and_counted() -> None:
    s = spool()
    assert s.append(payload(1, RING * 2), 3) is None
    assert s.take_dropped() == 3


def test_a_record_being_sent_is_not_moved_and_the_new_one_gives_way() -> None:
    s = spool()
    s.append(payload(0, 1000), 1, Kind.PRECIOUS, held=True)
    for n in range(1, 6):
        s.append(payload(n, 1000), 1)
    assert s.pending_count() == 4  # held, 1, 2, 3: no room for 4 and 5
    assert s.take_dropped() == 2
