"""LightHistogram records what the SDK's own Histogram.record would, views and readers included.

Each test records the same measurements through the SDK's path (one histogram) and the light
one (a twin histogram on the same provider), then compares what the readers collected. Also
pinned: the SDK internals the light path reads (see _worker/histogram.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

from gunicorn_django_wide_events._worker.histogram import LightHistogram, TrustedMeasurement
from tests.unit.worker.metering import Metering

ATTRIBUTES: list[dict[str, Any]] = [
    {"http.route": "a/", "http.response.status_code": 200},
    {"http.route": "b/", "http.response.status_code": 200},
    {"http.route": "a/", "http.response.status_code": 500, "error.type": "RuntimeError"},
]
VALUES = [0.001, 0.02, 0.3, 0.3, 4.0, 12.0, 0.0]


def provider_with(*readers: InMemoryMetricReader, views: tuple[View, ...] = ()) -> MeterProvider:
    return MeterProvider(metric_readers=readers, views=views, shutdown_on_exit=False)


@pytest.fixture
def twins() -> Iterator[tuple[Metering, Histogram, LightHistogram]]:
    """``stock`` and ``light`` histograms on one provider, both named after their path."""
    reader = InMemoryMetricReader()
    provider = provider_with(reader)
    meter = provider.get_meter("test")
    stock = meter.create_histogram("stock", unit="s")
    light = LightHistogram(meter.create_histogram("light", unit="s"))
    yield Metering(provider, reader), stock, light
    provider.shutdown()


def record_both(stock: Any, light: LightHistogram, rounds: int = 3) -> None:
    for _ in range(rounds):
        for attributes in ATTRIBUTES:
            key = tuple(sorted(attributes.items()))
            for value in VALUES:
                stock.record(value, attributes)
                light.record(value, key, dict(attributes))


def summary(points: list[Any]) -> dict[frozenset[tuple[str, Any]], tuple[Any, ...]]:
    return {
        frozenset(point.attributes.items()): (
            point.count,
            round(point.sum, 9),
            point.min,
            point.max,
            tuple(getattr(point, "bucket_counts", ()) or ()),
        )
        for point in points
    }


def test_light_path_records_what_the_sdk_records(
    twins: tuple[Metering, Histogram, LightHistogram],
) -> None:
    metering, stock, light = twins
    record_both(stock, light)
    data = metering.reader.get_metrics_data()
    assert summary(metering.points("light", data)) == summary(metering.points("stock", data))
    assert len(metering.points("light", data)) == len(ATTRIBUTES)


def test_views_and_every_reader_see_the_light_path() -> None:
    """A view keeping one attribute, a delta reader and a cumulative one, exponential buckets."""
    cumulative = InMemoryMetricReader()
    delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    views = (
        View(instrument_name="*", attribute_keys={"http.route"}),
        View(instrument_name="light", name="light.exponential",
             aggregation=ExponentialBucketHistogramAggregation()),
        View(instrument_name="stock", name="stock.exponential",
             aggregation=ExponentialBucketHistogramAggregation()),
    )  # fmt: skip
    provider = provider_with(cumulative, delta, views=views)
    try:
        meter = provider.get_meter("test")
        stock = meter.create_histogram("stock")
        light = LightHistogram(meter.create_histogram("light"))
        for reader in (cumulative, delta):
            record_both(stock, light, rounds=2)
            metering = Metering(provider, reader)
            data = reader.get_metrics_data()
            for suffix in ("", ".exponential"):
                assert summary(metering.points("light" + suffix, data)) == summary(
                    metering.points("stock" + suffix, data)
                )
            routes = {point.attributes["http.route"] for point in metering.points("light", data)}
            assert routes == {"a/", "b/"}
    finally:
        provider.shutdown()


def test_a_reader_added_later_gets_the_measurements_after_it() -> None:
    first = InMemoryMetricReader()
    provider = provider_with(first)
    try:
        light = LightHistogram(provider.get_meter("test").create_histogram("light"))
        for _ in range(3):
            light.record(0.1, "k", {"http.route": "a/"})
        later = InMemoryMetricReader()
        provider.add_metric_reader(later)
        for _ in range(2):
            light.record(0.1, "k", {"http.route": "a/"})
        (point,) = Metering(provider, later).points("light")
        assert point.count == 2
        (point,) = Metering(provider, first).points("light")
        assert point.count == 5
    finally:
        provider.shutdown()


def test_negative_values_are_dropped_like_the_sdk_does(
    twins: tuple[Metering, Histogram, LightHistogram],
) -> None:
    metering, _, light = twins
    for value in (0.5, -1.0, 0.5):
        light.record(value, "k", {"http.route": "a/"})
    (point,) = metering.points("light")
    assert point.count == 2


def test_sdk_internals_the_light_histogram_reads(
    twins: tuple[Metering, Histogram, LightHistogram],
) -> None:
    """What _worker/histogram.py reads of opentelemetry-sdk: the consumer, its storages, their
    view matches and aggregations by hashed attributes, the measurement and exemplar filter."""
    metering, stock, _ = twins
    attributes = {"http.route": "a/"}
    stock.record(0.1, attributes)
    consumer = stock._measurement_consumer
    assert consumer._sdk_config.exemplar_filter.should_sample(0.1, 0, attributes, None) in (
        True,
        False,
    )
    (storage,) = consumer._reader_storages.values()
    (match,) = storage._instrument_view_instrument_matches[stock]
    assert match._view._attribute_keys is None
    aggregation = match._attributes_aggregation[_hash_attributes(attributes)]
    aggregation.aggregate(TrustedMeasurement(0.2, 1, stock, {}, attributes), False)
    (point,) = metering.points("stock")
    assert point.count == 2
    assert stock._is_enabled() is True


def test_an_sdk_whose_internals_moved_gets_every_measurement_through_its_own_path(
    twins: tuple[Metering, Histogram, LightHistogram], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where what the light path reads is not there, each measurement takes the SDK's path:
    slower, never lost."""
    metering, stock, light = twins

    def moved(*_: object) -> None:
        raise AttributeError("'_ViewInstrumentMatch' object has no attribute '_view'")

    monkeypatch.setattr(LightHistogram, "_aggregations_of", moved)
    record_both(stock, light, rounds=1)  # the first finds nothing it knows: SDK path from now
    monkeypatch.undo()
    record_both(stock, light, rounds=2)
    data = metering.reader.get_metrics_data()
    assert summary(metering.points("light", data)) == summary(metering.points("stock", data))
    assert light._consumer is None
