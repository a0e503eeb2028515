"""Fixtures shared by the worker's unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.unit.worker.metering import Metering
from tests.unit.worker.tracing import Tracing


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    """A TracerProvider of this test only, never set as the global one."""
    provider = TracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider.get_tracer(__name__), exporter)
    provider.shutdown()


@pytest.fixture
def metering() -> Iterator[Metering]:
    """A MeterProvider of this test only, never set as the global one, read on demand."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield Metering(provider, reader)
    provider.shutdown()
