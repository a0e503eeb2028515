"""Finding the board of a running gunicorn master through ``/proc``.

The master holds its board as a memfd; ``/proc/<pid>/fd`` shows it as ``/memfd:<name>``, and
only the same user (or root) may list or open it. Workers hold it too (inherited by fork): the
board's header names the master, so pointing at a worker finds its master.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .._board import MEMFD_NAME, Board

PROC = Path("/proc")


class NoBoard(LookupError):
    """No board where one was looked for; the message says why, in one line."""


@dataclass(frozen=True)
class FoundBoard:
    master_pid: int
    path: str  # /proc/<master pid>/fd/<n>
    board: Board


def board_paths(pid: int) -> list[str]:
    """The ``/proc/<pid>/fd`` entries of ``pid`` that are a board's memfd."""
    fd_dir = PROC / str(pid) / "fd"
    paths = []
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return []
    for name in names:
        try:
            target = os.readlink(fd_dir / name)
        except OSError:
            continue
        if target.startswith(f"/memfd:{MEMFD_NAME}"):
            paths.append(str(fd_dir / name))
    return paths


def open_board_of(pid: int) -> FoundBoard:
    """The board of master ``pid``, or of the master of worker ``pid``.

    Raises:
        NoBoard: ``pid`` is not such a process, or its board cannot be read.
    """
    if not (PROC / str(pid)).is_dir():
        raise NoBoard(f"no process {pid}")
    paths = board_paths(pid)
    if not paths:
        raise NoBoard(
            f"process {pid} is not a gunicorn master running gunicorn-django-wide-events "
            "(or not yours, or WIDE_EVENTS_LIVE_VIEW is off)"
        )
    try:
        board = Board.open(paths[0])
    except (OSError, ValueError) as error:
        raise NoBoard(f"cannot read the board of process {pid}: {error}") from None
    master = board.read_master().pid
    if master == pid:
        return FoundBoard(pid, paths[0], board)
    board.buffer.close()
    if master > 0 and master != pid and board_paths(master):
        return open_board_of(master)  # a worker: its master's board is the same memory
    raise NoBoard(f"process {pid} holds a board but its master ({master}) is gone")


def find_masters() -> list[int]:
    """Every gunicorn master of this user that has a board, by pid."""
    masters = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if not board_paths(pid):
            continue
        try:
            board = Board.open(board_paths(pid)[0])
        except (OSError, ValueError):
            continue
        if board.read_master().pid == pid:
            masters.append(pid)
        board.buffer.close()
    return sorted(masters)


def find_board(pid: int | None) -> FoundBoard:
    """The board to show: of ``pid``, or of the only master there is.

    Raises:
        NoBoard: none, or several to choose from (the message lists them).
    """
    if pid is not None:
        return open_board_of(pid)
    masters = find_masters()
    if not masters:
        raise NoBoard("no gunicorn master running gunicorn-django-wide-events found for this user")
    if len(masters) > 1:
        listed = ", ".join(str(master) for master in masters)
        raise NoBoard(f"several gunicorn masters run gunicorn-django-wide-events: {listed}; "
                      "choose one with --pid")  # fmt: skip
    return open_board_of(masters[0])


def is_alive(pid: int) -> bool:
    return (PROC / str(pid)).is_dir()
