"""The shared-memory board itself: its layout, slot assignment, and each region's round trip."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import pytest

from gunicorn_django_wide_events._board import (
    METHOD_BYTES,
    PATH_BYTES,
    QUERY_BYTES,
    ROUTE_BYTES,
    SQL_BYTES,
    VIEW_BYTES,
    Board,
    ServerSample,
    WorkerRequest,
)
from tests.unit.boards import (
    FLAGS_AT,
    HEADER_BYTES,
    MONITOR_BYTES,
    REQUEST_BYTES,
    SERVER_AT,
    SERVER_BYTES,
    SLOT_BYTES,
    as_request,
    monitor_at,
    put_request,
    request_at,
    request_payload,
    server_sample,
    slots_at,
    worker_sample,
)

pytestmark = pytest.mark.usefixtures("fresh_reports")


ZERO_REQUEST = WorkerRequest(
    0, 0.0, 0, 0.0, bytes(16), bytes(8), bytes(8), False, 0, "", "", "", "", "", 0, 0, ""
)


def slots_in_use(board: Board) -> list[int]:
    """The slots whose in_use flag is set, read from the layout in boards.py."""
    flags = board.buffer[FLAGS_AT : FLAGS_AT + board.capacity]
    return [slot for slot, flag in enumerate(flags) if flag]


def changed_span(board: Board, write: Callable[[], None]) -> tuple[int, int]:
    """The [first, last] byte offsets that ``write`` changed in the board's buffer."""
    before = bytes(board.buffer)
    write()
    after = bytes(board.buffer)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed, "the write changed nothing"
    return changed[0], changed[-1]


# -- layout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 2, 7, 32, 1000])
def test_size_is_header_flags_and_slots(capacity: int) -> None:
    """Board.size is header + server sample + two flag bytes per slot + one slot size per slot."""
    board = Board(capacity)
    assert board.size == HEADER_BYTES + SERVER_BYTES + 2 * capacity + capacity * SLOT_BYTES
    assert len(board.buffer) == board.size
    assert board.capacity == capacity


def test_header_holds_the_capacity() -> None:
    """The buffer starts with the capacity."""
    board = Board(5)
    assert struct.unpack_from("=I", board.buffer, 0) == (5,)


def test_every_region_reads_back_its_own_pattern() -> None:
    """Distinct patterns written into every slot's regions and the server read back unchanged."""
    capacity = 6
    board = Board(capacity)
    for slot in range(capacity):
        assert board.assign_slot() == slot
    board.write_server(server_sample(99))
    for slot in range(capacity):
        board.write_monitor(slot, worker_sample(slot))
        put_request(board, slot, **request_payload(slot))

    assert board.read_server() == server_sample(99)
    for slot in range(capacity):
        assert board.read_monitor(slot) == worker_sample(slot)
        assert board.read_request(slot) == as_request(request_payload(slot))
    assert board.count_in_use_and_busy() == (capacity, capacity)
    assert struct.unpack_from("=I", board.buffer, 0) == (capacity,)


def test_each_write_stays_inside_its_own_region() -> None:
    """The bytes each write changes lie in its own region, and the regions are disjoint."""
    capacity = 4
    board = Board(capacity)
    spans = {"server": changed_span(board, lambda: board.write_server(server_sample(1)))}
    assert SERVER_AT <= spans["server"][0] <= spans["server"][1] < SERVER_AT + SERVER_BYTES
    for slot in range(capacity):
        monitor = changed_span(board, lambda s=slot: board.write_monitor(s, worker_sample(s)))
        request = changed_span(
            board, lambda s=slot: put_request(board, s, **request_payload(s) | {"started_at": 0})
        )
        start = monitor_at(capacity, slot)
        assert start <= monitor[0] <= monitor[1] < start + MONITOR_BYTES
        start = request_at(capacity, slot)
        assert start <= request[0] <= request[1] < start + REQUEST_BYTES
        spans[f"monitor {slot}"], spans[f"request {slot}"] = monitor, request
    ordered = sorted(spans.values())
    for (_, end), (next_start, _) in itertools.pairwise(ordered):
        assert end < next_start
    assert ordered[-1][1] < board.size


