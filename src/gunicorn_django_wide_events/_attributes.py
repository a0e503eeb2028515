"""The event contract: attribute names, and how every wide event is named, described and ended.

Both sides end events: a worker (its request's end, a timeout, a request gunicorn rejected) and
the master (the fallback event of a worker that died). ``finish_span`` is the one place either
of them ends one, so that every event says its type, error and name the same way.

Standard names come from ``opentelemetry.semconv.attributes`` (stable modules only). The few
standard names used here whose semantic-convention module is still incubating are spelled out
below, so that an incubating module's churn cannot rename a field of the contract.
"""

from __future__ import annotations

import traceback
from typing import Final

from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

# Standard names whose semconv module is still incubating.
HTTP_REQUEST_BODY_SIZE: Final = "http.request.body.size"
HTTP_RESPONSE_BODY_SIZE: Final = "http.response.body.size"
USER_ID: Final = "user.id"
"""The authenticated user's primary key (``enduser.id`` until semantic conventions 1.45)."""

# What kind of event this is: one of the ``EventType`` values.
WIDE_EVENT_TYPE: Final = "wide_event.type"
WIDE_EVENT_CPU_TIME_MS: Final = "wide_event.cpu_time_ms"
"""CPU time the thread serving the request spent on it."""
WIDE_EVENT_QUEUE_TIME_MS: Final = "wide_event.queue_time_ms"
"""Time between the proxy's ``X-Request-Start`` stamp and gunicorn starting the request."""
WIDE_EVENT_ELAPSED_MS: Final = "wide_event.elapsed_ms"
"""On a timeout event: how long the request had been running when its deadline passed."""
WIDE_EVENT_DEADLINE_MS: Final = "wide_event.deadline_ms"
"""On a timeout event: the time the request was allowed, from its start."""
WIDE_EVENT_REPORTED_BY: Final = "wide_event.reported_by"
"""``master`` on an event the master sent from the board because the worker died first."""
WIDE_EVENT_EVENTS_DROPPED: Final = "wide_event.events_dropped"
"""Earlier events of this worker its full spool dropped (the collector unreachable for long)."""
WIDE_EVENT_RESPONSE_INCOMPLETE: Final = "wide_event.response_incomplete"
"""True when the body was not sent to the end: the client went away or the app failed mid-stream."""

# What the request logged (see _worker/logs.py): counted in the request's own thread only.
WIDE_EVENT_LOG_WARNING_COUNT: Final = "wide_event.log.warning_count"
"""WARNING records (levels from WARNING up to, not including, ERROR) made by the request."""
WIDE_EVENT_LOG_ERROR_COUNT: Final = "wide_event.log.error_count"
"""ERROR and CRITICAL records made by the request."""
WIDE_EVENT_LOG_FIRST_ERROR: Final = "wide_event.log.first_error"
"""``logger.name: template`` of the first ERROR-or-worse record: ``record.msg``, never its
arguments (which may hold secrets, like SQL parameters)."""

# Keys of the WSGI environ, not attributes: for gunicorn's --access-logformat
# (``%({wide_events.trace_id}e)s``) and the app (``request.META``).
ENVIRON_TRACE_ID: Final = "wide_events.trace_id"
"""The event's trace id: 32 lowercase hex digits."""
ENVIRON_SPAN_ID: Final = "wide_events.span_id"
"""The event's span id: 16 lowercase hex digits."""

DJANGO_VIEW: Final = "django.view"
DJANGO_URL_NAME: Final = "django.url_name"
DJANGO_DB_QUERY_COUNT: Final = "django.db.query_count"
DJANGO_DB_DURATION_MS: Final = "django.db.duration_ms"
DJANGO_DB_DUPLICATE_QUERY_COUNT: Final = "django.db.duplicate_query_count"
"""Queries whose statement text was already run by the same request: the N+1 smell."""
DJANGO_DB_SLOWEST_QUERY_MS: Final = "django.db.slowest_query_ms"
DJANGO_DB_SLOWEST_QUERY: Final = "django.db.slowest_query"
"""Statement text of the slowest query, never its parameters."""

