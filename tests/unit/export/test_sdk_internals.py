"""The SDK internals _export/handover.py relies on: private attributes, thread names, readers.

Everything runs on local SDK providers handed to handover.py through monkeypatched getters
(conftest.py); the global providers are never set. Every provider is shut down at the end of
its test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.unit.export.fakes import (
    RecordingLogExporter,
    RecordingMetricExporter,
    RecordingSpanExporter,
    Sdk,
    log_processors_of,
    new_otel_threads,
    span_processors_of,
)

pytestmark = pytest.mark.usefixtures("clean_state")


# --- SDK internals handover.py reads -------------------------------------------------------


def test_sdk_internals_export_relies_on(make_sdk: Callable[..., Sdk]) -> None:
    """The private SDK attributes handover.py reads exist and hold what it expects."""
    sdk = make_sdk()
    (batch,) = sdk.span_processors
    assert span_processors_of(sdk.tracer_provider) == (batch, sdk.kept)
    assert isinstance(batch, BatchSpanProcessor)
    assert batch.span_exporter is RecordingSpanExporter.instances[0]
    assert isinstance(sdk.tracer_provider._span_limits, SpanLimits)
    (reader,) = sdk.metric_readers
    assert list(sdk.meter_provider._metric_readers) == [reader]
    assert reader._exporter is RecordingMetricExporter.instances[0]
    (log_processor,) = sdk.log_processors
    assert log_processors_of(sdk.logger_provider) == (log_processor,)
    assert log_processor._batch_processor._exporter is RecordingLogExporter.instances[0]


def test_sdk_export_thread_names(
    make_sdk: Callable[..., Sdk], threads_before: set[threading.Thread]
) -> None:
    """The SDK's export threads are named Otel*, which test_handover.py's thread checks rely on."""
    make_sdk()
    assert sorted(new_otel_threads(threads_before)) == [
        "OtelBatchLogRecordProcessor",
        "OtelBatchSpanRecordProcessor",
        "OtelPeriodicExportingMetricReader",
    ]


def test_sdk_metric_reader_registration(threads_before: set[threading.Thread]) -> None:
    """add_metric_reader leaves _metric_readers alone; remove_metric_reader stops the reader."""
    provider = MeterProvider(shutdown_on_exit=False)
    try:
        reader = PeriodicExportingMetricReader(
            RecordingMetricExporter(), export_interval_millis=60_000
        )
        provider.add_metric_reader(reader)
        assert list(provider._metric_readers) == []
        assert new_otel_threads(threads_before) == ["OtelPeriodicExportingMetricReader"]
        provider.remove_metric_reader(reader)
        assert new_otel_threads(threads_before) == []
        assert RecordingMetricExporter.instances[0].shut_down
    finally:
        provider.shutdown()


def test_sdk_metric_internals_the_package_reads(make_sdk: Callable[..., Sdk]) -> None:
    """What the master's metrics (handover.py, _master/master.py) and each worker's resource
    read of the SDK: the exporter's preferences, the reader's interval and timeout, the meter
    provider's configuration and its resource update."""
    sdk = make_sdk()
    (reader,) = sdk.metric_readers
    exporter = reader._exporter
    # None for an exporter that prefers nothing (handover.py reads it as {}).
    assert isinstance(exporter._preferred_temporality, (dict, type(None)))
    assert isinstance(exporter._preferred_aggregation, (dict, type(None)))
    assert reader._export_interval_millis == 60_000
    assert isinstance(reader._export_timeout_millis, float)
    sdk_config = sdk.meter_provider._sdk_config
    assert isinstance(sdk_config.views, (list, tuple))
    assert sdk_config.exemplar_filter is not None
    sdk.meter_provider._update_resource(Resource({"service.instance.id": "worker-1"}))
    assert sdk_config.resource.attributes["service.instance.id"] == "worker-1"
    counter = sdk.meter_provider.get_meter(__name__).create_counter("requests")
    counter.add(1)
    assert reader.force_flush()
    (data,) = RecordingMetricExporter.instances[0].exported
    (resource_metrics,) = data.resource_metrics
    assert resource_metrics.resource.attributes["service.instance.id"] == "worker-1"
