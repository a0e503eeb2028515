"""The shared-memory board: layout, slots, seqlock, a worker's slot, and the monitor sampling it."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, set_span_in_context
from opentelemetry.util.types import AttributeValue

from gunicorn_django_wide_events import _attributes as attr
from gunicorn_django_wide_events._board import (
    METHOD_BYTES,
    PATH_BYTES,
    QUERY_BYTES,
    ROUTE_BYTES,
    SQL_BYTES,
    VIEW_BYTES,
    Board,
    RequestState,
    ServerSample,
    TornRead,
    WorkerRequest,
    WorkerSample,
)
from gunicorn_django_wide_events._guard import forget_reports
from gunicorn_django_wide_events._master.monitor import Monitor, listen_backlog
from gunicorn_django_wide_events._worker.slot import WorkerSlot

# The layout as board.py documents it, spelled out independently so that a change to the
# binary layout shows up here. All native byte order, no padding ("="). Each seqlock region is
# its 4-byte counter ("I") followed by its payload.
HEADER_BYTES = struct.calcsize("=II")  # capacity, entries per slot
SERVER_BYTES = struct.calcsize("=I" + "ddqqdq")  # counter + server sample
MONITOR_BYTES = struct.calcsize("=I" + "ddqii")  # counter + worker sample
WORKER_BYTES = struct.calcsize("=I" + "id")  # counter + pid, spawned_at
# counter + requests, started_at, trace_id, span_id, parent_span_id, event_out, state, method,
# path, query, route, view, db query count and time; then the statement in flight
ENTRY_BYTES = struct.calcsize(
    "=I"
    + f"Qd16s8s8sBB{METHOD_BYTES}s{PATH_BYTES}s{QUERY_BYTES}s{ROUTE_BYTES}s{VIEW_BYTES}sIQ"
    + f"{SQL_BYTES}s"
)
# What one request writes with put_request (below): the worker region, then its one entry.
REQUEST_BYTES = WORKER_BYTES + ENTRY_BYTES
SLOT_BYTES = MONITOR_BYTES + REQUEST_BYTES  # one entry per slot, Board's default
SERVER_AT = HEADER_BYTES
FLAGS_AT = SERVER_AT + SERVER_BYTES  # in_use[capacity], then busy[capacity]

ZERO_REQUEST = WorkerRequest(
    0, 0.0, 0, 0.0, bytes(16), bytes(8), bytes(8), False, 0, "", "", "", "", "", 0, 0, ""
)

BASE_WORKER_ATTRIBUTES = {
    attr.GUNICORN_WORKER_ID,
    attr.GUNICORN_WORKER_ACTIVE_REQUESTS,
    attr.GUNICORN_WORKER_AGE,
    attr.GUNICORN_WORKER_REQUESTS,
    attr.GUNICORN_WORKERS_TOTAL,
    attr.GUNICORN_WORKERS_BUSY,
    attr.GUNICORN_WORKERS_IDLE,
    attr.GUNICORN_WORKERS_UTILIZATION,
}


# -- helpers -----------------------------------------------------------------------------------


def slots_in_use(board: Board) -> list[int]:
    """The slots whose in_use flag is set, read from the layout above."""
    flags = board.buffer[FLAGS_AT : FLAGS_AT + board.capacity]
    return [slot for slot, flag in enumerate(flags) if flag]


def slots_at(capacity: int) -> int:
    return FLAGS_AT + 2 * capacity


def monitor_at(capacity: int, slot: int) -> int:
    return slots_at(capacity) + slot * SLOT_BYTES


def request_at(capacity: int, slot: int) -> int:
    return monitor_at(capacity, slot) + MONITOR_BYTES


def entry_at(capacity: int, slot: int) -> int:
    """The slot's (first and only) request entry, after its worker region."""
    return request_at(capacity, slot) + WORKER_BYTES


def server_sample(n: int) -> ServerSample:
    """A server sample whose every field is nonzero and derived from ``n``."""
    return ServerSample(
        sampled_at=1_700_000_000.0 + n,
        load1=n + 0.125,
        backlog=n + 7,
        master_rss=(n + 1) * 1_000_003,
        workers_cpu_percent=n + 2.5,
        workers_rss=(n + 1) * 2_000_003,
    )


