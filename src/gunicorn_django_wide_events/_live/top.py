"""``wide-events top``: the board full screen, refreshed about once a second.

Keys: ``q`` quits, ``s`` changes the sort (closest to the deadline, worker id, CPU, memory).
Ctrl-C quits too; a resized terminal is redrawn at its new size; when the master goes away the
screen is given back and one line says so.
"""

from __future__ import annotations

import curses
import time
from collections.abc import Callable
from typing import Any, Final

import psutil

from .._board import TornRead
from .find import FoundBoard
from .snapshot import snapshot
from .status import closest_to_deadline, header_lines, table_lines

REFRESH_S: Final = 1.0
SORTS: Final[dict[str, Callable[[dict[str, Any]], Any]]] = {
    "deadline": closest_to_deadline,
    "id": lambda worker: worker["id"],
    "cpu": lambda worker: -(worker["cpu_percent"] or 0.0),
    "memory": lambda worker: -(worker["rss"] or 0),
}


def master_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class RequestRate:
    """Requests per second between two snapshots, from every worker's count (restarts reset)."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[int, int]] | None = None

    def __call__(self, data: dict[str, Any], now: float) -> float | None:
        counts = {worker["pid"]: worker["requests"] for worker in data["workers"]}
        last, self._last = self._last, (now, counts)
        if last is None or now <= last[0]:
            return None
        started = sum(max(count - last[1].get(pid, 0), 0) for pid, count in counts.items())
        return float(started) / (now - last[0])


def draw(screen: Any, lines: list[str]) -> None:
    screen.erase()
    height, width = screen.getmaxyx()
    for y, line in enumerate(lines[: height - 1]):
        screen.addnstr(y, 0, line, max(width - 1, 0))
    screen.refresh()


def run(screen: Any, found: FoundBoard) -> str | None:
    """The refresh loop; what to print once the screen is back (None: the user quit)."""
    curses.curs_set(0)
    screen.timeout(int(REFRESH_S * 1000))
    sort_names = list(SORTS)
    sort = 0
    rate = RequestRate()
    while True:
        if not master_alive(found.master_pid):
            return f"gunicorn master {found.master_pid} has exited"
        now = time.time()
        try:
            data = snapshot(found.board, now)
        except TornRead:
            data = None
        if data is not None:
            per_second = rate(data, now)
            workers = sorted(data["workers"], key=SORTS[sort_names[sort]])
            lines = [
                *header_lines(data, per_second),
                f"sort: {sort_names[sort]}  (s: change, q: quit)",
                "",
                *table_lines(data, workers),
            ]
            draw(screen, lines)
        key = screen.getch()
        if key in (ord("q"), ord("Q")):
            return None
        if key in (ord("s"), ord("S")):
            sort = (sort + 1) % len(sort_names)
        # curses.KEY_RESIZE: the next pass draws at the new size (getmaxyx follows it).


def top(found: FoundBoard) -> int:
    try:
        message = curses.wrapper(run, found)
    except KeyboardInterrupt:
        return 0
    if message is not None:
        print(f"wide-events: {message}")  # noqa: T201
        return 1
    return 0