def test_flags_live_between_server_and_slots() -> None:
    """in_use and busy are one byte per slot, right after the server sample, in that order."""
    capacity = 3
    board = Board(capacity)
    board.assign_slot()
    board.assign_slot()
    put_request(board, 1, pid=1, spawned_at=1.0, requests=1, started_at=2.0)
    flags = bytes(board.buffer[FLAGS_AT : FLAGS_AT + 2 * capacity])
    assert flags == bytes([1, 1, 0, 0, 1, 0])


@pytest.mark.parametrize("capacity", [0, -1, 65536, 100_000])
def test_capacity_out_of_bounds_raises(capacity: int) -> None:
    """A capacity outside 1..65535 raises ValueError."""
    with pytest.raises(ValueError, match="between 1 and 65535"):
        Board(capacity)


@pytest.mark.parametrize("capacity", [1, 65535])
def test_capacity_bounds_are_accepted(capacity: int) -> None:
    """Capacities 1 and 65535 (the bounds) make a board."""
    assert Board(capacity).capacity == capacity


@pytest.mark.parametrize("slot", [-1, 3, 4, 1000])
def test_slot_outside_the_board_raises_index_error(slot: int) -> None:
    """Reading or writing a slot outside 0..capacity-1 raises IndexError."""
    board = Board(3)
    with pytest.raises(IndexError, match="outside the board"):
        board.read_request(slot)
    with pytest.raises(IndexError, match="outside the board"):
        put_request(board, slot, pid=1, spawned_at=1.0, requests=1)
    with pytest.raises(IndexError, match="outside the board"):
        board.read_monitor(slot)
    with pytest.raises(IndexError, match="outside the board"):
        board.write_monitor(slot, worker_sample(1))


# Regression: an unchecked free_slot(capacity) zeroed busy[0] and the low byte of slot 0's
# monitor counter; free_slot(-1) cleared in_use[capacity-1] and the last server-sample byte.
@pytest.mark.parametrize("slot", [-1, 3])
def test_free_slot_outside_the_board_raises_and_changes_nothing(slot: int) -> None:
    """free_slot of a slot outside the board raises IndexError and leaves every byte alone."""
    board = Board(3)
    for _ in range(3):
        board.assign_slot()
    for slot_ in range(3):
        put_request(board, slot_, pid=1, spawned_at=1.0, requests=1, started_at=2.0)
        board.write_monitor(slot_, worker_sample(slot_))
    before = bytes(board.buffer)
    raised = False
    try:
        board.free_slot(slot)
    except IndexError:
        raised = True
    changed = [
        i for i, (a, b) in enumerate(zip(before, bytes(board.buffer), strict=True)) if a != b
    ]
    assert raised, (
        f"free_slot({slot}) did not raise IndexError; it changed the bytes at {changed} "
        f"(in_use at {FLAGS_AT}.., busy at {FLAGS_AT + 3}.., slot 0 at {slots_at(3)})"
    )
    assert changed == []


# -- slots -------------------------------------------------------------------------------------


def test_assign_takes_the_lowest_free_slot_until_full() -> None:
    """assign_slot returns 0, 1, 2, ... then None once every slot is taken."""
    board = Board(3)
    assert [board.assign_slot() for _ in range(3)] == [0, 1, 2]
    assert board.assign_slot() is None
    assert board.count_in_use_and_busy()[0] == 3


def test_freed_slot_is_assigned_again_lowest_first() -> None:
    """free_slot makes a slot available again, and the lowest free one is taken first."""
    board = Board(4)
    for _ in range(4):
        board.assign_slot()
    board.free_slot(2)
    board.free_slot(1)
    assert slots_in_use(board) == [0, 3]
    assert board.count_in_use_and_busy()[0] == 2
    assert board.assign_slot() == 1
    assert board.assign_slot() == 2
    assert board.assign_slot() is None


