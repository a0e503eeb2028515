"""Set everything up from a gunicorn config file: ``import gunicorn_django_wide_events.auto``.

For servers started without ``opentelemetry-instrument``: importing this module does what that
wrapper does (configure the OpenTelemetry SDK from the ``OTEL_*`` variables and load every
installed instrumentor, this package's included). gunicorn reads its config file in the master
before any worker is forked, which is exactly when this has to happen. Under
``opentelemetry-instrument`` the import changes nothing, so a config file can keep the line.
"""

from __future__ import annotations

from ._instrumentor import WideEventsInstrumentor

if not WideEventsInstrumentor().is_instrumented_by_opentelemetry:
    from opentelemetry.instrumentation.auto_instrumentation import initialize

    initialize()