# From the board (see _board.py and _worker/slot.py): the worker and its siblings.
GUNICORN_WORKER_ID: Final = "gunicorn.worker.id"
"""The worker's board slot: a small integer, stable while the worker lives."""
GUNICORN_WORKER_AGE: Final = "gunicorn.worker.age"
"""Seconds since the worker was forked."""
GUNICORN_WORKER_REQUESTS: Final = "gunicorn.worker.requests"
"""Requests this worker has started, this one included."""
GUNICORN_WORKER_ACTIVE_REQUESTS: Final = "gunicorn.worker.active_requests"
"""Requests this worker is serving as this event ends, this one included (threads, greenlets)."""
GUNICORN_WORKER_CPU_PERCENT: Final = "gunicorn.worker.cpu.percent"
GUNICORN_WORKER_MEMORY_RSS: Final = "gunicorn.worker.memory.rss"
GUNICORN_WORKER_THREADS: Final = "gunicorn.worker.threads"
GUNICORN_WORKER_OPEN_FDS: Final = "gunicorn.worker.open_fds"
GUNICORN_WORKERS_TOTAL: Final = "gunicorn.workers.total"
GUNICORN_WORKERS_BUSY: Final = "gunicorn.workers.busy"
"""Workers serving any request as this event ends, this one included."""
GUNICORN_WORKERS_IDLE: Final = "gunicorn.workers.idle"
GUNICORN_WORKERS_UTILIZATION: Final = "gunicorn.workers.utilization"
"""busy / total: 1.0 means the next request waits in the backlog."""
GUNICORN_WORKERS_CPU_PERCENT: Final = "gunicorn.workers.cpu.percent"
GUNICORN_WORKERS_MEMORY_RSS: Final = "gunicorn.workers.memory.rss"
GUNICORN_LISTEN_BACKLOG: Final = "gunicorn.listen.backlog"
"""Connections waiting to be accepted, at the last sample (Linux TCP listeners only)."""
GUNICORN_MASTER_MEMORY_RSS: Final = "gunicorn.master.memory.rss"
GUNICORN_HOST_LOAD_1M: Final = "gunicorn.host.load.1m"
GUNICORN_MONITOR_SAMPLE_AGE_MS: Final = "gunicorn.monitor.sample_age_ms"
"""How old the monitor data on this event is."""

# The metrics (see _worker/metrics.py and _master/metrics.py): the stable HTTP server ones,
# which the master records too for the events it sends for dead workers, and gunicorn's own.
METER_NAME: Final = "gunicorn_django_wide_events"
HTTP_SERVER_REQUEST_DURATION: Final = "http.server.request.duration"
HTTP_SERVER_ACTIVE_REQUESTS: Final = "http.server.active_requests"
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
)  # fmt: skip
"""The semantic conventions' advice for ``http.server.request.duration``, in seconds."""

# Attributes of the master's metrics.
GUNICORN_WORKER_STATE: Final = "gunicorn.worker.state"
"""On ``gunicorn.workers``: ``busy`` (serving any request) or ``idle``."""
GUNICORN_WORKER_EXIT_REASON: Final = "gunicorn.worker.exit_reason"
"""On ``gunicorn.worker.exits``: ``timeout``, ``crash``, ``max_requests``, ``shutdown`` or
``reload``."""

# Resource attributes of a worker process.
GUNICORN_WORKER_CLASS: Final = "gunicorn.worker.class"
GUNICORN_WORKERS_CONFIGURED: Final = "gunicorn.workers.configured"
GUNICORN_TIMEOUT: Final = "gunicorn.timeout"
GUNICORN_VERSION: Final = "gunicorn.version"
DJANGO_VERSION: Final = "django.version"


def exception_type_name(exc: BaseException) -> str:
    """The ``exception.type`` (and ``error.type``) of ``exc``: dotted, builtins left bare."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class EventType:
    """Values of ``wide_event.type``."""

    REQUEST: Final = "request"
    TIMEOUT: Final = "timeout"
    CRASH: Final = "crash"


def exception_attributes(
    exc: BaseException, *, stacktrace: bool = True, message_limit: int | None = None
) -> dict[str, AttributeValue]:
    """``exception.*`` attributes of ``exc``: for the event itself and for span events alike."""
    attributes: dict[str, AttributeValue] = {
        EXCEPTION_TYPE: exception_type_name(exc),
        EXCEPTION_MESSAGE: str(exc)[:message_limit],
    }
    if stacktrace:
        attributes[EXCEPTION_STACKTRACE] = "".join(traceback.format_exception(exc))
    return attributes


def span_name(method: str, route: str | None) -> str:
    """``{method} {route}`` once the route is known, the method alone before (semconv)."""
    return f"{method} {route}" if route else method


def finish_span(
    span: Span,
    attributes: dict[str, AttributeValue],
    event_type: str,
    error: str | None,
    *,
    name: str | None = None,
    end_time_ns: int | None = None,
) -> None:
    """End ``span`` as a wide event of ``event_type``: every event ends here.

    ``error`` describes what went wrong (the span status), if anything; an event that is not a
    plain request is an error in itself. ``attributes`` go on in one call: ``add_trusted`` on
    the package's own span (see ``_worker/span.py``), ``set_attributes`` on any other.
    """
    attributes[WIDE_EVENT_TYPE] = event_type
    if event_type != EventType.REQUEST:
        attributes.setdefault(ERROR_TYPE, event_type)
        error = error or event_type
    add_trusted = getattr(span, "add_trusted", None)
    if add_trusted is not None:
        add_trusted(attributes)
    else:
        span.set_attributes(attributes)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    if name is not None:
        span.update_name(name)
    span.end(end_time_ns)