def test_reassigned_slot_comes_back_zeroed() -> None:
    """A reassigned slot has no stale request, no stale monitor sample, and busy 0."""
    board = Board(2)
    board.assign_slot()
    slot = board.assign_slot()
    assert slot == 1
    board.write_monitor(slot, worker_sample(5))
    put_request(board, slot, **request_payload(5))
    board.free_slot(slot)
    # A dying worker's late write after the master freed its slot: busy set again.
    put_request(board, slot, **request_payload(6))
    assert board.count_in_use_and_busy()[1] == 1

    assert board.assign_slot() == slot
    assert board.read_request(slot) == ZERO_REQUEST
    assert board.read_monitor(slot) is None
    assert board.count_in_use_and_busy()[1] == 0
    assert board.read_request(0) == ZERO_REQUEST  # the neighbour was not touched either


def test_free_slot_clears_busy() -> None:
    """Freeing a slot whose worker died mid-request clears its busy flag."""
    board = Board(2)
    slot = board.assign_slot()
    assert slot is not None
    put_request(board, slot, pid=1, spawned_at=1.0, requests=1, started_at=5.0)
    assert board.count_in_use_and_busy()[1] == 1
    board.free_slot(slot)
    assert board.count_in_use_and_busy() == (0, 0)
    assert slots_in_use(board) == []


def test_counts_follow_assign_free_and_busy() -> None:
    """count_in_use_and_busy and the in_use flags follow every slot."""
    board = Board(8)
    assert (board.count_in_use_and_busy(), slots_in_use(board)) == ((0, 0), [])
    for _ in range(5):
        board.assign_slot()
    for slot in (1, 3, 4):
        put_request(board, slot, pid=slot, spawned_at=1.0, requests=1, started_at=2.0)
    board.free_slot(0)
    assert slots_in_use(board) == [1, 2, 3, 4]
    assert board.count_in_use_and_busy() == (4, 3)


# -- request, monitor and server round trips ---------------------------------------------------


def test_request_round_trip() -> None:
    """read_request returns exactly what write_request wrote."""
    board = Board(2)
    put_request(
        board,
        1,
        pid=4242,
        spawned_at=1234.5,
        requests=17,
        started_at=1300.25,
        trace_id=bytes(range(16)),
        span_id=bytes(range(100, 108)),
        parent_span_id=bytes(range(200, 208)),
        event_out=True,
        state=2,
        method="PATCH",
        path="/api/items/42/",
        query="page=2",
        route="api/items/<int:pk>/",
        view="shop.views.item",
        db_query_count=3,
        db_duration_ns=4_500_000,
        sql='SELECT "x" FROM "t" WHERE "id" = %s',
    )
    assert board.read_request(1) == WorkerRequest(
        pid=4242,
        spawned_at=1234.5,
        requests=17,
        started_at=1300.25,
        trace_id=bytes(range(16)),
        span_id=bytes(range(100, 108)),
        parent_span_id=bytes(range(200, 208)),
        event_out=True,
        state=2,
        method="PATCH",
        path="/api/items/42/",
        query="page=2",
        route="api/items/<int:pk>/",
        view="shop.views.item",
        db_query_count=3,
        db_duration_ns=4_500_000,
        sql='SELECT "x" FROM "t" WHERE "id" = %s',
    )


def test_long_text_is_truncated_to_its_field() -> None:
    """Text longer than its field comes back cut to the field (the statement keeps its 0 end)."""
    board = Board(1)
    put_request(
        board,
        0,
        pid=1,
        spawned_at=1.0,
        requests=1,
        method="M" * (METHOD_BYTES + 5),
        path="/" + "p" * (PATH_BYTES + 100),
        query="q" * (QUERY_BYTES + 9),
        route="r" * (ROUTE_BYTES + 9),
        view="v" * (VIEW_BYTES + 9),
        sql="S" * (SQL_BYTES * 3),
    )
    request = board.read_request(0)
    assert request.method == "M" * METHOD_BYTES
    assert request.path == "/" + "p" * (PATH_BYTES - 1)
    assert request.query == "q" * QUERY_BYTES
    assert request.route == "r" * ROUTE_BYTES
    assert request.view == "v" * VIEW_BYTES
    assert request.sql == "S" * (SQL_BYTES - 1)


