"""What the package's logging hook costs per log record, and what a quiet request pays for it.

Run: ``.venvs/default/bin/python bench/logging_cost.py`` (about 30 s; ``--help`` for options).

Each record goes through a logger with one handler that does nothing (no I/O, no formatting),
so what is timed is the record's making and handling, where the hook runs. Timed with
``timeit`` over many records, in alternated rounds (every case once per round), the fastest
round kept, in nanoseconds per record:

- ``stdlib``: logging's own record factory, no hook;
- ``package``: the package's record factory (``_worker/logs.py``) over it, outside a request,
  and inside one (its event current in this thread) for an INFO record (ids added) and a
  WARNING record (ids added, counted);
- ``four fields``: a factory that only adds the four ``otel*`` fields, what OpenTelemetry's
  logging instrumentation adds too: most of the package's cost per record;
- for comparison, the other places a hook could sit, doing only the counting part (the event
  lookup, the thread check, the count): a handler on the root logger and a filter on the
  logger. Neither is what the package uses: a root handler never sees the records of loggers
  that do not propagate (gunicorn's, ``django``'s in many settings) and a ``dictConfig`` can
  remove it; a filter would have to be on every logger.

Then what a request that logs nothing pays: formatting the two ids the event keeps for the
access log and for its records, and putting them in the environ.
"""

from __future__ import annotations

import argparse
import logging
import threading
import timeit
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from harness.machine import machine_lines
from harness.report import emit
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from gunicorn_django_wide_events._attributes import ENVIRON_SPAN_ID, ENVIRON_TRACE_ID
from gunicorn_django_wide_events._worker import logs
from gunicorn_django_wide_events._worker.event import RequestEvent, current_event


class DoNothing(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        pass


def counting_part(record: logging.LogRecord) -> None:
    """The counting a hook does anywhere: find the event, check the thread, count."""
    event = current_event.get()
    if (
        event is not None
        and event.thread_id == threading.get_ident()
        and record.levelno >= logging.WARNING
    ):
        logs.count(event, record)


class CountingHandler(logging.Handler):
    """The root-handler alternative (``handle`` overridden: no lock, no filters)."""

    def handle(self, record: logging.LogRecord) -> bool:
        counting_part(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        pass


class CountingFilter(logging.Filter):
    """The filter alternative, on the logger itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        counting_part(record)
        return True


@contextmanager
def serving(event: RequestEvent | None) -> Iterator[None]:
    token = current_event.set(event)
    try:
        yield
    finally:
        current_event.reset(token)


@contextmanager
def record_factory(factory: Callable[..., logging.LogRecord]) -> Iterator[None]:
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


@dataclass
class Case:
    """One hook, one kind of record, in or outside a request; timed in alternated rounds."""

    hook: str
    column: str
    log: Callable[[], None]
    installed: Callable[[], AbstractContextManager[None]]
    in_request: bool
    runs: list[float] = field(default_factory=list)

    def time(self, number: int, event: RequestEvent) -> None:
        with self.installed(), serving(event if self.in_request else None):
            self.runs.append(timeit.Timer(self.log).timeit(number) / number * 1e9)

    @property
    def ns(self) -> float:
        return min(self.runs)  # the least disturbed round, as timeit advises


COLUMNS = ("outside a request, INFO", "in a request, INFO", "in a request, WARNING")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--number", type=int, default=50_000, help="records per round")
    parser.add_argument("--rounds", type=int, default=9, help="rounds (the fastest is kept)")
    args = parser.parse_args()

    provider = TracerProvider(shutdown_on_exit=False)
    tracer = provider.get_tracer("bench")
    event = RequestEvent(tracer.start_span("GET", kind=SpanKind.SERVER), "GET")

    logger = logging.getLogger("bench.logging_cost")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(DoNothing())
    root_logger = logging.getLogger("bench.logging_cost.root")  # propagates to the root
    root_logger.setLevel(logging.INFO)

    def logs_to(target: logging.Logger, level: int) -> Callable[[], None]:
        def log() -> None:
            target.log(level, "a record for %s", "someone")

        return log

    stdlib = logging.getLogRecordFactory()
    package_factory = logs.record_factory_for(stdlib, "bench")
    fields = {
        "otelTraceID": "0",
        "otelSpanID": "0",
        "otelTraceSampled": False,
        "otelServiceName": "",
    }

    def fields_only(*factory_args: Any, **factory_kwargs: Any) -> logging.LogRecord:
        record = stdlib(*factory_args, **factory_kwargs)
        record.__dict__.update(fields)
        return record

    hooks: list[tuple[str, logging.Logger, Callable[[], AbstractContextManager[None]]]] = [
        ("stdlib (no hook)", logger, nullcontext),
        (
            "package: record factory (ids on records, counts)",
            logger,
            lambda: record_factory(package_factory),
        ),
        ("four fields set by a factory, nothing else", logger, lambda: record_factory(fields_only)),
        ("stdlib, a do-nothing root handler", root_logger, lambda: root_handlers(DoNothing())),
        (
            "root handler counting (alternative)",
            root_logger,
            lambda: root_handlers(CountingHandler()),
        ),
        (
            "logger filter counting (alternative)",
            logger,
            lambda: logger_filter(logger, CountingFilter()),
        ),
    ]
    cases = [
        Case(hook, column, logs_to(target, level), installed, in_request)
        for hook, target, installed in hooks
        for column, level, in_request in zip(
            COLUMNS, (logging.INFO, logging.INFO, logging.WARNING), (False, True, True), strict=True
        )
    ]
    for _ in range(args.rounds):
        for case in cases:
            case.time(args.number, event)

    span_context = event.span.get_span_context()
    environ: dict[str, object] = {}

    def quiet_request_part() -> None:
        environ[ENVIRON_TRACE_ID] = "%032x" % span_context.trace_id  # noqa: UP031
        environ[ENVIRON_SPAN_ID] = "%016x" % span_context.span_id  # noqa: UP031

    per_request = min(timeit.repeat(quiet_request_part, number=args.number, repeat=args.rounds))

    for line in machine_lines():
        emit(line)
    emit(f"records    {args.number} per round, {args.rounds} alternated rounds, the fastest kept")
    emit()
    emit(f"| hook | {' | '.join(COLUMNS)} |")
    emit("|---|---|---|---|")
    by_hook: dict[str, list[float]] = {}
    for case in cases:
        by_hook.setdefault(case.hook, []).append(case.ns)
    for hook, figures in by_hook.items():
        emit(f"| {hook} | {' | '.join(f'{ns:.0f} ns' for ns in figures)} |")
    emit()
    stdlib_row = by_hook["stdlib (no hook)"]
    package_row = by_hook["package: record factory (ids on records, counts)"]
    added = ", ".join(
        f"{column} +{ours - base:.0f} ns"
        for column, ours, base in zip(COLUMNS, package_row, stdlib_row, strict=True)
    )
    emit(f"package over stdlib, per record: {added}")
    emit(
        f"a quiet request: {per_request / args.number * 1e9:.0f} ns "
        "(its two ids formatted into the environ; the record factory costs it nothing)"
    )
    provider.shutdown()


@contextmanager
def root_handlers(handler: logging.Handler) -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved


@contextmanager
def logger_filter(target: logging.Logger, counting: logging.Filter) -> Iterator[None]:
    target.addFilter(counting)
    try:
        yield
    finally:
        target.removeFilter(counting)


if __name__ == "__main__":
    main()
