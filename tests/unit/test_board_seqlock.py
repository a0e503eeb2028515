"""The board's seqlock: torn reads, dead writers, the counter, and a writer in another process."""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gunicorn_django_wide_events._board import PATH_BYTES, SQL_BYTES, Board, TornRead, WorkerRequest
from tests.unit.boards import (
    SERVER_AT,
    as_request,
    monitor_at,
    put_request,
    request_at,
    request_payload,
    server_sample,
    worker_sample,
)

pytestmark = pytest.mark.usefixtures("fresh_reports")


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


# The race runs until the reader has this much, within RACE_TIMEOUT_S (a busy machine).
RACE_READS = 2000
RACE_WHOLE_READS = 100
RACE_TIMEOUT_S = 30.0
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


def run_writer_child(board: Board, slot: int, ready_w: int, stop_r: int, done_w: int) -> None:
    """In the forked child: alternate the two payloads until told to stop, report the count."""
    status = 1
    try:
        board.write_request(slot, **RACE_PAYLOADS[0])
        os.write(ready_w, b"r")
        writes = 1
        while not select.select([stop_r], [], [], 0)[0]:
            for _ in range(50):
                for payload in RACE_PAYLOADS:
                    board.write_request(slot, **payload)
            writes += 100
        os.write(done_w, str(writes).encode())
        status = 0
    finally:
        os._exit(status)


@dataclass
class Race:
    seen: list[int] = field(default_factory=lambda: [0, 0])  # whole reads of each payload
    torn: int = 0
    reads: int = 0
    mixed: list[WorkerRequest] = field(default_factory=list)


def race_reads(board: Board, slot: int, expected: list[WorkerRequest]) -> Race:
    """Read the racing entry until enough reads (whole ones of each payload too) or time."""
    race = Race()
    deadline = time.monotonic() + RACE_TIMEOUT_S
    while (race.reads < RACE_READS or min(race.seen) < RACE_WHOLE_READS) and (
        time.monotonic() < deadline
    ):
        for _ in range(100):
            race.reads += 1
            try:
                request = board.read_request(slot)
            except TornRead:
                race.torn += 1
                continue
            if request in expected:
                race.seen[expected.index(request)] += 1
            else:
                race.mixed.append(request)
    return race


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
    stop_r, stop_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        run_writer_child(board, slot, ready_w, stop_r, done_w)
    os.close(ready_w)
    os.close(stop_r)
    os.close(done_w)
    try:
        assert os.read(ready_r, 1) == b"r"
        race = race_reads(board, slot, expected)
        os.write(stop_w, b"s")
        writes = int(os.read(done_r, 32) or b"0")
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(stop_w)
        os.close(done_r)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not race.mixed, (
        f"{len(race.mixed)} of {race.reads} reads returned neither payload but a mix, "
        f"e.g. {summary(max(race.mixed, key=lambda request: len(request.sql.strip(chr(0)))))}"
    )
    assert writes > RACE_READS
    # A writer that never pauses tears many reads (each gives up after its retries): what counts
    # is that readers still get each payload whole, often.
    assert race.reads >= RACE_READS, f"in {RACE_TIMEOUT_S}s: {race}"
    assert min(race.seen) >= RACE_WHOLE_READS, f"whole reads of each payload too few: {race}"
