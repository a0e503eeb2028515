"""Set everything up from a gunicorn config file: ``import gunicorn_django_wide_events.auto``.

For servers started without ``opentelemetry-instrument``: importing this module does what that
wrapper does (configure the OpenTelemetry SDK from the ``OTEL_*`` variables and load every
installed instrumentor, this package's included). gunicorn reads its config file in the master
before any worker is forked, which is exactly when this has to happen. Under
``opentelemetry-instrument`` the import changes nothing, so a config file can keep the line.
"""

from __future__ import annotations

from ._otel_environ import otel_environ_or_exit

# Before anything imports the SDK, which reads some OTEL_* values at import: its configuration
# would only log a traceback for a bad one and go on without events.
otel_environ_or_exit()

from ._instrumentor import WideEventsInstrumentor  # noqa: E402

if not WideEventsInstrumentor().is_instrumented_by_opentelemetry:
    from opentelemetry.instrumentation.auto_instrumentation import initialize

    initialize()
