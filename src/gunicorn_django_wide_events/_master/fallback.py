"""The master's fallback: the event of a request whose worker died before sending it.

C code that holds the GIL (so that neither the watchdog nor a signal handler runs), a SIGKILL,
the OOM killer, a segfault: the worker is gone and its request's event with it. Its board slot
still says what it was doing. When gunicorn reaps such a worker, the master sends the event from
the slot, with the request's own trace and span ids: ``timeout`` when gunicorn killed the worker
for its timeout, ``crash`` otherwise, with ``error.type`` naming the signal or the exit code.

The master must not hold an exporter or a gRPC channel across forks, so the event is exported by
a short-lived child process: it builds a fresh exporter of the configured kind (gRPC or HTTP),
exports the one span through a throwaway tracer provider, and exits. gunicorn reaps it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.semconv.attributes.db_attributes import DB_QUERY_TEXT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD, HTTP_ROUTE
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    set_span_in_context,
)

from .. import _attributes as attr
from .._attributes import EventType, finish_span, span_name
from .._board import WorkerRequest
from .._export.processor import ExporterFactory, build_exporter

EXPORT_TIMEOUT_S: Final = 5.0


def exit_reason(status: int | None, killed_for_timeout: bool) -> tuple[str, str]:
    """The event type and ``error.type`` for a worker that ended with wait ``status``."""
    if killed_for_timeout:
        return EventType.TIMEOUT, "timeout"
    if status is None:
        return EventType.CRASH, "worker exited"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return EventType.CRASH, signal.Signals(number).name
        except ValueError:
            return EventType.CRASH, f"signal {number}"
    return EventType.CRASH, f"exit code {os.waitstatus_to_exitcode(status)}"


class FixedIds(IdGenerator):
    """Gives each span the ids the worker already gave it (and its trace, for a root span)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_span_id(self) -> int:
        return self.span_id

    def generate_trace_id(self) -> int:
        return self.trace_id


def fallback_attributes(
    request: WorkerRequest, slot: int, event_type: str, error_type: str, now: float
) -> dict[str, Any]:
    """Everything the board held of the request, as its event's attributes."""
    attributes: dict[str, Any] = {
        ERROR_TYPE: error_type,
        attr.WIDE_EVENT_TYPE: event_type,  # finish_span says it too; the name is chosen by it
        attr.GUNICORN_WORKER_ID: slot,
        attr.GUNICORN_WORKER_REQUESTS: request.requests,
        attr.WIDE_EVENT_ELAPSED_MS: round((now - request.started_at) * 1e3, 3),
        attr.WIDE_EVENT_REPORTED_BY: "master",
    }
    for key, value in (
        (HTTP_REQUEST_METHOD, request.method),
        (URL_PATH, request.path),
        (URL_QUERY, request.query),
        (HTTP_ROUTE, request.route),
        (attr.DJANGO_VIEW, request.view),
        (DB_QUERY_TEXT, request.sql),
    ):
        if value:
            attributes[key] = value
    if request.db_query_count:
        attributes[attr.DJANGO_DB_QUERY_COUNT] = request.db_query_count
        attributes[attr.DJANGO_DB_DURATION_MS] = request.db_duration_ns / 1e6
    return attributes


FallbackEvent = tuple[WorkerRequest, dict[str, Any], Resource]
"""A request from the board, its event's attributes, and its worker's resource."""


def export_spans(
    events: Sequence[FallbackEvent],
    exporter_types: Sequence[ExporterFactory],
    timeout_s: float = EXPORT_TIMEOUT_S,
) -> None:
    """In the exporting child: rebuild the requests' spans from the board and send them."""
    by_resource: dict[Resource, list[tuple[WorkerRequest, dict[str, Any]]]] = {}
    for request, attributes, resource in events:
        by_resource.setdefault(resource, []).append((request, attributes))
    for resource, requests in by_resource.items():
        ids = FixedIds()
        provider = TracerProvider(
            resource=resource, id_generator=ids, sampler=ALWAYS_ON, shutdown_on_exit=False
        )
        for exporter_type in exporter_types:
            exporter = build_exporter(exporter_type, timeout_s)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("gunicorn_django_wide_events")
        for request, attributes in requests:
            ids.trace_id = trace_id = int.from_bytes(request.trace_id, "big")
            ids.span_id = int.from_bytes(request.span_id, "big")
            parent_id = int.from_bytes(request.parent_span_id, "big")
            context = None
            if parent_id:
                parent = SpanContext(trace_id, parent_id, is_remote=True, trace_flags=TraceFlags(1))
                context = set_span_in_context(NonRecordingSpan(parent))
            span = tracer.start_span(
                request.method or "HTTP",
                context=context,
                kind=SpanKind.SERVER,
                start_time=int(request.started_at * 1e9),
            )
            finish_span(
                span,
                attributes,
                str(attributes[attr.WIDE_EVENT_TYPE]),
                error=str(attributes[ERROR_TYPE]),
                name=span_name(request.method or "HTTP", request.route or None),
            )
        provider.shutdown()


def send_from_child(
    events: Sequence[FallbackEvent],
    exporter_types: Sequence[ExporterFactory],
    inherited_fds: Sequence[int] = (),
    timeout_s: float = EXPORT_TIMEOUT_S,
) -> None:
    """Fork a child that exports the events and exits.

    gunicorn reaps it, or, once the master has exited, init. The child first closes
    ``inherited_fds`` (gunicorn's listeners): it may live for seconds on a slow collector, and
    a listener it kept open would take connections nobody accepts after the master is gone.
    """
    if os.fork():
        return
    code = 1
    try:
        for fd in inherited_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        export_spans(events, exporter_types, timeout_s)
        code = 0
    finally:
        os._exit(code)


class ExitStatuses:
    """Remembers the wait status of each child gunicorn's arbiter reaps.

    ``child_exit`` is not given the status, yet it tells a segfault from a SIGKILL from an exit
    code. The arbiter module's ``os`` is replaced by this proxy, which forwards everything and
    notes what ``waitpid`` returns; nothing outside ``gunicorn.arbiter`` is affected.
    """

    def __init__(self, real_os: Any) -> None:
        self._os = real_os
        self._statuses: dict[int, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._os, name)

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        wpid, status = self._os.waitpid(pid, options)
        if wpid:
            self._statuses[wpid] = status
            if len(self._statuses) > 1024:  # unclaimed ones (not workers): keep it small
                self._statuses.pop(next(iter(self._statuses)))
        return wpid, status

    def pop(self, pid: int) -> int | None:
        return self._statuses.pop(pid, None)
