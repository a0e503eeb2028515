"""RequestEvent: gathered state reaches one real SDK span, exactly once."""

from __future__ import annotations

import threading

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from gunicorn_django_wide_events._attributes import exception_type_name
from gunicorn_django_wide_events._worker.event import RequestEvent
from tests.unit.worker.tracing import Tracing


class CustomError(Exception):
    """An exception type defined outside builtins."""


def raised(exc: BaseException) -> BaseException:
    """``exc`` after being raised and caught, so it carries a traceback."""
    try:
        raise exc
    except BaseException as caught:
        return caught


# --- basic finish --------------------------------------------------------------------------


def test_finish_exports_one_server_span_with_event_type(tracing: Tracing) -> None:
    """finish() returns True and exports one SERVER span carrying wide_event.type."""
    event = tracing.event()
    assert tracing.finished() == ()
    assert event.finish("request") is True
    span = tracing.only_span()
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET"
    assert span.attributes is not None
    assert span.attributes["wide_event.type"] == "request"
    assert event.finished is True


def test_initial_and_added_attributes_reach_the_span(tracing: Tracing) -> None:
    """Attributes given at construction and added later are all on the finished span."""
    event = tracing.event(**{"url.path": "/items/"})
    event.attributes["app.tenant"] = "acme"
    event.finish("timeout")
    attributes = dict(tracing.only_span().attributes or {})
    assert attributes["url.path"] == "/items/"
    assert attributes["app.tenant"] == "acme"
    assert attributes["wide_event.type"] == "timeout"


def test_status_code_attribute_when_set(tracing: Tracing) -> None:
    """A non-zero status_code becomes http.response.status_code; 2xx leaves status UNSET."""
    event = tracing.event()
    event.status_code = 200
    event.finish("request")
    span = tracing.only_span()
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in span.attributes


def test_no_status_code_attribute_when_unknown(tracing: Tracing) -> None:
    """A status_code of 0 (no response) sets no http.response.status_code."""
    tracing.event().finish("crash")
    assert "http.response.status_code" not in (tracing.only_span().attributes or {})


def test_end_time_is_used(tracing: Tracing) -> None:
    """finish(end_time_ns=...) ends the span at that time."""
    span = tracing.tracer.start_span("GET", kind=SpanKind.SERVER, start_time=1_000)
    RequestEvent(span, "GET").finish("timeout", end_time_ns=5_000)
    finished = tracing.only_span()
    assert finished.start_time == 1_000
    assert finished.end_time == 5_000


# --- database ------------------------------------------------------------------------------


def test_db_attributes_after_queries(tracing: Tracing) -> None:
    """Queries give count, total and slowest duration, slowest text and duplicate count."""
    event = tracing.event()
    event.record_query("SELECT 1", 2_000_000)
    event.record_query("SELECT * FROM items", 5_000_000)
    event.record_query("SELECT 1", 1_000_000)
    event.record_query("SELECT 1", 500_000)
    event.finish("request")
    attributes = dict(tracing.only_span().attributes or {})
    assert attributes["django.db.query_count"] == 4
    assert attributes["django.db.duration_ms"] == pytest.approx(8.5)
    assert attributes["django.db.slowest_query_ms"] == pytest.approx(5.0)
    assert attributes["django.db.slowest_query"] == "SELECT * FROM items"
    assert attributes["django.db.duplicate_query_count"] == 2


def test_no_db_attributes_without_queries(tracing: Tracing) -> None:
    """Without record_query calls there is no django.db.* attribute."""
    tracing.event().finish("request")
    assert not [key for key in tracing.only_span().attributes or {} if key.startswith("django.db")]


def test_slowest_query_text_truncated(tracing: Tracing) -> None:
    """The slowest query text is cut to sql_max_length characters."""
    sql = "SELECT id, name, price, description FROM catalogue_item WHERE id = %s"
    event = tracing.event()
    event.sql_max_length = 20
    event.record_query(sql, 10)
    event.finish("request")
    assert (tracing.only_span().attributes or {})["django.db.slowest_query"] == sql[:20]


def test_first_of_equally_slow_queries_is_the_slowest(tracing: Tracing) -> None:
    """Among queries of equal duration the first is reported as slowest."""
    event = tracing.event()
    event.record_query("SELECT a", 0)
    event.record_query("SELECT b", 0)
    event.finish("request")
    attributes = dict(tracing.only_span().attributes or {})
    assert attributes["django.db.slowest_query"] == "SELECT a"
    assert attributes["django.db.slowest_query_ms"] == 0.0
    assert attributes["django.db.duplicate_query_count"] == 0


def test_non_string_sql_is_stringified(tracing: Tracing) -> None:
    """A statement object (like psycopg's sql.Composed) is reported through str()."""

    class Statement:
        def __str__(self) -> str:
            return "SELECT composed"

    statement = Statement()
    event = tracing.event()
    event.record_query(statement, 3)
    event.record_query(statement, 1)
    event.finish("request")
    attributes = dict(tracing.only_span().attributes or {})
    assert attributes["django.db.slowest_query"] == "SELECT composed"
    assert attributes["django.db.duplicate_query_count"] == 1


def test_record_query_clears_sql_in_flight(tracing: Tracing) -> None:
    """record_query resets sql_in_flight, the statement a timeout would blame."""
    event = tracing.event()
    event.sql_in_flight = "SELECT pg_sleep(10)"
    event.record_query("SELECT pg_sleep(10)", 1)
    assert event.sql_in_flight is None
    event.finish("request")


