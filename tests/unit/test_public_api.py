"""The package's public API: exactly the documented names, and add_fields."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import gunicorn_django_wide_events
from gunicorn_django_wide_events import Config, WideEventsInstrumentor, add_fields
from gunicorn_django_wide_events._worker.event import RequestEvent, current_event

DOCUMENTED_API = {"Config", "WideEventsInstrumentor", "__version__", "add_fields"}


@pytest.fixture
def exporter_and_event() -> Iterator[tuple[InMemorySpanExporter, RequestEvent]]:
    """A RequestEvent on a local SDK span, set as the current event for the test."""
    provider = TracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer(__name__).start_span("GET", kind=SpanKind.SERVER)
    event = RequestEvent(span, "GET")
    token = current_event.set(event)
    try:
        yield exporter, event
    finally:
        current_event.reset(token)
        provider.shutdown()


def test_all_is_exactly_the_documented_api() -> None:
    """__all__ lists exactly Config, WideEventsInstrumentor, __version__ and add_fields."""
    assert set(gunicorn_django_wide_events.__all__) == DOCUMENTED_API
    assert len(gunicorn_django_wide_events.__all__) == len(DOCUMENTED_API)


@pytest.mark.parametrize("name", sorted(DOCUMENTED_API))
def test_every_exported_name_exists(name: str) -> None:
    """Every name in __all__ is an attribute of the package."""
    assert getattr(gunicorn_django_wide_events, name, None) is not None


def test_exported_objects_are_the_real_ones() -> None:
    """The exported names are the package's classes and function, and a version string."""
    from gunicorn_django_wide_events._config import Config as ConfigClass
    from gunicorn_django_wide_events._instrumentor import (
        WideEventsInstrumentor as InstrumentorClass,
    )
    from gunicorn_django_wide_events._worker.fields import add_fields as add_fields_function

    assert Config is ConfigClass
    assert add_fields is add_fields_function
    assert WideEventsInstrumentor is InstrumentorClass
    version = gunicorn_django_wide_events.__version__
    assert isinstance(version, str)
    assert version


def test_star_import_gives_exactly_the_api() -> None:
    """`from gunicorn_django_wide_events import *` binds exactly the documented names."""
    namespace: dict[str, object] = {}
    exec("from gunicorn_django_wide_events import *", namespace)  # noqa: S102
    assert set(namespace) - {"__builtins__"} == DOCUMENTED_API


def test_add_fields_outside_a_request_returns_false() -> None:
    """add_fields with no current event is a no-op returning False."""
    assert current_event.get() is None
    assert add_fields({"app.tenant": "acme"}) is False


def test_add_fields_inside_a_request_lands_on_the_span(
    exporter_and_event: tuple[InMemorySpanExporter, RequestEvent],
) -> None:
    """add_fields with a current event returns True and the fields reach the finished span."""
    exporter, event = exporter_and_event
    assert add_fields({"app.tenant": "acme", "app.items": 3}) is True
    assert add_fields({"app.flags": ["a", "b"], "app.tenant": "globex"}) is True
    assert exporter.get_finished_spans() == ()
    event.finish("request")
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["app.tenant"] == "globex"
    assert attributes["app.items"] == 3
    assert attributes["app.flags"] == ("a", "b")


def test_add_fields_after_the_request_returns_false(
    exporter_and_event: tuple[InMemorySpanExporter, RequestEvent],
) -> None:
    """Once the current event is reset, add_fields returns False again."""
    _exporter, event = exporter_and_event
    token = current_event.set(None)
    try:
        assert add_fields({"app.late": True}) is False
    finally:
        current_event.reset(token)
    assert "app.late" not in event.attributes
