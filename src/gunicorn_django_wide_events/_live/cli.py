"""The ``wide-events`` console script: ``top`` and ``status`` of a running gunicorn."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._board import TornRead
from .find import NoBoard, find_board
from .snapshot import snapshot
from .status import render_json, render_text
from .top import top


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="wide-events",
        description="What every worker of a gunicorn running gunicorn-django-wide-events is "
        "doing right now (read-only, from its shared-memory board).",
    )
    commands = main.add_subparsers(dest="command", required=True)
    for name, summary in (
        ("top", "full-screen view refreshed every second (q: quit, s: sort)"),
        ("status", "the same data once, as text or JSON"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument(
            "--pid", type=int, help="the gunicorn master (default: the only one of this user)"
        )
        if name == "status":
            command.add_argument("--json", action="store_true", help="JSON for scripts")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        found = find_board(args.pid)
    except NoBoard as error:
        print(f"wide-events: {error}", file=sys.stderr)  # noqa: T201
        return 1
    if args.command == "top":
        return top(found)
    try:
        data = snapshot(found.board)
    except TornRead:
        print("wide-events: the board kept changing while it was read; try again", file=sys.stderr)  # noqa: T201
        return 1
    sys.stdout.write(render_json(data) if args.json else render_text(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
