"""The worker's HTTP server metrics: what a request's start and end record, and where nothing is.

On a local SDK meter provider and tracer (``metering`` and ``tracing`` fixtures), never the
global ones, except where ``request_metrics_for`` is asked what the global one is.
"""

from __future__ import annotations

import threading

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from gunicorn_django_wide_events._worker import metrics as worker_metrics
from gunicorn_django_wide_events._worker.event import RequestEvent
from gunicorn_django_wide_events._worker.metrics import (
    DURATION_BUCKETS,
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_DURATION,
    NOT_STARTED,
    RequestMetrics,
    no_request_metrics,
    request_metrics_for,
)
from tests.unit.worker.metering import Metering
from tests.unit.worker.tracing import SQL_MAX, Tracing

START = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "network.protocol.version": "1.1",
    "url.path": "/items/7/",
    "url.query": "page=2",
    "client.address": "127.0.0.1",
}
SEMCONV_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


@pytest.fixture
def recorder(metering: Metering) -> RequestMetrics:
    return RequestMetrics(metering.provider.get_meter("test"))


def test_a_request_is_one_duration_point_of_the_stable_attributes_only(
    recorder: RequestMetrics, metering: Metering
) -> None:
    """Method, scheme, protocol version, route and status; never the path, query or client."""
    started = recorder.request_started(START)
    recorder.request_ended(
        started,
        {"http.route": "items/<int:id>/", "http.response.status_code": 200, "url.path": "/x"},
        0.042,
    )
    (point,) = metering.points(HTTP_SERVER_REQUEST_DURATION)
    assert dict(point.attributes) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "http.route": "items/<int:id>/",
        "http.response.status_code": 200,
    }
    assert point.count == 1
    assert point.sum == pytest.approx(0.042)
    assert tuple(point.explicit_bounds) == SEMCONV_BUCKETS == DURATION_BUCKETS
    assert point.bucket_counts[SEMCONV_BUCKETS.index(0.05)] == 1


def test_an_error_point_carries_error_type(recorder: RequestMetrics, metering: Metering) -> None:
    started = recorder.request_started(START)
    recorder.request_ended(
        started, {"http.response.status_code": 500, "error.type": "RuntimeError"}, 0.001
    )
    (point,) = metering.points(HTTP_SERVER_REQUEST_DURATION)
    assert point.attributes["error.type"] == "RuntimeError"
    assert "http.route" not in point.attributes


def test_active_requests_count_from_start_to_end_by_method_and_scheme(
    recorder: RequestMetrics, metering: Metering
) -> None:
    """Active while in flight, by method and scheme only; back to zero once ended."""
    first = recorder.request_started(START)
    second = recorder.request_started({**START, "http.request.method": "POST"})
    active = metering.by_attributes(HTTP_SERVER_ACTIVE_REQUESTS)
    get = frozenset({("http.request.method", "GET"), ("url.scheme", "http")})
    post = frozenset({("http.request.method", "POST"), ("url.scheme", "http")})
    assert {key: point.value for key, point in active.items()} == {get: 1, post: 1}
    recorder.request_ended(first, {}, 0.01)
    recorder.request_ended(second, {}, 0.01)
    active = metering.by_attributes(HTTP_SERVER_ACTIVE_REQUESTS)
    assert {key: point.value for key, point in active.items()} == {get: 0, post: 0}


def test_requests_of_many_threads_leave_no_active_request(
    recorder: RequestMetrics, metering: Metering
) -> None:
    """gthread workers start and end requests at once: no count is lost on the way."""

    def serve() -> None:
        for _ in range(2000):
            recorder.request_ended(recorder.request_started(START), {}, 0.001)

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (active,) = metering.points(HTTP_SERVER_ACTIVE_REQUESTS)
    assert active.value == 0
    (duration,) = metering.points(HTTP_SERVER_REQUEST_DURATION)
    assert duration.count == 8000


def test_a_recorder_that_fails_never_breaks_the_request(
    recorder: RequestMetrics, fresh_reports: None
) -> None:
    """Odd attributes are the recorder's problem, logged once: the request goes on."""
    started = recorder.request_started({"http.request.method": ["not", "hashable"]})  # type: ignore[dict-item]
    assert started is NOT_STARTED
    recorder.request_ended(started, {}, 0.01)


