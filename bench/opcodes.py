"""Bytecodes a request executes: the package's request path, counted rather than timed.

Run: ``.venvs/default/bin/python bench/opcodes.py`` (a few seconds; ``--help`` for options).

The benchmark app's Django ``WSGIHandler`` is wrapped by ``WideEventsMiddleware`` as a worker
wraps it, with the same parts: the SDK tracer provider with the package's worker span
processor (its batch thread exporting to an exporter that keeps nothing), a board holding the
monitor's samples, this process's slot, the watchdog thread, Django's URL and database hooks.
Requests are called in this process with a gunicorn-like environ; ``sys.settrace`` counts the
bytecode instructions each function executes in this (the request's) thread, per request, and
the same for the bare handler (the package's Django hooks stay installed there; with no event
they return at once). The export thread's share, encoding each finished span, is counted the
same way by encoding the spans of those requests with ``otlp_wire``.

Counts hardly move from run to run, whatever else the machine does (a few follow timing: which
query was the slowest, which values repeat), so a change to the request path shows its effect
here at once; timed benchmarks (``throughput.py``, ``compare.py``) tell what the counts cost.
Under load a bytecode of the package costs more than one of Django's
(its code and data are cold by then), so the counts rank work, they do not convert to time.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from harness import BENCH_DIR
from harness.report import emit

PACKAGE = "gunicorn_django_wide_events"

Call = Callable[[], object]
WSGIApp = Callable[..., Iterable[bytes]]


def gunicorn_environ(path: str) -> dict[str, Any]:
    """What gunicorn's sync worker hands the app for ``GET path`` from wrk."""
    return {
        "REQUEST_METHOD": "GET",
        "RAW_URI": path,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SCRIPT_NAME": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "51234",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }


def request_caller(app: WSGIApp, path: str) -> Call:
    """One request through ``app`` as gunicorn serves it: call, iterate the body, close it."""

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        return None

    def call() -> None:
        body = app(gunicorn_environ(path), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    return call


class OpcodeCounter:
    """Counts the bytecodes each function executes in the calling thread."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def run(self, call: Call, times: int) -> None:
        counts = self.counts

        def count_opcodes(frame: FrameType, event: str, arg: object) -> Any:
            if event == "opcode":
                code = frame.f_code
                counts[code.co_filename, code.co_qualname] += 1
            return count_opcodes

        def start_frame(frame: FrameType, event: str, arg: object) -> Any:
            frame.f_trace_lines = False
            frame.f_trace_opcodes = True
            return count_opcodes

        sys.settrace(start_frame)
        try:
            for _ in range(times):
                call()
        finally:
            sys.settrace(None)

    def per_call(self, times: int) -> dict[tuple[str, str], float]:
        return {key: count / times for key, count in self.counts.items()}


def owner(filename: str) -> str:
    """Who a code object belongs to: the package, OpenTelemetry, or the rest."""
    if f"{os.sep}{PACKAGE}{os.sep}" in filename:
        return "package"
    if f"{os.sep}opentelemetry{os.sep}" in filename:
        return "opentelemetry"
    return "other"


def short_name(filename: str, qualname: str) -> str:
    for marker in (f"{os.sep}{PACKAGE}{os.sep}", f"{os.sep}opentelemetry{os.sep}"):
        if marker in filename:
            return f"{marker.strip(os.sep)}/{filename.split(marker, 1)[1]}:{qualname}"
    return f"{Path(filename).name}:{qualname}"


def set_up(database: Path) -> tuple[WSGIApp, WSGIApp, Any, list[Any]]:
    """The app bare, the same app wrapped as a worker wraps it, its span processor, and the
    list its finished spans end up in."""
    sys.path.insert(0, str(BENCH_DIR))
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchapp.settings"
    os.environ["BENCHAPP_DATABASE"] = str(database)
    import django
    from benchapp.views import create_database
    from django.core.wsgi import get_wsgi_application
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from gunicorn_django_wide_events._board import Board, ServerSample, WorkerSample
    from gunicorn_django_wide_events._config import Config
    from gunicorn_django_wide_events._export.handover import raise_span_attribute_limit
    from gunicorn_django_wide_events._export.processor import WorkerSpanProcessor
    from gunicorn_django_wide_events._worker import django as django_request
    from gunicorn_django_wide_events._worker import django_db
    from gunicorn_django_wide_events._worker.http import HttpAttributes
    from gunicorn_django_wide_events._worker.slot import WorkerSlot
    from gunicorn_django_wide_events._worker.span import server_span_starter
    from gunicorn_django_wide_events._worker.watchdog import Deadlines, Watchdog
    from gunicorn_django_wide_events._worker.wsgi import WideEventsMiddleware

    finished: list[ReadableSpan] = []

    class KeepingExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            finished.extend(spans)
            return SpanExportResult.SUCCESS

    create_database(str(database))
    django.setup()
    provider = TracerProvider()
    raise_span_attribute_limit(provider, {})
    processor = WorkerSpanProcessor([KeepingExporter])
    processor.start()
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    config = Config.from_environ({})
    django_request.instrument_django(config.capture_user_id)
    django_db.instrument_db()
    board = Board(4)
    board.write_server(ServerSample(1.0, 0.5, 0, 30_000_000, 90.0, 60_000_000))
    board.write_monitor(0, WorkerSample(1.0, 90.0, 60_000_000, 3, 12))
    slot = WorkerSlot(board, 0)
    watchdog = Watchdog(processor, deadlines=Deadlines(lambda now: now + 29.0, 29.0, sync=True))
    watchdog.start()
    app = get_wsgi_application()
    wrapped = WideEventsMiddleware(
        app,
        server_span_starter(PACKAGE, "bench"),
        http=HttpAttributes(config),
        sql_max_length=config.sql_max_length,
        slot=slot,
        watchdog=watchdog,
    )
    return app, wrapped, processor, finished


def report(title: str, per_call: dict[tuple[str, str], float], top: int) -> None:
    by_owner: Counter[str] = Counter()
    for (filename, _), count in per_call.items():
        by_owner[owner(filename)] += count
    emit(
        f"  {title}: {sum(by_owner.values()):.0f}"
        f" (package {by_owner['package']:.0f}, opentelemetry {by_owner['opentelemetry']:.0f},"
        f" the rest {by_owner['other']:.0f})"
    )
    ours = [
        (count, short_name(*key)) for key, count in per_call.items() if owner(key[0]) != "other"
    ]
    for count, name in sorted(ours, reverse=True)[:top]:
        emit(f"    {count:7.1f}  {name}")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="counted per view")
    parser.add_argument("--top", type=int, default=25, help="functions listed per view")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wide-events-opcodes-") as tmp:
        app, wrapped, processor, finished = set_up(Path(tmp) / "bench.sqlite3")
        from gunicorn_django_wide_events._export import otlp_wire

        emit("bytecodes executed per request (request thread), and per span encoded (export)")
        for view in ("hello", "db"):
            path = f"/{view}/"
            bare_call, package_call = request_caller(app, path), request_caller(wrapped, path)
            for call in (bare_call, package_call):
                for _ in range(300):  # warm: Django's caches, the encoder's key cache
                    call()
            bare, package = OpcodeCounter(), OpcodeCounter()
            bare.run(bare_call, args.requests)
            processor.force_flush()
            finished.clear()
            package.run(package_call, args.requests)
            processor.force_flush()
            emit(f"\n== {path}")
            report("bare Django", bare.per_call(args.requests), 0)
            report("with the package", package.per_call(args.requests), args.top)
            spans = list(finished)
            encoder = OpcodeCounter()
            otlp_wire.encode_spans(spans)  # warm
            encoder.run(functools.partial(otlp_wire.encode_spans, spans), 1)
            report(f"export, per span ({len(spans)} in one batch)", encoder.per_call(len(spans)), 8)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
