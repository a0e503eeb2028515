"""Attribute names of the wide event that this package owns: the public contract.

Standard names come from ``opentelemetry.semconv.attributes`` (stable modules only). The few
standard names used here whose semantic-convention module is still incubating are spelled out
below, so that an incubating module's churn cannot rename a field of the contract.
"""

from __future__ import annotations

from typing import Final

# Standard names whose semconv module is still incubating.
HTTP_REQUEST_BODY_SIZE: Final = "http.request.body.size"
HTTP_RESPONSE_BODY_SIZE: Final = "http.response.body.size"
ENDUSER_ID: Final = "enduser.id"

# What kind of event this is: one of the ``EventType`` values.
WIDE_EVENT_TYPE: Final = "wide_event.type"
WIDE_EVENT_CPU_TIME_MS: Final = "wide_event.cpu_time_ms"
"""CPU time the thread serving the request spent on it."""
WIDE_EVENT_QUEUE_TIME_MS: Final = "wide_event.queue_time_ms"
"""Time between the proxy's ``X-Request-Start`` stamp and gunicorn starting the request."""
WIDE_EVENT_RESPONSE_INCOMPLETE: Final = "wide_event.response_incomplete"
"""True when the body was not sent to the end: the client went away or the app failed mid-stream."""

DJANGO_VIEW: Final = "django.view"
DJANGO_URL_NAME: Final = "django.url_name"
DJANGO_DB_QUERY_COUNT: Final = "django.db.query_count"
DJANGO_DB_DURATION_MS: Final = "django.db.duration_ms"
DJANGO_DB_DUPLICATE_QUERY_COUNT: Final = "django.db.duplicate_query_count"
"""Queries whose statement text was already run by the same request: the N+1 smell."""
DJANGO_DB_SLOWEST_QUERY_MS: Final = "django.db.slowest_query_ms"
DJANGO_DB_SLOWEST_QUERY: Final = "django.db.slowest_query"
"""Statement text of the slowest query, never its parameters."""

GUNICORN_WORKER_CLASS: Final = "gunicorn.worker.class"
GUNICORN_WORKER_PID: Final = "gunicorn.worker.pid"


class EventType:
    """Values of ``wide_event.type``."""

    REQUEST: Final = "request"
    TIMEOUT: Final = "timeout"
    CRASH: Final = "crash"
