"""WideEventsInstrumentor: wires the pieces together, nothing more.

Loaded by ``opentelemetry-instrument`` through the ``opentelemetry_instrumentor`` entry point,
in the gunicorn master, after the SDK is configured and before gunicorn reads its config.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

# mypy does not see the class through the package's namespace layout.
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from . import _gunicorn as server
from ._config import config_from_environ_or_exit
from ._export.handover import ForkSafeExport, quiet_exporter_loggers
from ._hooks import GunicornHooks
from ._worker import django as django_request
from ._worker import django_db, rejected


class WideEventsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """One wide event per request for Django served by gunicorn.

    Args (to ``instrument``):
        config: settings to use instead of reading the ``WIDE_EVENTS_*`` variables.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("django >= 4.2", "gunicorn >= 23")

    def _instrument(self, **kwargs: Any) -> None:
        config = kwargs.get("config") or config_from_environ_or_exit()
        hooks = GunicornHooks(config, ForkSafeExport(config.wire_encoder))
        quiet_exporter_loggers()
        server.attach_to_arbiter(hooks)
        rejected.watch_error_responses()
        django_request.instrument_django(config.capture_user_id)
        django_db.instrument_db()

    def _uninstrument(self, **kwargs: Any) -> None:
        django_db.uninstrument_db()
        django_request.uninstrument_django()
        rejected.unwatch_error_responses()
        server.detach_from_arbiter()
