"""``wide-events status``: one snapshot, as a table for people or JSON for scripts."""

from __future__ import annotations

import json
from typing import Any


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}M"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if abs(seconds) < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def header_lines(data: dict[str, Any], rate: float | None = None) -> list[str]:
    master = data["master"]
    backlog = master["listen_backlog"]
    line = (
        f"gunicorn master {master['pid']}  up {duration(master['uptime_s'])}  "
        f"workers {master['workers_busy']}/{master['workers_total']} busy  "
        f"backlog {'-' if backlog is None else backlog}"
    )
    if rate is not None:
        line += f"  {rate:.1f} req/s"
    return [
        line,
        f"timeouts {master['timeouts']}  crashes {master['crashes']}  "
        f"timeout {master['timeout_s']}s  master rss {mib(master['memory_rss'])}",
    ]


COLUMNS = (
    ("ID", 3), ("PID", 7), ("AGE", 7), ("STATE", 11), ("REQS", 9), ("CPU%", 5), ("RSS", 5),
    ("LEFT", 6), ("METHOD", 6), ("ROUTE", 28), ("ELAPSED", 8), ("DB", 9), ("TRACE", 32),
)  # fmt: skip


def row_cells(worker: dict[str, Any], request: dict[str, Any] | None, max_requests: int | None,
              first: bool) -> list[str]:  # fmt: skip
    """The cells of a worker's row (``first``) or of a further request in flight under it."""
    requests = str(worker["requests"]) + (f"/{max_requests}" if max_requests else "")
    cpu = worker["cpu_percent"]
    cells = (
        [str(worker["id"]), str(worker["pid"]), duration(worker["age_s"]),
         (request or {}).get("state", worker["state"]), requests,
         "-" if cpu is None else f"{cpu:.0f}", mib(worker["rss"]),
         duration(worker["time_left_s"]) if request else "-"]
        if first else ["", "", "", request["state"] if request else "", "", "", "", ""]
    )  # fmt: skip
    if request is None:
        return [*cells, "", "", "", "", ""]
    db = f"{request['db_query_count']}q {request['db_duration_ms']:.0f}ms"
    return [
        *cells,
        request["method"],
        request["route"] or request["path"],
        f"{request['elapsed_ms'] / 1e3:.1f}s",
        db,
        request["trace_id"] or "-",
    ]


def table_lines(data: dict[str, Any], workers: list[dict[str, Any]]) -> list[str]:
    max_requests = data["master"]["max_requests"]
    rows = [[name for name, _ in COLUMNS]]
    for worker in workers:
        requests = worker["in_flight"] or [None]
        for index, request in enumerate(requests):
            rows.append(row_cells(worker, request, max_requests, first=index == 0))
    return [
        " ".join(
            cell[:width].ljust(width) for cell, (_, width) in zip(row, COLUMNS, strict=True)
        ).rstrip()
        for row in rows
    ]


def closest_to_deadline(worker: dict[str, Any]) -> tuple[int, float]:
    """Sort key: busy workers first, the longest-running request (least time left) on top."""
    request = worker["request"]
    return (0, -request["elapsed_ms"]) if request else (1, float(worker["id"]))


def render_text(data: dict[str, Any]) -> str:
    workers = sorted(data["workers"], key=closest_to_deadline)
    return "\n".join([*header_lines(data), "", *table_lines(data, workers)]) + "\n"


def render_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"
