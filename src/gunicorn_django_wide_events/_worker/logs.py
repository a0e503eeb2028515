"""What a request logged, on its event; and the event's ids on the records it logs.

One hook for the whole process: a wrapper around ``logging``'s record factory, installed once
by the instrumentor (in the master, so every worker inherits it). The factory runs for every
record any logger makes, in the thread that logs, before filters, handlers or propagation
have a say. So it sees the records of loggers that do not propagate (gunicorn's own, and
``django``'s in many ``LOGGING`` settings), and no ``logging.config.dictConfig`` takes it away
(Django's ``LOGGING`` replaces handlers, never the factory). A handler on the root logger would
miss the first and lose to the second; a filter would have to be on every logger.

A record counts when a logger makes it: when the logger's level lets it through, whatever its
handlers then do with it. Only the request's own thread (or greenlet) counts: ``current_event``
alone would also count a thread that copied the request's context. Under the ASGI workers the
request's context is what tells it apart (its tasks share the event loop's thread, and Django
runs its sync views and middleware in threads that copy that context): there, every record made
in the request's context counts.

Cost: one ``ContextVar.get`` per record outside a request, plus a look at the current span;
inside, a comparison of thread ids and one ``dict.update``. A request that logs nothing pays
nothing, beyond the two ids ``RequestEvent`` formats anyway for gunicorn's access log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

from .._guard import LOGGER_NAME, never_raise
from .event import RequestEvent, current_event

RecordFactory = Callable[..., logging.LogRecord]

# The names OpenTelemetry's logging instrumentation gives these fields, so that formats written
# for it (``%(otelTraceID)s``) work unchanged.
TRACE_ID_FIELD: Final = "otelTraceID"
SPAN_ID_FIELD: Final = "otelSpanID"
TRACE_SAMPLED_FIELD: Final = "otelTraceSampled"
SERVICE_NAME_FIELD: Final = "otelServiceName"
NO_ID: Final = "0"  # what OpenTelemetry's instrumentation says outside any span

FIRST_ERROR_MAX_LENGTH: Final = 256
"""Longest ``wide_event.log.first_error`` kept, logger name included, in characters."""

_guard: Final = never_raise("logs.record_factory")


def first_error_of(record: logging.LogRecord) -> str:
    """``logger: template``, the message as written in the code, never its arguments.

    A message that is not a string (an exception, a dict) is named by its type: its text is
    made of data, as formatted arguments are.
    """
    message = record.msg
    template = message if isinstance(message, str) else f"<{type(message).__qualname__}>"
    return f"{record.name}: {template}"[:FIRST_ERROR_MAX_LENGTH]


def count(event: RequestEvent, record: logging.LogRecord) -> None:
    """A WARNING-or-worse record of the request: onto its event's counters."""
    if record.name == LOGGER_NAME:
        return  # the package's own messages are not the app's
    if record.levelno >= logging.ERROR:
        event.log_errors += 1
        if event.log_first_error is None:
            event.log_first_error = first_error_of(record)
    else:
        event.log_warnings += 1


def fields_of(event: RequestEvent, service_name: str) -> dict[str, object]:
    """What every record of the request carries; made once, by its first record."""
    fields: dict[str, object] = {
        TRACE_ID_FIELD: event.trace_id_hex,
        SPAN_ID_FIELD: event.span_id_hex,
        TRACE_SAMPLED_FIELD: event.span.get_span_context().trace_flags.sampled,
        SERVICE_NAME_FIELD: service_name,
    }
    event.log_fields = fields
    return fields


def add_current_span_fields(record: logging.LogRecord, service_name: str) -> None:
    """Outside a request: the current span's ids, as OpenTelemetry's instrumentation gives.

    Left alone when a factory inside this one (that instrumentation's) already set them.
    """
    values = record.__dict__
    if TRACE_ID_FIELD in values:
        return
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        values[TRACE_ID_FIELD] = f"{span_context.trace_id:032x}"
        values[SPAN_ID_FIELD] = f"{span_context.span_id:016x}"
        values[TRACE_SAMPLED_FIELD] = span_context.trace_flags.sampled
    else:
        values[TRACE_ID_FIELD] = NO_ID
        values[SPAN_ID_FIELD] = NO_ID
        values[TRACE_SAMPLED_FIELD] = False
    values[SERVICE_NAME_FIELD] = service_name


def record_factory_for(previous: RecordFactory, service_name: str) -> RecordFactory:
    """A record factory that makes records with ``previous``, then notes them on the event."""
    get_event = current_event.get

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            event = get_event()
            # threading.get_ident looked up per call, as RequestEvent does: gevent patches it.
            if event is not None and (
                event.thread_id == threading.get_ident() or event.logs_of_any_thread_in_its_context
            ):
                if record.levelno >= logging.WARNING:
                    count(event, record)
                record.__dict__.update(event.log_fields or fields_of(event, service_name))
            else:
                add_current_span_fields(record, service_name)
        except Exception:
            _guard.report()
        return record

    make_record.__wide_events_previous__ = previous  # type: ignore[attr-defined]
    return make_record


def service_name_of_provider() -> str:
    """``service.name`` of the tracer provider's resource, as the records' field says it."""
    resource = getattr(trace.get_tracer_provider(), "resource", None)
    attributes = getattr(resource, "attributes", None) or {}
    return str(attributes.get(SERVICE_NAME, ""))


def instrument_logging() -> None:
    """Install the record factory, once per process (a second call keeps the first)."""
    factory = logging.getLogRecordFactory()
    if _is_ours(factory):
        return
    logging.setLogRecordFactory(record_factory_for(factory, service_name_of_provider()))


def uninstrument_logging() -> None:
    """Put the previous factory back, if ours is still the one on top.

    One installed after ours (OpenTelemetry's logging instrumentation) calls ours in turn:
    it stays, and ours goes on without events to count, as outside any request.
    """
    factory = logging.getLogRecordFactory()
    if _is_ours(factory):
        logging.setLogRecordFactory(factory.__wide_events_previous__)  # type: ignore[attr-defined]


def _is_ours(factory: RecordFactory) -> bool:
    return hasattr(factory, "__wide_events_previous__")
