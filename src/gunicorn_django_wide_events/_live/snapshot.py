"""One reading of a board as plain data: what ``status --json`` prints and ``top`` draws."""

from __future__ import annotations

import time
from typing import Any

from .._board import Board, RequestState, TornRead, WorkerRequest

IDLE = "idle"
IN_DATABASE = "in database"


def request_view(request: WorkerRequest, now: float) -> dict[str, Any]:
    """A request in flight, as ``status --json`` shows it (``path`` as redacted on events)."""
    trace_id = request.trace_id.hex()
    return {
        "method": request.method,
        "route": request.route or None,
        "path": request.path,
        "query": request.query or None,
        "view": request.view or None,
        "elapsed_ms": round(max(now - request.started_at, 0.0) * 1e3, 1),
        "trace_id": trace_id if int(trace_id or "0", 16) else None,
        "state": IN_DATABASE if request.sql else RequestState.NAMES.get(request.state, "?"),
        "db_query_count": request.db_query_count,
        "db_duration_ms": round(request.db_duration_ns / 1e6, 3),
        "sql": request.sql or None,
    }


def worker_view(board: Board, slot: int, now: float, timeout_s: int) -> dict[str, Any] | None:
    """A worker's row; None for a slot whose worker has not written itself yet."""
    pid, spawned_at = board.read_worker(slot)
    if not pid:
        return None
    entries = [board.read_request(slot, entry) for entry in range(board.entries_per_slot)]
    in_flight = sorted(
        (request for request in entries if request.started_at), key=lambda r: r.started_at
    )
    sample = board.read_monitor(slot)
    requests = [request_view(request, now) for request in in_flight]
    oldest = requests[0] if requests else None
    time_left = None
    if oldest is not None and timeout_s:
        time_left = round(timeout_s - oldest["elapsed_ms"] / 1e3, 1)
    return {
        "id": slot,
        "pid": pid,
        "state": oldest["state"] if oldest else IDLE,
        "requests": max((request.requests for request in entries), default=0),
        "rss": sample.rss if sample else None,
        "cpu_percent": sample.cpu_percent if sample and sample.cpu_percent >= 0 else None,
        "age_s": round(now - spawned_at, 1),
        "time_left_s": time_left,
        "active_requests": board.in_flight(slot),
        "request": oldest,
        "in_flight": requests,
    }


def snapshot(board: Board, now: float | None = None) -> dict[str, Any]:
    """The master and every worker, as the board shows them now.

    Raises:
        TornRead: the board kept changing under every attempt (a writer died mid-write).
    """
    now = time.time() if now is None else now
    master = board.read_master()
    server = board.read_server()
    total, busy = board.count_in_use_and_busy()
    workers = []
    in_use = board.buffer[board._in_use_at : board._in_use_at + board.capacity]
    for slot in range(board.capacity):
        if not in_use[slot]:
            continue
        try:
            row = worker_view(board, slot, now, master.timeout_s)
        except TornRead:
            continue  # its worker died mid-write; the master is about to free the slot
        if row is not None:
            workers.append(row)
    return {
        "master": {
            "pid": master.pid,
            "uptime_s": round(now - master.started_at, 1),
            "workers_total": total,
            "workers_busy": busy,
            "listen_backlog": server.backlog if server and server.backlog >= 0 else None,
            "timeout_s": master.timeout_s,
            "max_requests": master.max_requests or None,
            "timeouts": master.timeouts,
            "crashes": master.crashes,
            "memory_rss": server.master_rss if server else None,
        },
        "workers": workers,
    }
