"""Ablation: what the request path costs with parts of it taken out, against bare gunicorn.

Run, for example (about 5 minutes a view)::

    .venvs/default/bin/python bench/ablation.py --view db --rounds 6

Each variant is a copy of the package's source with one edit, made in a temporary directory
and run with ``compare.py`` (``SRC=``) beside the package as it is and bare gunicorn:

``passthrough``
    the middleware hands every request straight to the app: the package is loaded, its
    gunicorn and Django hooks are installed, no request has an event.
``no-span``
    the event is gathered as usual (request attributes, the caller's context, Django's route
    and view, the database statements, the watchdog, the context made current), but it goes
    to a non-recording span: no span object, no board, nothing exported.
``no-export``
    the whole event and its span, which the span processor then drops instead of batching.

These are measuring instruments, not configurations: each edit is checked to apply exactly
once, so a change to the source that moves one makes this script fail rather than measure
something else.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import compare

SOURCE = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "gunicorn_django_wide_events"
# Variants without spans wait for none: a short batch delay keeps compare.py's wait short.
NO_SPANS = "OTEL_BSP_SCHEDULE_DELAY=100"

Edit = tuple[str, str, str]  # module, text to replace, replacement

EDITS: dict[str, list[Edit]] = {
    "passthrough": [
        (
            "_worker/wsgi.py",
            "        scope = self._start(environ, start_response)\n"
            "        if scope is None:\n"
            "            return self.app(environ, start_response)\n",
            "        return self.app(environ, start_response)\n",
        ),
    ],
    "no-span": [
        (
            "_worker/wsgi.py",
            "            span = self.spans.start_span(method, parent, attributes)\n"
            "            slot = self.slot\n"
            "            entry = slot.request_started(\n"
            '                span, method, str(attributes.get(URL_PATH, "")), '
            'str(attributes.get(URL_QUERY, ""))\n'
            "            )\n",
            "            span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)\n"
            "            slot = no_slot\n"
            '            entry = slot.request_started(span, method, "")\n',
        ),
    ],
    "no-export": [
        (
            "_export/processor.py",
            "        for processor in self._processors:\n            processor.on_end(span)\n",
            "        return\n",
        ),
    ],
}


def make_variant(name: str, edits: Sequence[Edit], root: Path) -> Path:
    """A copy of the source with ``edits`` applied; its ``src``-like directory."""
    source = root / name
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns("__pycache__"))
    for module, old, new in edits:
        path = source / PACKAGE / module
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"variant {name}: the edit of {module} no longer applies")
        path.write_text(text.replace(old, new))
    return source


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--view", choices=("hello", "db"), default="hello")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wide-events-ablation-") as tmp:
        specs = []
        for name, edits in EDITS.items():
            source = make_variant(name, edits, Path(tmp))
            specs.append(f"{name}:SRC={source},{NO_SPANS}")
        specs.append("package")
        return compare.main([*specs, "--view", args.view, "--rounds", str(args.rounds)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