def worker_sample(n: int) -> WorkerSample:
    """A worker sample whose every field is nonzero and derived from ``n``."""
    return WorkerSample(
        sampled_at=1_700_000_000.0 + n,
        cpu_percent=n + 0.75,
        rss=(n + 1) * 3_000_017,
        threads=n + 2,
        fds=n + 9,
    )


def request_payload(n: int) -> dict[str, Any]:
    """write_request keyword arguments filling every field, strings at full length."""
    letter = chr(ord("a") + n % 26)
    return {
        "pid": 10_000 + n,
        "spawned_at": 1_600_000_000.0 + n,
        "requests": 1_000 + n,
        "started_at": 1_700_000_000.0 + n,
        "trace_id": bytes([n % 255 + 1]) * 16,
        "span_id": bytes([(n + 7) % 255 + 1]) * 8,
        "parent_span_id": bytes([(n + 13) % 255 + 1]) * 8,
        "event_out": True,
        "state": n % 3 + 1,
        "method": letter.upper() * METHOD_BYTES,
        "path": "/" + letter * (PATH_BYTES - 1),
        "query": "q=" + letter * (QUERY_BYTES - 2),
        "route": letter * ROUTE_BYTES,
        "view": "v." + letter * (VIEW_BYTES - 2),
        "db_query_count": 3 + n,
        "db_duration_ns": 1_000_003 * (n + 1),
        # The statement region ends with its terminating zero byte.
        "sql": letter.upper() * (SQL_BYTES - 1),
    }


def as_request(payload: dict[str, Any]) -> WorkerRequest:
    """What read_request returns after write_request(**payload) (fields that fit as given)."""
    return WorkerRequest(
        payload["pid"],
        payload["spawned_at"],
        payload["requests"],
        payload["started_at"],
        payload["trace_id"],
        payload["span_id"],
        payload["parent_span_id"],
        payload["event_out"],
        payload.get("state", 0),
        payload["method"],
        payload["path"],
        payload.get("query", ""),
        payload.get("route", ""),
        payload.get("view", ""),
        payload.get("db_query_count", 0),
        payload.get("db_duration_ns", 0),
        payload["sql"],
    )


def put_request(
    board: Board, slot: int, *, pid: int = 0, spawned_at: float = 0.0, **fields: Any
) -> None:
    """The worker region and the slot's one request entry, every field as given."""
    board.write_worker(slot, pid, spawned_at)
    board.write_request(slot, **fields)


def changed_span(board: Board, write: Callable[[], None]) -> tuple[int, int]:
    """The [first, last] byte offsets that ``write`` changed in the board's buffer."""
    before = bytes(board.buffer)
    write()
    after = bytes(board.buffer)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed, "the write changed nothing"
    return changed[0], changed[-1]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture(autouse=True)
def fresh_reports() -> Iterator[None]:
    """Guards log their first failure per site; each test starts with none reported."""
    forget_reports()
    yield
    forget_reports()


@pytest.fixture
def span() -> Iterator[Span]:
    """A real SDK SERVER span from a local TracerProvider (not installed globally)."""
    provider = TracerProvider()
    span = provider.get_tracer("test_board").start_span("GET", kind=SpanKind.SERVER)
    yield span
    span.end()
    provider.shutdown()


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


# -- seqlock -----------------------------------------------------------------------------------


def region_offsets(capacity: int, slot: int) -> dict[str, int]:
    return {
        "server": SERVER_AT,
        "monitor": monitor_at(capacity, slot),
        "request": request_at(capacity, slot),
    }


def reader(board: Board, region: str, slot: int) -> Callable[[], object]:
    return {
        "server": board.read_server,
        "monitor": lambda: board.read_monitor(slot),
        "request": lambda: board.read_request(slot),
    }[region]


def writer(board: Board, region: str, slot: int, n: int) -> Callable[[], None]:
    return {
        "server": lambda: board.write_server(server_sample(n)),
        "monitor": lambda: board.write_monitor(slot, worker_sample(n)),
        "request": lambda: put_request(board, slot, **request_payload(n)),
    }[region]


