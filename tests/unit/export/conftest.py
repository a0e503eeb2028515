"""Fixtures of the export tests.

The SDK ones build local providers and hand them to handover.py through monkeypatched getters;
the global providers are never set, and every provider is shut down at the end of its test. A
module that uses the fakes opts in to clean_state with ``pytestmark``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from gunicorn_django_wide_events._export import handover as export
from gunicorn_django_wide_events._export.handover import ForkSafeExport
from gunicorn_django_wide_events._export.log_routing import logging_silenced
from gunicorn_django_wide_events._guard import forget_reports
from tests.unit.export.fakes import (
    WAIT_S,
    BlockingSpanExporter,
    KeptProcessor,
    OrderedBatchSpanProcessor,
    OrderedLogExporter,
    OrderedMetricExporter,
    OrderedMetricReader,
    OrderedSpanExporter,
    RecordingLogExporter,
    RecordingMetricExporter,
    RecordingSpanExporter,
    Sdk,
    calls,
)
from tests.unit.export.wire import Recorder


@pytest.fixture
def clean_state() -> Iterator[None]:
    """Forget exporter instances and log_once reports around each test."""
    for cls in (
        RecordingSpanExporter,
        RecordingMetricExporter,
        RecordingLogExporter,
        BlockingSpanExporter,
    ):
        cls.instances.clear()
    calls.clear()
    forget_reports()
    yield
    forget_reports()


@pytest.fixture
def threads_before() -> Iterator[set[threading.Thread]]:
    """Threads alive before the test; after it, every thread it started must be gone."""
    before = set(threading.enumerate())
    yield before
    for thread in threading.enumerate():
        if thread not in before:
            thread.join(WAIT_S)
    assert [thread.name for thread in threading.enumerate() if thread not in before] == []


@pytest.fixture
def make_sdk(
    monkeypatch: pytest.MonkeyPatch, threads_before: set[threading.Thread]
) -> Iterator[Callable[..., Sdk]]:
    """Build local providers with exporting parts and make handover.py see them as global."""
    built: list[Sdk] = []

    def make(
        span_exporter: SpanExporter | None = None,
        *,
        simple: bool = False,
        simple_logs: bool = False,
        ordered: bool = False,
    ) -> Sdk:
        """``ordered`` builds the Ordered* parts, which log their shutdowns to ``calls``."""
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        kept = KeptProcessor()
        exporter = span_exporter
        if exporter is None:
            exporter = OrderedSpanExporter() if ordered else RecordingSpanExporter()
        span_processor: SpanProcessor
        if simple:
            span_processor = SimpleSpanProcessor(exporter)
        elif ordered:
            span_processor = OrderedBatchSpanProcessor(exporter)
        else:
            span_processor = BatchSpanProcessor(exporter)
        tracer_provider.add_span_processor(span_processor)
        tracer_provider.add_span_processor(kept)
        reader_type = OrderedMetricReader if ordered else PeriodicExportingMetricReader
        metric_exporter = OrderedMetricExporter() if ordered else RecordingMetricExporter()
        reader = reader_type(metric_exporter, export_interval_millis=60_000)
        meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        logger_provider = LoggerProvider(shutdown_on_exit=False)
        log_exporter = OrderedLogExporter() if ordered else RecordingLogExporter()
        log_processor = (
            SimpleLogRecordProcessor(log_exporter)
            if simple_logs
            else BatchLogRecordProcessor(log_exporter)
        )
        logger_provider.add_log_record_processor(log_processor)
        monkeypatch.setattr(export.trace, "get_tracer_provider", lambda: tracer_provider)
        monkeypatch.setattr(export.metrics, "get_meter_provider", lambda: meter_provider)
        monkeypatch.setattr(export, "get_logger_provider", lambda: logger_provider)
        sdk = Sdk(
            tracer_provider,
            meter_provider,
            logger_provider,
            kept,
            [span_processor],
            [reader],
            [log_processor],
        )
        built.append(sdk)
        return sdk

    yield make
    for sdk in built:
        sdk.tracer_provider.shutdown()
        sdk.meter_provider.shutdown()
        sdk.logger_provider.shutdown()


@pytest.fixture
def fork_safe(make_sdk: Callable[..., Sdk]) -> Iterator[ForkSafeExport]:
    """A ForkSafeExport whose worker parts are stopped after the test, before the providers.

    MeterProvider.shutdown() does not reach the metric readers start_in_worker adds, so their
    threads would outlive the test. A test may have shut down already: the SDK's warnings about
    a second shutdown are muted.
    """
    fork_safe = ForkSafeExport()
    yield fork_safe
    with logging_silenced():
        assert fork_safe.shutdown_within(WAIT_S) is True


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    try:
        yield recorder
    finally:
        recorder.provider.shutdown()
