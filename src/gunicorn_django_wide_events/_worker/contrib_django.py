"""The contrib Django instrumentation steps aside: the wide event is the request's span.

``opentelemetry-bootstrap -a install`` installs ``opentelemetry-instrumentation-django``, whose
middleware opens a span of its own inside ours and makes it current. Attributes the app sets
through the plain API would then land on that inner span instead of the event, and every
request would pay for two spans. So once gunicorn starts (all instrumentors are loaded by
then, whatever their order) its middleware is taken out again, before Django builds its
middleware chain. Database, HTTP-client and other instrumentations are untouched: their spans
are children of the event.
"""

from __future__ import annotations

import importlib

from .._guard import logger


def retire_contrib_django_spans() -> None:
    """Uninstrument ``DjangoInstrumentor`` if it is active."""
    try:
        module = importlib.import_module("opentelemetry.instrumentation.django")
    except ImportError:
        return
    instrumentor = module.DjangoInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        return
    instrumentor.uninstrument()
    logger.info(
        "gunicorn-django-wide-events: opentelemetry-instrumentation-django's request spans "
        "are replaced by wide events"
    )
