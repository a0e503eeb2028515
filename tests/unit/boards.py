"""The board's binary layout spelled out, and helpers to fill and read its regions.

Shared by the tests of the board itself (test_board.py, test_board_seqlock.py) and of a
worker's slot (worker/test_slot.py).
"""

from __future__ import annotations

import struct
from typing import Any

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
    WorkerSample,
)

# The layout as _board.py documents it, spelled out independently so that a change to the
# binary layout shows up here. All native byte order, no padding ("="). Each seqlock region is
# its 4-byte counter ("I") followed by its payload.
# capacity, entries per slot, spool bytes per slot; then the master: pid, started_at, timeout,
# max_requests, timeouts and crashes
HEADER_BYTES = struct.calcsize("=III" + "idIIII")
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