@pytest.mark.parametrize("region", ["server", "monitor", "request"])
def test_odd_counter_is_a_torn_read(region: str) -> None:
    """A region left with an odd counter (its writer died mid-write) raises TornRead."""
    capacity, slot = 3, 1
    board = Board(capacity)
    writer(board, region, slot, 1)()
    offset = region_offsets(capacity, slot)[region]
    (seq,) = struct.unpack_from("=I", board.buffer, offset)
    assert seq % 2 == 0
    struct.pack_into("=I", board.buffer, offset, seq + 1)
    with pytest.raises(TornRead):
        reader(board, region, slot)()


@pytest.mark.parametrize("region", ["server", "monitor", "request"])
@pytest.mark.parametrize("stuck_seq", [1, 7, 0xFFFFFFFF])
def test_complete_write_after_a_dead_writer_reads_fine(region: str, stuck_seq: int) -> None:
    """A complete write over a region left odd makes its counter even and readable again."""
    capacity, slot = 3, 2
    board = Board(capacity)
    offset = region_offsets(capacity, slot)[region]
    struct.pack_into("=I", board.buffer, offset, stuck_seq)
    with pytest.raises(TornRead):
        reader(board, region, slot)()

    writer(board, region, slot, 4)()
    (seq,) = struct.unpack_from("=I", board.buffer, offset)
    assert seq % 2 == 0
    assert seq != stuck_seq
    expected = {
        "server": server_sample(4),
        "monitor": worker_sample(4),
        "request": as_request(request_payload(4)),
    }[region]
    assert reader(board, region, slot)() == expected


def test_counter_wraps_around_and_stays_even() -> None:
    """A write over the largest even counter wraps it to 0: even, and the read is fine."""
    board = Board(1)
    struct.pack_into("=I", board.buffer, SERVER_AT, 0xFFFFFFFE)
    board.write_server(server_sample(2))
    assert struct.unpack_from("=I", board.buffer, SERVER_AT) == (0,)
    assert board.read_server() == server_sample(2)


def test_each_write_advances_the_counter_by_two() -> None:
    """Every complete write leaves the region's counter even and two higher."""
    board = Board(2)
    offset = request_at(2, 1)
    for expected in (2, 4, 6):
        put_request(board, 1, pid=1, spawned_at=1.0, requests=expected)
        assert struct.unpack_from("=I", board.buffer, offset) == (expected,)


def only_thread_in_process() -> bool:
    task_dir = Path("/proc/self/task")
    os_threads = len(list(task_dir.iterdir())) if task_dir.is_dir() else 1
    return threading.active_count() == 1 and os_threads == 1


RACE_SECONDS = 0.5
RACE_PAYLOADS = (
    {
        "requests": 10,
        "started_at": 100.25,
        "trace_id": b"\x11" * 16,
        "span_id": b"\x12" * 8,
        "parent_span_id": b"\x13" * 8,
        "event_out": True,
        "method": "GET",
        "path": "/" + "a" * (PATH_BYTES - 1),
        "sql": "A" * (SQL_BYTES - 1),
    },
    {
        "requests": 20,
        "started_at": 200.5,
        "trace_id": b"\x21" * 16,
        "span_id": b"\x22" * 8,
        "parent_span_id": b"\x23" * 8,
        "event_out": False,
        "method": "DELETE",
        "path": "/" + "b" * (PATH_BYTES - 1),
        "sql": "B" * (SQL_BYTES - 1),
    },
)


def summary(request: WorkerRequest) -> str:
    """A mixed read in one line: its numbers and the ends of its longest fields."""
    return (
        f"pid={request.pid} requests={request.requests} started_at={request.started_at} "
        f"trace_id={request.trace_id.hex()} method={request.method!r} "
        f"path={request.path[:4]!r}..{request.path[-4:]!r} "
        f"sql={request.sql[:4]!r}..{request.sql[-4:]!r}"
    )


def run_writer_child(board: Board, slot: int, ready_w: int, done_w: int) -> None:
    """In the forked child: alternate the two payloads for RACE_SECONDS, report the count."""
    status = 1
    try:
        board.write_request(slot, **RACE_PAYLOADS[0])
        os.write(ready_w, b"r")
        writes, deadline = 1, time.monotonic() + RACE_SECONDS + 0.2
        while time.monotonic() < deadline:
            for payload in RACE_PAYLOADS:
                board.write_request(slot, **payload)
            writes += 2
        os.write(done_w, str(writes).encode())
        status = 0
    finally:
        os._exit(status)