def test_no_recorder_records_nothing() -> None:
    assert no_request_metrics.request_started(START) is NOT_STARTED
    assert no_request_metrics.request_ended(NOT_STARTED, {}, 0.01) is None


def test_nothing_is_recorded_where_nothing_exports_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No SDK meter provider, or one nothing exports (OTEL_METRICS_EXPORTER=none): no-op."""
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    try:
        monkeypatch.setattr(worker_metrics.metrics, "get_meter_provider", lambda: provider)
        assert request_metrics_for(exported=False) is no_request_metrics
        assert isinstance(request_metrics_for(exported=True), RequestMetrics)
        monkeypatch.setattr(worker_metrics.metrics, "get_meter_provider", NoOpMeterProvider)
        assert request_metrics_for(exported=True) is no_request_metrics
    finally:
        provider.shutdown()


# --- through RequestEvent -----------------------------------------------------------------


def measured_event(tracing: Tracing, recorder: RequestMetrics) -> RequestEvent:
    span = tracing.tracer.start_span("GET")
    return RequestEvent(
        span, "GET", sql_max_length=SQL_MAX, metrics=recorder, request_attributes=START
    )


def test_an_event_is_measured_once_however_often_it_ends(
    tracing: Tracing, recorder: RequestMetrics, metering: Metering
) -> None:
    """The watchdog's timeout and the request's own end race: one point, one active less."""
    event = measured_event(tracing, recorder)
    event.set_route("items/<int:id>/")
    assert event.time_out(stack=None, answered=True) is True
    event.end_response()
    event.end_response()
    (point,) = metering.points(HTTP_SERVER_REQUEST_DURATION)
    assert point.count == 1
    assert point.attributes["error.type"] == "timeout"
    assert point.attributes["http.response.status_code"] == 500
    assert point.attributes["http.route"] == "items/<int:id>/"
    (active,) = metering.points(HTTP_SERVER_ACTIVE_REQUESTS)
    assert active.value == 0


def test_an_exception_ends_the_event_and_its_active_request(
    tracing: Tracing, recorder: RequestMetrics, metering: Metering
) -> None:
    event = measured_event(tracing, recorder)
    event.end_response(ValueError("boom"))
    (point,) = metering.points(HTTP_SERVER_REQUEST_DURATION)
    assert point.attributes["error.type"] == "ValueError"
    assert point.attributes["http.response.status_code"] == 500
    (active,) = metering.points(HTTP_SERVER_ACTIVE_REQUESTS)
    assert active.value == 0


def test_a_duration_point_links_to_its_event_in_an_exemplar(
    tracing: Tracing, recorder: RequestMetrics, metering: Metering
) -> None:
    """Ended from another thread than the request's (the watchdog's), the exemplar is the
    event's span all the same."""
    event = measured_event(tracing, recorder)
    ender = threading.Thread(target=event.time_out, args=(None, False))
    ender.start()
    ender.join()
    (point,) = metering.points(HTTP_SERVER_REQUEST_DURATION)
    (exemplar,) = point.exemplars
    context = event.span.get_span_context()
    assert (exemplar.trace_id, exemplar.span_id) == (context.trace_id, context.span_id)


def test_durations_are_recorded_in_batches_and_all_of_them_at_each_collection(
    recorder: RequestMetrics, metering: Metering
) -> None:
    """A batch's last request records the batch; a collection records what is left first, so
    no collection ever misses a request that ended before it."""
    ended = {"http.route": "ok/", "http.response.status_code": 200}
    for _ in range(worker_metrics.DURATIONS_PER_BATCH - 1):
        recorder.request_ended(recorder.request_started(START), ended, 0.01)
    assert not recorder._duration._targets  # nothing recorded yet: the batch is not full
    recorder.request_ended(recorder.request_started(START), ended, 0.01)
    assert recorder._duration._targets  # the batch's last request recorded it
    for _ in range(3):
        recorder.request_ended(recorder.request_started(START), ended, 0.01)

    (point,) = metering.points(HTTP_SERVER_REQUEST_DURATION)
    assert point.count == worker_metrics.DURATIONS_PER_BATCH + 3
    assert recorder._ended == []