# --- errors --------------------------------------------------------------------------------


def test_exception_attributes_and_error_status(tracing: Tracing) -> None:
    """record_exception gives error.type, exception.* attributes and ERROR status."""
    event = tracing.event()
    event.record_exception(raised(ValueError("boom")))
    event.status_code = 500
    event.finish("request")
    span = tracing.only_span()
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "ValueError"
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == "boom"
    stacktrace = attributes["exception.stacktrace"]
    assert isinstance(stacktrace, str)
    assert stacktrace.startswith("Traceback (most recent call last):")
    assert "ValueError: boom" in stacktrace
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: boom"


def test_first_exception_is_kept(tracing: Tracing) -> None:
    """A later record_exception does not replace the first exception."""
    event = tracing.event()
    first = raised(KeyError("first"))
    event.record_exception(first)
    event.record_exception(raised(RuntimeError("second")))
    assert event.exception is first
    event.finish("request")
    attributes = dict(tracing.only_span().attributes or {})
    assert attributes["error.type"] == "KeyError"
    assert attributes["exception.message"] == "'first'"


def test_non_builtin_exception_type_is_module_qualified(tracing: Tracing) -> None:
    """An exception type outside builtins is named module.QualName."""
    event = tracing.event()
    event.record_exception(raised(CustomError("custom")))
    event.finish("request")
    expected = f"{__name__}.CustomError"
    assert exception_type_name(CustomError()) == expected
    assert (tracing.only_span().attributes or {})["error.type"] == expected


def test_exception_without_traceback(tracing: Tracing) -> None:
    """An exception never raised still gives a stacktrace attribute naming it."""
    event = tracing.event()
    event.record_exception(ValueError("never raised"))
    event.finish("request")
    stacktrace = (tracing.only_span().attributes or {})["exception.stacktrace"]
    assert stacktrace == "ValueError: never raised\n"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_without_exception_is_an_error(tracing: Tracing, status: int) -> None:
    """A 5xx response without exception gives error.type '<status>' and ERROR status."""
    event = tracing.event()
    event.status_code = status
    event.finish("request")
    span = tracing.only_span()
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == str(status)
    assert "exception.type" not in attributes
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == f"HTTP {status}"


def test_5xx_keeps_an_error_type_already_set(tracing: Tracing) -> None:
    """A 5xx event whose error.type was set earlier keeps it."""
    event = tracing.event(**{"error.type": "timeout"})
    event.status_code = 504
    event.finish("request")
    span = tracing.only_span()
    assert (span.attributes or {})["error.type"] == "timeout"
    assert span.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("status", [400, 401, 404, 429, 499])
def test_4xx_is_not_an_error(tracing: Tracing, status: int) -> None:
    """A 4xx response leaves the status UNSET and sets no error.type."""
    event = tracing.event()
    event.status_code = status
    event.finish("request")
    span = tracing.only_span()
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in (span.attributes or {})
    assert (span.attributes or {})["http.response.status_code"] == status


# --- route and idempotence -----------------------------------------------------------------


def test_set_route_renames_span(tracing: Tracing) -> None:
    """set_route names the span '<method> <route>' and sets http.route."""
    event = tracing.event()
    event.set_route("items/<int:id>/")
    event.finish("request")
    span = tracing.only_span()
    assert span.name == "GET items/<int:id>/"
    assert (span.attributes or {})["http.route"] == "items/<int:id>/"


def test_no_route_keeps_span_name(tracing: Tracing) -> None:
    """set_route(None) (nothing resolved) leaves the span name and sets no http.route."""
    event = tracing.event("POST")
    event.set_route(None)
    event.finish("request")
    span = tracing.only_span()
    assert span.name == "POST"
    assert "http.route" not in (span.attributes or {})


def test_root_route_is_reported_as_slash(tracing: Tracing) -> None:
    """Django's empty pattern for the site root becomes http.route '/'."""
    event = tracing.event("GET")
    event.set_route("")
    event.finish("request")
    span = tracing.only_span()
    assert span.name == "GET /"
    assert (span.attributes or {})["http.route"] == "/"


def test_second_finish_returns_false_and_exports_nothing(tracing: Tracing) -> None:
    """A second finish() returns False and exports no further span."""
    event = tracing.event()
    assert event.finish("request") is True
    event.status_code = 503
    assert event.finish("timeout") is False
    span = tracing.only_span()
    assert (span.attributes or {})["wide_event.type"] == "request"
    assert span.status.status_code is StatusCode.UNSET


def test_concurrent_finish_exports_exactly_one_span(tracing: Tracing) -> None:
    """Two threads finishing the same event at once: one wins, one span is exported."""
    rounds = 300
    barrier = threading.Barrier(2, timeout=60)
    results: list[list[bool]] = [[] for _ in range(rounds)]
    events = [tracing.event() for _ in range(rounds)]

    def finisher(event_type: str) -> None:
        for index, event in enumerate(events):
            barrier.wait()
            results[index].append(event.finish(event_type))

    threads = [
        threading.Thread(target=finisher, args=(event_type,), name=f"finisher-{event_type}")
        for event_type in ("request", "timeout")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()

    assert all(sorted(pair) == [False, True] for pair in results)
    spans = tracing.finished()
    assert len(spans) == rounds
    assert {span.context.span_id for span in spans} == {
        event.span.get_span_context().span_id for event in events
    }