# Regression: struct.pack_into zero-fills what it packs before writing the fields; with the
# counter inside the packed struct it read 0 (even) mid-write, and readers accepted mixes.
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_reader_racing_a_writer_in_another_process_never_sees_a_mix() -> None:
    """Reads racing a forked writer return one of its two payloads whole, or TornRead."""
    if not only_thread_in_process():
        # Forking a process with threads copies them (and Python 3.12+ warns): run this test
        # alone in a fresh, single-threaded pytest process instead.
        test_id = f"{__file__}::test_reader_racing_a_writer_in_another_process_never_sees_a_mix"
        result = subprocess.run(
            [sys.executable, "-m", "pytest", test_id, "-q", "-p", "no:cacheprovider"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 passed" in result.stdout
        return
    board = Board(4)
    slot = 2
    # The entry is the unit a reader gets whole; the worker region (pid) is written apart.
    expected = [as_request({"pid": 0, "spawned_at": 0.0, **payload}) for payload in RACE_PAYLOADS]
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        run_writer_child(board, slot, ready_w, done_w)
    os.close(ready_w)
    os.close(done_w)
    seen = [0, 0]
    torn = reads = 0
    mixed: list[WorkerRequest] = []
    try:
        assert os.read(ready_r, 1) == b"r"
        deadline = time.monotonic() + RACE_SECONDS
        while time.monotonic() < deadline:
            for _ in range(100):
                reads += 1
                try:
                    request = board.read_request(slot)
                except TornRead:
                    torn += 1
                    continue
                if request in expected:
                    seen[expected.index(request)] += 1
                else:
                    mixed.append(request)
        writes = int(os.read(done_r, 32) or b"0")
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(done_r)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not mixed, (
        f"{len(mixed)} of {reads} reads returned neither payload but a mix, "
        f"e.g. {summary(max(mixed, key=lambda request: len(request.sql.strip(chr(0)))))}"
    )
    assert reads > 1000
    assert writes > 1000
    # A writer that never pauses tears many reads (each gives up after its retries): what counts
    # is that readers still get each payload whole, often.
    assert min(seen) > 100, f"whole reads of each payload: {seen}, {torn} torn of {reads}"
    assert all(seen), f"both payloads should be read while the writer alternates: {seen}"


# -- WorkerSlot --------------------------------------------------------------------------------


def test_new_worker_slot_writes_an_idle_request() -> None:
    """WorkerSlot(board, slot) records its pid and spawn time, no request, not busy."""
    board = Board(4)
    slot = board.assign_slot()
    assert slot is not None
    before = time.time()
    worker = WorkerSlot(board, slot)
    request = board.read_request(slot)
    assert request.pid == os.getpid()
    assert before <= request.spawned_at == worker.spawned_at <= time.time()
    assert (request.requests, request.started_at, request.path) == (0, 0.0, "")
    assert board.count_in_use_and_busy()[1] == 0


def test_request_started_writes_ids_and_marks_busy(span: Span) -> None:
    """request_started writes trace and span ids as bytes, method, path, start time, busy."""
    board = Board(4)
    board.assign_slot()
    slot = board.assign_slot()
    assert slot == 1
    worker = WorkerSlot(board, slot)
    before = time.time()
    worker.request_started(span, "POST", "/orders/7/")
    context = span.get_span_context()
    request = board.read_request(slot)
    assert request.trace_id == context.trace_id.to_bytes(16, "big")
    assert request.span_id == context.span_id.to_bytes(8, "big")
    assert request.trace_id != bytes(16)
    assert (request.method, request.path, request.requests) == ("POST", "/orders/7/", 1)
    assert before <= request.started_at <= time.time()
    assert request.pid == os.getpid()
    assert board.count_in_use_and_busy()[1] == 1


def test_request_started_writes_the_parent_span_id() -> None:
    """A span with a parent puts the parent's span id on the board; a root span puts zeros."""
    provider = TracerProvider()
    tracer = provider.get_tracer("test_board")
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    parent = tracer.start_span("proxy")
    child = tracer.start_span("GET", context=set_span_in_context(parent), kind=SpanKind.SERVER)
    try:
        entry = worker.request_started(child, "GET", "/")
        request = board.read_request(0)
        assert request.parent_span_id == parent.get_span_context().span_id.to_bytes(8, "big")
        assert request.trace_id == parent.get_span_context().trace_id.to_bytes(16, "big")
        entry.finished()
        worker.request_started(parent, "GET", "/")
        assert board.read_request(0).parent_span_id == bytes(8)
    finally:
        child.end()
        parent.end()
        provider.shutdown()


def test_event_out_marks_only_that_flag(span: Span) -> None:
    """WorkerSlot.event_out sets event_out on the board; the rest of the request is unchanged."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    entry = worker.request_started(span, "GET", "/slow/")
    before = board.read_request(0)
    (seq,) = struct.unpack_from("=I", board.buffer, entry_at(2, 0))
    assert before.event_out is False
    entry.event_out()
    after = board.read_request(0)
    assert after.event_out is True
    assert after.state == RequestState.ABORTING
    assert replace(after, event_out=False, state=before.state) == before
    assert struct.unpack_from("=I", board.buffer, entry_at(2, 0)) == (seq + 2,)
    assert board.count_in_use_and_busy()[1] == 1
    entry.finished()
    assert board.read_request(0).event_out is False


def test_add_attributes_without_monitor_data(span: Span) -> None:
    """add_attributes gives the worker and sibling counts; no monitor data, no monitor fields."""
    board = Board(8)
    slots = [board.assign_slot() for _ in range(4)]
    put_request(board, 0, pid=1, spawned_at=1.0, requests=3, started_at=5.0)  # a busy sibling
    worker = WorkerSlot(board, 2)
    worker.request_started(span, "GET", "/")
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert slots == [0, 1, 2, 3]
    assert set(attributes) == BASE_WORKER_ATTRIBUTES
    assert attributes[attr.GUNICORN_WORKER_ID] == 2
    assert attributes[attr.GUNICORN_WORKER_REQUESTS] == 1
    assert 0 <= attributes[attr.GUNICORN_WORKER_AGE] < 5  # type: ignore[operator]
    assert attributes[attr.GUNICORN_WORKERS_TOTAL] == 4
    assert attributes[attr.GUNICORN_WORKERS_BUSY] == 2
    assert attributes[attr.GUNICORN_WORKERS_IDLE] == 2
    assert attributes[attr.GUNICORN_WORKERS_UTILIZATION] == 0.5


def test_add_attributes_with_monitor_and_server_samples(span: Span) -> None:
    """Once the monitor wrote its samples, add_attributes adds the worker and server data."""
    board = Board(4)
    for _ in range(3):
        board.assign_slot()
    worker = WorkerSlot(board, 1)
    worker.request_started(span, "GET", "/")
    own = worker_sample(4)
    board.write_monitor(1, own)
    board.write_monitor(0, worker_sample(9))  # a sibling's sample must not be picked up
    sampled_at = time.time() - 0.25
    server = ServerSample(sampled_at, 1.25, 3, 50_000_000, 7.5, 300_000_000)
    board.write_server(server)
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)

    assert attributes[attr.GUNICORN_WORKER_CPU_PERCENT] == own.cpu_percent
    assert attributes[attr.GUNICORN_WORKER_MEMORY_RSS] == own.rss
    assert attributes[attr.GUNICORN_WORKER_THREADS] == own.threads
    assert attributes[attr.GUNICORN_WORKER_OPEN_FDS] == own.fds
    assert attributes[attr.GUNICORN_WORKERS_CPU_PERCENT] == 7.5
    assert attributes[attr.GUNICORN_WORKERS_MEMORY_RSS] == 300_000_000
    assert attributes[attr.GUNICORN_MASTER_MEMORY_RSS] == 50_000_000
    assert attributes[attr.GUNICORN_HOST_LOAD_1M] == 1.25
    assert attributes[attr.GUNICORN_LISTEN_BACKLOG] == 3
    assert 250 <= attributes[attr.GUNICORN_MONITOR_SAMPLE_AGE_MS] < 5_000  # type: ignore[operator]
    assert attributes[attr.GUNICORN_WORKERS_TOTAL] == 3
    assert attributes[attr.GUNICORN_WORKERS_BUSY] == 1


def test_add_attributes_leaves_out_an_unknown_backlog(span: Span) -> None:
    """A server sample with backlog -1 (unknown) adds no gunicorn.listen.backlog."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    board.write_server(ServerSample(time.time(), 0.5, -1, 1, 1.0, 1))
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert attr.GUNICORN_HOST_LOAD_1M in attributes
    assert attr.GUNICORN_LISTEN_BACKLOG not in attributes


def test_add_attributes_on_a_torn_read_keeps_the_counts() -> None:
    """A torn server sample leaves out the monitor data; the counts are still there."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    board.write_monitor(0, worker_sample(1))
    board.write_server(server_sample(1))
    struct.pack_into("=I", board.buffer, SERVER_AT, 3)  # the master died mid-write
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert set(attributes) == BASE_WORKER_ATTRIBUTES


def test_add_attributes_follows_each_new_sample(span: Span) -> None:
    """Samples are read again after every monitor write, and only the newest is used."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    seen = []
    for n in (1, 2, 2, 3):
        if n != (seen[-1] if seen else None):
            board.write_monitor(0, worker_sample(n))
            board.write_server(server_sample(n))
        attributes: dict[str, AttributeValue] = {}
        worker.add_attributes(attributes)
        assert attributes[attr.GUNICORN_WORKER_MEMORY_RSS] == worker_sample(n).rss
        assert attributes[attr.GUNICORN_MASTER_MEMORY_RSS] == server_sample(n).master_rss
        seen.append(n)


def test_add_attributes_never_pairs_a_worker_sample_with_an_older_server_sample() -> None:
    """Mid-pass (this worker's sample written, the server's not yet) the last whole pass is
    kept; once the pass is done, both samples of it come together."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    board.write_monitor(0, worker_sample(1))
    board.write_server(server_sample(1))
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert attributes[attr.GUNICORN_WORKER_MEMORY_RSS] == worker_sample(1).rss

    board.write_monitor(0, worker_sample(2))
    worker.add_attributes(attributes)
    assert attributes[attr.GUNICORN_WORKER_MEMORY_RSS] == worker_sample(1).rss
    assert attributes[attr.GUNICORN_WORKERS_MEMORY_RSS] == server_sample(1).workers_rss

    board.write_server(server_sample(2))
    worker.add_attributes(attributes)
    assert attributes[attr.GUNICORN_WORKER_MEMORY_RSS] == worker_sample(2).rss
    assert attributes[attr.GUNICORN_WORKERS_MEMORY_RSS] == server_sample(2).workers_rss


def test_a_worker_sample_without_a_server_sample_is_not_used_alone() -> None:
    """The first pass is under way: nothing from the monitor yet, only the counts."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    board.write_monitor(0, worker_sample(1))
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert set(attributes) == BASE_WORKER_ATTRIBUTES


def test_add_attributes_after_a_torn_read_reads_again() -> None:
    """A torn read is not kept: once the sample is whole again, the next event carries it."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    board.write_server(server_sample(1))
    struct.pack_into("=I", board.buffer, SERVER_AT, 3)  # the master died mid-write
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert attr.GUNICORN_HOST_LOAD_1M not in attributes
    struct.pack_into("=I", board.buffer, SERVER_AT, 4)  # whole again, same sample
    worker.add_attributes(attributes)
    assert attributes[attr.GUNICORN_HOST_LOAD_1M] == server_sample(1).load1


def test_request_finished_clears_busy(span: Span) -> None:
    """request_finished marks the slot idle (started_at 0, busy 0); the count stays."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    entry = worker.request_started(span, "GET", "/a/")
    entry.finished()
    entry = worker.request_started(span, "GET", "/b/")
    assert board.count_in_use_and_busy()[1] == 1
    entry.finished()
    request = board.read_request(0)
    assert board.count_in_use_and_busy()[1] == 0
    assert (request.started_at, request.event_out, request.requests) == (0.0, False, 2)
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert attributes[attr.GUNICORN_WORKERS_BUSY] == 0
    assert attributes[attr.GUNICORN_WORKERS_UTILIZATION] == 0.0


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
        assert wait_until(lambda: listen_backlog([listener]) == 3), listen_backlog([listener])


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
