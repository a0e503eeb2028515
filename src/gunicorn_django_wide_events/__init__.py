"""One OpenTelemetry wide event per request for Django apps served by gunicorn."""

from .__about__ import __version__
from ._config import Config
from ._instrumentor import WideEventsInstrumentor
from ._worker.fields import add_fields

__all__ = ["Config", "WideEventsInstrumentor", "__version__", "add_fields"]
