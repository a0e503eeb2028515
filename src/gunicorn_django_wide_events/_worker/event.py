"""RequestEvent: one request's wide event, from its start until it ends, exactly once.

Everything gathered while a request runs goes into one plain dict and reaches the span in one
call when the event ends (``finish_span``). Whatever ends it (the response, an exception, the
watchdog's timeout, a request gunicorn rejected) goes through ``RequestEvent._end``, which may
race another thread (the watchdog) and so decides under a lock which caller owns the ending.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, Final

from opentelemetry.semconv.attributes.code_attributes import CODE_STACKTRACE
from opentelemetry.semconv.attributes.db_attributes import DB_QUERY_TEXT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.url_attributes import URL_PATH
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from .. import _attributes as attr
from .._attributes import EventType, exception_attributes, finish_span, span_name
from .._config import Config
from .._os_threads import allocate_lock
from .http import REDACTED, redact_path
from .metrics import NOT_STARTED, RequestRecorder, Started, no_request_metrics
from .slot import NoEntry, NoSlot, SlotEntry, WorkerSlot, no_entry, no_slot

# A real lock also under gevent: the watchdog's OS thread races the request's greenlet for it.
_end_lock: Final = allocate_lock()
DEFAULT_SQL_MAX_LENGTH: Final = Config().sql_max_length

current_event: ContextVar[RequestEvent | None] = ContextVar(
    "gunicorn_django_wide_events.current_event", default=None
)
"""The event of the request this thread (or greenlet) is serving, if any."""

exception_left_to_gunicorn: ContextVar[tuple[BaseException, RequestEvent] | None] = ContextVar(
    "gunicorn_django_wide_events.exception_left_to_gunicorn", default=None
)
"""An app exception already on its event, which gunicorn will answer with a 500 of its own."""


# Shorter values are no secret worth mangling every other attribute for (a "1" would be taken
# out of "HTTP/1.1"); url.path still shows them REDACTED.
MIN_SCRUBBED_LENGTH: Final = 4


def encoded_either_way(secret: str) -> str:
    """A pattern for ``secret`` with any of its characters as is or percent-encoded (a client
    may encode even what needs no encoding: ``%2D`` for ``-``)."""
    parts = []
    for char in secret:
        encoded = "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        parts.append(f"(?:{re.escape(char)}|(?i:{re.escape(encoded)}))")
    return "".join(parts)


def scrub_secrets(
    secrets: tuple[str, ...],
    attributes: dict[str, AttributeValue],
    span_attributes: Mapping[str, AttributeValue] | None,
) -> None:
    """Take ``secrets`` (percent-encoded or not) out of every string attribute: those about to
    be set, and those the span already has (``attributes`` override them)."""
    kept = sorted({secret for secret in secrets if len(secret) >= MIN_SCRUBBED_LENGTH}, key=len)
    if not kept:
        return
    pattern = re.compile("|".join(encoded_either_way(secret) for secret in reversed(kept)))
    merged = {**span_attributes, **attributes} if span_attributes else attributes
    for key, value in list(merged.items()):
        if isinstance(value, str):
            if pattern.search(value):
                attributes[key] = pattern.sub(REDACTED, value)
        elif isinstance(value, (tuple, list)) and any(
            isinstance(item, str) and pattern.search(item) for item in value
        ):
            attributes[key] = tuple(
                pattern.sub(REDACTED, item) if isinstance(item, str) else item for item in value
            )


def thread_cpu_ms(thread_id: int) -> float | None:
    """CPU time of a thread of this process (another one too), where the platform can tell."""
    try:
        clock = time.pthread_getcpuclockid(thread_id)
        return time.clock_gettime(clock) * 1e3
    except (AttributeError, OSError, ValueError):
        return None


class RequestEvent:
    """One request's wide event: a SERVER span plus the attributes gathered for it."""

    # A thread serves one request at a time (sync, gthread): its CPU clock is the request's
    # (_add_cpu_time), and the records it logs are the request's. Greenlets and an event loop
    # serving many requests at once (greenlets.py, asgi.py) say otherwise.
    logs_of_any_thread_in_its_context: ClassVar[bool] = False

    __slots__ = (
        "attributes",
        "body_bytes",
        "body_omitted",
        "client",
        "cpu_start_ns",
        "db_duration_ns",
        "db_query_count",
        "db_slowest_ns",
        "db_slowest_sql",
        "db_statements",
        "due",
        "entry",
        "exception",
        "finished",
        "headers_sent",
        "log_errors",
        "log_fields",
        "log_first_error",
        "log_warnings",
        "measured",
        "method",
        "metrics",
        "route",
        "secrets",
        "slot",
        "span",
        "span_id_hex",
        "sql_in_flight",
        "sql_max_length",
        "started",
        "status_code",
        "thread_id",
        "trace_id_hex",
    )

    def __init__(
        self,
        span: Span,
        method: str,
        slot: WorkerSlot | NoSlot = no_slot,
        entry: SlotEntry | NoEntry = no_entry,
        *,
        sql_max_length: int = DEFAULT_SQL_MAX_LENGTH,
        client: Any = None,
        metrics: RequestRecorder = no_request_metrics,
        request_attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        """``metrics`` counts the request active from now on, by its ``request_attributes``
        (those its span started with), until the event ends."""
        self.span = span
        self.slot = slot
        self.entry = entry  # the request's own entry of the slot
        self.method = method
        self.sql_max_length = sql_max_length
        self.client = client  # gunicorn's socket to the client: the watchdog may answer on it
        self.attributes: dict[str, AttributeValue] = {}
        self.route: str | None = None
        # Values of route parameters with secret-looking names: they must not leave the process.
        self.secrets: tuple[str, ...] = ()
        self.status_code = 0
        self.exception: BaseException | None = None
        self.finished = False
        self.body_bytes = 0
        self.body_omitted = False  # HEAD, 1xx, 204, 304: no body bytes reach the client
        self.headers_sent = False
        self.cpu_start_ns = time.thread_time_ns()
        self.thread_id = threading.get_ident()
        self.started = time.monotonic()
        self.due = float("inf")  # set by the watchdog that watches the request
        self.sql_in_flight: object = None
        self.db_query_count = 0
        self.db_duration_ns = 0
        self.db_slowest_ns = -1
        self.db_slowest_sql: object = None
        self.db_statements: dict[object, int] | None = None
        # For gunicorn's access log (the environ) and the request's log records; on every
        # request, so "%" (100 ns per id) rather than a format spec (150 ns).
        span_context = span.get_span_context()
        self.trace_id_hex = "%032x" % span_context.trace_id  # noqa: UP031
        self.span_id_hex = "%016x" % span_context.span_id  # noqa: UP031
        # Kept by _worker/logs.py; zero for the many requests that log nothing worth counting.
        self.log_warnings = 0
        self.log_errors = 0
        self.log_first_error: str | None = None
        self.log_fields: dict[str, object] | None = None  # what its log records carry
        self.metrics = metrics
        self.measured: Started = (
            metrics.request_started(request_attributes)
            if request_attributes is not None
            else NOT_STARTED
        )

    # -- while the request runs ----------------------------------------------------------

    def record_exception(self, exc: BaseException) -> None:
        """Remember the first unhandled exception; the app's re-raises keep the original."""
        if self.exception is None:
            self.exception = exc

    def set_route(self, route: str | None, view: str = "") -> None:
        """Django resolved the URL: the route (if it has one) and the view's dotted path."""
        if route is not None:
            # Django's pattern for the site root is "", which says nothing on its own.
            route = route or "/"
            self.route = route
            self.attributes[HTTP_ROUTE] = route
        self.entry.route_resolved(route or "", view)

    def redact_path_secrets(self, secrets: tuple[str, ...]) -> None:
        """Django captured ``secrets`` from the path: ``url.path`` (on the event and on the board)
        shows them ``REDACTED``, and ``finish`` takes them out of every other attribute."""
        self.secrets = secrets
        path = self.path
        if path:
            redacted = self.attributes[URL_PATH] = redact_path(path, secrets)
            self.entry.path_redacted(redacted)

    @property
    def path(self) -> str:
        """``url.path`` as the event will carry it (redacted once Django resolved the URL)."""
        path = self.attributes.get(URL_PATH)
        if path is None:
            path = (getattr(self.span, "attributes", None) or {}).get(URL_PATH, "")
        return str(path)

    def query_started(self, sql: object) -> None:
        """A statement starts: a timeout or a dead worker's event names it (text only)."""
        self.sql_in_flight = sql
        self.entry.sql_started(str(sql))

    def record_query(self, sql: object, duration_ns: int) -> None:
        self.sql_in_flight = None
        self.db_query_count += 1
        self.db_duration_ns += duration_ns
        self.entry.sql_finished(self.db_query_count, self.db_duration_ns)
        if duration_ns > self.db_slowest_ns:
            self.db_slowest_ns = duration_ns
            self.db_slowest_sql = sql
        statements = self.db_statements
        if statements is None:
            self.db_statements = {sql: 1}
        else:
            statements[sql] = statements.get(sql, 0) + 1

    # -- the ways a request ends ---------------------------------------------------------

    def end_response(self, exc: BaseException | None = None, incomplete: bool = False) -> None:
        """The request thread is done with the request: end the event unless the watchdog did.

        Runs in the request's own thread, so it works on the event's attributes in place.
        """
        if self.finished:  # the watchdog sent it as a timeout: its entry is free again
            self._release_entry()
            return
        attributes = self.attributes
        if exc is not None:
            self.record_exception(exc)
            if self.headers_sent:
                incomplete = True
            else:
                self.status_code = 500  # what gunicorn will answer
        if incomplete:
            attributes[attr.WIDE_EVENT_RESPONSE_INCOMPLETE] = True
        self._add_cpu_time(attributes)
        attributes[attr.HTTP_RESPONSE_BODY_SIZE] = 0 if self.body_omitted else self.body_bytes
        self.finish(EventType.REQUEST, attributes)
        self._release_entry()

    def _release_entry(self) -> None:
        """Give the board entry back, once: a body's close may follow an exception's end."""
        entry, self.entry = self.entry, no_entry
        entry.finished()

    def end_rejected(self) -> None:
        """gunicorn answered the request itself (``Worker.handle_error``)."""
        self.finish(EventType.REQUEST, self.attributes)
        self._release_entry()

    def time_out(self, stack: str | None, answered: bool) -> bool:
        """End the event as a timeout, from the watchdog's thread; False if already ended.

        The request thread may still be adding attributes, so this works on a copy (``dict()``
        of a dict is atomic under the GIL). ``answered``: the worker answers the client a 500.
        """
        if self.finished:
            return False
        attributes = dict(self.attributes)
        attributes[attr.WIDE_EVENT_ELAPSED_MS] = round((time.monotonic() - self.started) * 1e3, 3)
        attributes[attr.WIDE_EVENT_DEADLINE_MS] = round((self.due - self.started) * 1e3, 3)
        if stack is not None:
            attributes[CODE_STACKTRACE] = stack
        if self.sql_in_flight is not None:
            attributes[DB_QUERY_TEXT] = str(self.sql_in_flight)[: self.sql_max_length]
        self._add_cpu_time_so_far(attributes)
        if answered and not self.headers_sent:
            attributes[HTTP_RESPONSE_STATUS_CODE] = 500
        if not self.finish(EventType.TIMEOUT, attributes):
            return False
        self.entry.event_out()
        return True

    def finish(
        self,
        event_type: str,
        attributes: dict[str, AttributeValue] | None = None,
        end_time_ns: int | None = None,
    ) -> bool:
        """The one place a worker's event ends; False if another caller already ended it."""
        if attributes is None:
            attributes = self.attributes
        with _end_lock:
            if self.finished:
                return False
            self.finished = True
        self.slot.add_attributes(attributes)
        if self.status_code:
            attributes[HTTP_RESPONSE_STATUS_CODE] = self.status_code
        if self.db_query_count:
            self._add_db_attributes(attributes)
        if self.log_warnings or self.log_errors:
            self._add_log_attributes(attributes)
        error = self._add_error_attributes(attributes)
        if self.secrets:
            scrub_secrets(self.secrets, attributes, getattr(self.span, "attributes", None))
        name = span_name(self.method, self.route) if self.route is not None else None
        self.entry.ending()
        duration_s = time.monotonic() - self.started
        finish_span(self.span, attributes, event_type, error, name=name, end_time_ns=end_time_ns)
        # After the span: finish_span gave a timeout its error.type.
        self.metrics.request_ended(self.measured, attributes, duration_s, self.span)
        return True

    def _add_cpu_time(self, attributes: dict[str, AttributeValue]) -> None:
        """The request's CPU time, read in its own thread as it ends."""
        attributes[attr.WIDE_EVENT_CPU_TIME_MS] = (time.thread_time_ns() - self.cpu_start_ns) / 1e6

    def _add_cpu_time_so_far(self, attributes: dict[str, AttributeValue]) -> None:
        """The request's CPU time until now, read from another thread (the watchdog's)."""
        cpu_ms = thread_cpu_ms(self.thread_id)
        if cpu_ms is not None:
            attributes[attr.WIDE_EVENT_CPU_TIME_MS] = round(cpu_ms - self.cpu_start_ns / 1e6, 3)

    # -- what the event says -------------------------------------------------------------

    @property
    def span_id(self) -> int:
        return self.span.get_span_context().span_id

    def describe(self) -> str:
        """The request in a few words, for a log line."""
        return f"{self.method} {self.path} (trace_id {self.trace_id_hex})"

    def _add_db_attributes(self, attributes: dict[str, AttributeValue]) -> None:
        attributes[attr.DJANGO_DB_QUERY_COUNT] = self.db_query_count
        attributes[attr.DJANGO_DB_DURATION_MS] = self.db_duration_ns / 1e6
        attributes[attr.DJANGO_DB_SLOWEST_QUERY_MS] = self.db_slowest_ns / 1e6
        attributes[attr.DJANGO_DB_SLOWEST_QUERY] = str(self.db_slowest_sql)[: self.sql_max_length]
        distinct = len(self.db_statements or ())
        attributes[attr.DJANGO_DB_DUPLICATE_QUERY_COUNT] = self.db_query_count - distinct

    def _add_log_attributes(self, attributes: dict[str, AttributeValue]) -> None:
        if self.log_warnings:
            attributes[attr.WIDE_EVENT_LOG_WARNING_COUNT] = self.log_warnings
        if self.log_errors:
            attributes[attr.WIDE_EVENT_LOG_ERROR_COUNT] = self.log_errors
        if self.log_first_error is not None:
            attributes[attr.WIDE_EVENT_LOG_FIRST_ERROR] = self.log_first_error

    def _add_error_attributes(self, attributes: dict[str, AttributeValue]) -> str | None:
        """Describe what went wrong, if anything; return the span status description."""
        exc = self.exception
        if exc is not None:
            attributes.update(exception_attributes(exc))
            type_name = attributes[ERROR_TYPE] = attributes[EXCEPTION_TYPE]
            return f"{type_name!s}: {exc}"
        if self.status_code >= 500:
            attributes.setdefault(ERROR_TYPE, str(self.status_code))
            return f"HTTP {self.status_code}"
        return None
