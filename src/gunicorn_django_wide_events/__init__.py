"""One OpenTelemetry wide event per request for Django apps served by gunicorn.

The API is imported lazily: ``opentelemetry-instrument`` loads ``_launch_check`` (and a gunicorn
config file ``auto``) before the SDK is configured, and a bad ``OTEL_*`` value must be caught
there before any module of the SDK reads it at import (see ``_otel_environ.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .__about__ import __version__
from ._config import Config

if TYPE_CHECKING:
    from ._instrumentor import WideEventsInstrumentor
    from ._worker.fields import add_fields

__all__ = ["Config", "WideEventsInstrumentor", "__version__", "add_fields"]


def __getattr__(name: str) -> Any:
    if name == "WideEventsInstrumentor":
        from ._instrumentor import WideEventsInstrumentor  # noqa: PLC0415

        return WideEventsInstrumentor
    if name == "add_fields":
        from ._worker.fields import add_fields  # noqa: PLC0415

        return add_fields
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
