"""WideEventsInstrumentor: wires the pieces together, nothing more.

Loaded by ``opentelemetry-instrument`` through the ``opentelemetry_instrumentor`` entry point,
in the gunicorn master, after the SDK is configured and before gunicorn reads its config.
Each step of ``_instrument`` has its mirror in ``_uninstrument``, undone in reverse order.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

# mypy does not see the class through the package's namespace layout.
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from ._config import Config, config_from_environ_or_exit
from ._export.handover import ForkSafeExport
from ._export.log_routing import quiet_exporter_loggers
from ._gunicorn import patch_gunicorn, unpatch_gunicorn
from ._hooks import GunicornHooks
from ._worker.django import instrument_django, uninstrument_django
from ._worker.django_db import instrument_db, uninstrument_db
from ._worker.http import SecretNames
from ._worker.logs import instrument_logging, uninstrument_logging


class WideEventsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """One wide event per request for Django served by gunicorn.

    ``opentelemetry-instrument`` instruments it with the ``WIDE_EVENTS_*`` variables. To set
    the package up from code instead (a gunicorn config file, read in the master before any
    worker is forked), give it a ``Config``; under ``opentelemetry-instrument`` this replaces
    the settings read from the environment::

        # gunicorn.conf.py
        from gunicorn_django_wide_events import Config, WideEventsInstrumentor

        WideEventsInstrumentor().instrument(config=Config(sql_max_length=512))

    Args (to ``instrument``):
        config: settings to use instead of reading the ``WIDE_EVENTS_*`` variables.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("django >= 4.2", "gunicorn >= 23")

    def instrument(self, **kwargs: Any) -> None:
        # The SDK's instrument() does nothing when already instrumented; settings given in code
        # after opentelemetry-instrument ran are meant to win.
        if isinstance(kwargs.get("config"), Config) and self.is_instrumented_by_opentelemetry:
            self.uninstrument()
        super().instrument(**kwargs)

    def _instrument(self, **kwargs: Any) -> None:
        config = kwargs.get("config") or config_from_environ_or_exit()
        quiet_exporter_loggers()
        export = ForkSafeExport(config.wire_encoder, config.console_format)
        patch_gunicorn(GunicornHooks(config, export))
        instrument_django(config.capture_user_id, SecretNames(config.redact_query_keys))
        instrument_db()
        instrument_logging()

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstrument_logging()
        uninstrument_db()
        uninstrument_django()
        unpatch_gunicorn()
