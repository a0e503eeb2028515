"""One OpenTelemetry wide event per request for Django apps served by gunicorn."""

from .__about__ import __version__
from .config import Config
from .fields import add_fields
from .instrumentor import WideEventsInstrumentor

__all__ = ["Config", "WideEventsInstrumentor", "__version__", "add_fields"]