def test_sql_in_flight_is_written_in_place_outside_the_seqlock() -> None:
    """write_sql replaces the statement (a shorter one too), "" clears it; the counter stays."""
    board = Board(2)
    put_request(board, 1, pid=7, spawned_at=1.0, requests=3, started_at=2.0, path="/a/")
    (seq,) = struct.unpack_from("=I", board.buffer, request_at(2, 1))
    board.entry_writer(1, 0).sql_started("SELECT a_long_column_name FROM t")
    assert board.read_request(1).sql == "SELECT a_long_column_name FROM t"
    board.entry_writer(1, 0).sql_started("SELECT 1")
    assert board.read_request(1).sql == "SELECT 1"
    board.entry_writer(1, 0).sql_started("")
    request = board.read_request(1)
    assert (request.sql, request.path, request.requests) == ("", "/a/", 3)
    assert struct.unpack_from("=I", board.buffer, request_at(2, 1)) == (seq,)
    assert board.read_request(0) == ZERO_REQUEST


def test_sql_in_flight_is_cut_to_its_field() -> None:
    """A statement longer than SQL_BYTES keeps its start; the rest of the slot is untouched."""
    board = Board(2)
    board.entry_writer(0, 0).sql_started("S" * (SQL_BYTES * 3))
    assert board.read_request(0).sql == "S" * (SQL_BYTES - 1)
    assert board.read_request(1) == ZERO_REQUEST


def test_utf8_cut_mid_character_decodes_with_a_replacement() -> None:
    """Multi-byte UTF-8 cut mid-character reads back without error, the cut char replaced."""
    board = Board(1)
    path = "/" + "é" * PATH_BYTES  # 1 + 2*127 bytes fit, then half an "é"
    sql = "€" * SQL_BYTES  # 341 * 3 bytes fill the field before its zero end: nothing cut
    method = "Ä" * METHOD_BYTES  # 8 * 2 bytes fit exactly: nothing to replace
    put_request(board, 0, pid=1, spawned_at=1.0, requests=1, method=method, path=path, sql=sql)
    request = board.read_request(0)
    assert request.path == "/" + "é" * 127 + "\ufffd"
    assert request.sql == "€" * 341
    assert request.method == "Ä" * 8


def test_busy_flag_follows_started_at() -> None:
    """A request with started_at set marks the slot busy; started_at 0 marks it idle."""
    board = Board(3)
    put_request(board, 2, pid=1, spawned_at=1.0, requests=1, started_at=10.0)
    assert board.count_in_use_and_busy()[1] == 1
    put_request(board, 0, pid=2, spawned_at=1.0, requests=1, started_at=11.0)
    assert board.count_in_use_and_busy()[1] == 2
    put_request(board, 2, pid=1, spawned_at=1.0, requests=1)
    assert board.count_in_use_and_busy()[1] == 1
    assert board.read_request(2).started_at == 0.0


def test_monitor_round_trip() -> None:
    """read_monitor returns exactly what write_monitor wrote, latest write wins."""
    board = Board(3)
    board.write_monitor(1, worker_sample(1))
    assert board.read_monitor(1) == worker_sample(1)
    board.write_monitor(1, worker_sample(2))
    assert board.read_monitor(1) == worker_sample(2)


def test_server_round_trip() -> None:
    """read_server returns exactly what write_server wrote, negative backlog included."""
    board = Board(1)
    sample = server_sample(3)
    board.write_server(sample)
    assert board.read_server() == sample
    unknown_backlog = ServerSample(5.0, 0.0, -1, 0, 0.0, 0)
    board.write_server(unknown_backlog)
    assert board.read_server() == unknown_backlog


def test_reads_before_first_write() -> None:
    """read_server and read_monitor return None before the first write; read_request is zeroed."""
    board = Board(2)
    assert board.read_server() is None
    assert board.read_monitor(0) is None
    assert board.read_monitor(1) is None
    assert board.read_request(1) == ZERO_REQUEST
