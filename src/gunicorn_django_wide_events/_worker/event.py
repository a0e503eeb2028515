"""RequestEvent: the state of one request's wide event, finished exactly once.

Everything gathered while a request runs goes into one plain dict and reaches the span in one
call when the event finishes (``add_trusted`` on the package's own span, see ``server_span.py``;
``set_attributes`` on any other). ``finish`` is idempotent and may race another thread (the
watchdog), so it decides under a lock which caller owns the ending.
"""

from __future__ import annotations

import threading
import traceback
from contextvars import ContextVar
from typing import Final

from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from .. import _attributes as attr
from .._attributes import EventType, exception_type_name
from .slot import NoSlot, WorkerSlot, no_slot
from .span import ServerSpan

_finish_lock: Final = threading.Lock()

current_event: ContextVar[RequestEvent | None] = ContextVar(
    "gunicorn_django_wide_events.current_event", default=None
)
"""The event of the request this thread (or greenlet) is serving, if any."""

exception_left_to_gunicorn: ContextVar[BaseException | None] = ContextVar(
    "gunicorn_django_wide_events.exception_left_to_gunicorn", default=None
)
"""An app exception already on an event, which gunicorn will answer with a 500 of its own."""


class RequestEvent:
    """One request's wide event: a SERVER span plus the attributes gathered for it."""

    __slots__ = (
        "attributes",
        "db_duration_ns",
        "db_query_count",
        "db_slowest_ns",
        "db_slowest_sql",
        "db_statements",
        "exception",
        "finished",
        "method",
        "route",
        "slot",
        "span",
        "sql_in_flight",
        "status_code",
    )

    def __init__(
        self,
        span: Span,
        method: str,
        attributes: dict[str, AttributeValue],
        slot: WorkerSlot | NoSlot = no_slot,
    ) -> None:
        self.span = span
        self.slot = slot
        self.method = method
        self.attributes = attributes
        self.route: str | None = None
        self.status_code = 0
        self.exception: BaseException | None = None
        self.finished = False
        self.sql_in_flight: object = None
        self.db_query_count = 0
        self.db_duration_ns = 0
        self.db_slowest_ns = -1
        self.db_slowest_sql: object = None
        self.db_statements: dict[object, int] | None = None

    def record_exception(self, exc: BaseException) -> None:
        """Remember the first unhandled exception; the app's re-raises keep the original."""
        if self.exception is None:
            self.exception = exc

    def query_started(self, sql: object) -> None:
        """A statement starts: a timeout or a dead worker's event names it (text only)."""
        self.sql_in_flight = sql
        self.slot.sql_started(str(sql))

    def record_query(self, sql: object, duration_ns: int) -> None:
        self.sql_in_flight = None
        self.slot.sql_finished()
        self.db_query_count += 1
        self.db_duration_ns += duration_ns
        if duration_ns > self.db_slowest_ns:
            self.db_slowest_ns = duration_ns
            self.db_slowest_sql = sql
        statements = self.db_statements
        if statements is None:
            self.db_statements = {sql: 1}
        else:
            statements[sql] = statements.get(sql, 0) + 1

    def finish(self, event_type: str, sql_max_length: int, end_time_ns: int | None = None) -> bool:
        """End the span as an event of ``event_type``; False if another caller already did.

        A ``timeout`` or ``crash`` is finished by another thread while the request thread may
        still add attributes, so it works on a copy (``dict()`` of a dict is atomic under the GIL).
        """
        with _finish_lock:
            if self.finished:
                return False
            self.finished = True
        attributes = self.attributes if event_type == EventType.REQUEST else dict(self.attributes)
        attributes[attr.WIDE_EVENT_TYPE] = event_type
        if self.status_code:
            attributes[HTTP_RESPONSE_STATUS_CODE] = self.status_code
        if self.db_query_count:
            self._add_db_attributes(attributes, sql_max_length)
        error = self._add_error_attributes(attributes)
        if event_type != EventType.REQUEST:
            attributes.setdefault(ERROR_TYPE, event_type)
            error = error or event_type
        span = self.span
        if isinstance(span, ServerSpan):
            span.add_trusted(attributes)
        else:
            span.set_attributes(attributes)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        if self.route is not None:
            span.update_name(f"{self.method} {self.route}")
        span.end(end_time_ns)
        return True

    def _add_db_attributes(self, attributes: dict[str, AttributeValue], max_length: int) -> None:
        attributes[attr.DJANGO_DB_QUERY_COUNT] = self.db_query_count
        attributes[attr.DJANGO_DB_DURATION_MS] = self.db_duration_ns / 1e6
        attributes[attr.DJANGO_DB_SLOWEST_QUERY_MS] = self.db_slowest_ns / 1e6
        attributes[attr.DJANGO_DB_SLOWEST_QUERY] = str(self.db_slowest_sql)[:max_length]
        distinct = len(self.db_statements or ())
        attributes[attr.DJANGO_DB_DUPLICATE_QUERY_COUNT] = self.db_query_count - distinct

    def _add_error_attributes(self, attributes: dict[str, AttributeValue]) -> str | None:
        """Describe what went wrong, if anything; return the span status description."""
        exc = self.exception
        if exc is not None:
            type_name = exception_type_name(exc)
            attributes[ERROR_TYPE] = type_name
            attributes[EXCEPTION_TYPE] = type_name
            attributes[EXCEPTION_MESSAGE] = str(exc)
            attributes[EXCEPTION_STACKTRACE] = "".join(traceback.format_exception(exc))
            return f"{type_name}: {exc}"
        if self.status_code >= 500:
            attributes.setdefault(ERROR_TYPE, str(self.status_code))
            return f"HTTP {self.status_code}"
        return None

    def set_route(self, route: str | None) -> None:
        if route is None:
            return
        # Django's pattern for the site root is "", which says nothing on its own.
        route = route or "/"
        self.route = route
        self.attributes[HTTP_ROUTE] = route
