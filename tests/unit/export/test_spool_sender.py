"""SpoolSender: a worker's export thread sending its slot's spool and marking what arrived."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext

from gunicorn_django_wide_events._export.exporters import EncodedSpans
from gunicorn_django_wide_events._export.processor import SpoolSender
from gunicorn_django_wide_events._export.spooled import record_of
from gunicorn_django_wide_events._spool import HEADER_SIZE, Spool
from tests.waiting import wait_until

RING = 64 * 1024


class PayloadExporter(SpanExporter):
    """Keeps the encoded payloads it was given; answers ``result``."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.result = result
        self.payloads: list[bytes] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        assert isinstance(spans, EncodedSpans)
        self.payloads.append(spans.payload)
        return self.result


def record(name: str, padding: int = 0) -> bytes:
    """The spool record of a finished span named ``name`` (``padding`` bytes of attribute)."""
    span = ReadableSpan(
        name,
        context=SpanContext(1, 2, is_remote=False),
        resource=Resource({"service.name": "sender"}),
        attributes={"padding": "p" * padding},
        start_time=1,
        end_time=2,
    )
    return record_of(span)


def names(payloads: list[bytes]) -> list[str]:
    """The span names in each payload, which must parse as OTLP export requests."""
    found = []
    for payload in payloads:
        request = ExportTraceServiceRequest.FromString(payload)
        found += [
            span.name
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
    return found


@pytest.fixture
def spool() -> Spool:
    return Spool(bytearray(HEADER_SIZE + RING), 0, HEADER_SIZE + RING)


@pytest.fixture
def sender_of(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[SpoolSender]]:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # no pass on the schedule
    senders: list[SpoolSender] = []
    yield senders
    for sender in senders:
        sender.stop()


def test_a_quarter_of_the_ring_filled_wakes_the_sender_before_its_schedule(
    spool: Spool, sender_of: list[SpoolSender]
) -> None:
    exporter = PayloadExporter()
    sender = SpoolSender(spool, exporter, batch_size=512)
    sender_of.append(sender)
    payload = record("big", padding=1000)
    needed = math.ceil(RING / 4 / len(payload))  # records that make a quarter of the ring
    for _ in range(needed - 1):
        spool.append(payload, 1)
        sender.appended(len(payload))
    assert exporter.payloads == []  # under a quarter and under a batch: it waits
    spool.append(payload, 1)
    sender.appended(len(payload))
    wait_until(lambda: spool.pending_count() == 0, what="the spool sent")
    assert names(exporter.payloads) == ["big"] * needed


def test_a_failed_export_leaves_the_records_pending_for_the_next_pass(
    spool: Spool, sender_of: list[SpoolSender]
) -> None:
    exporter = PayloadExporter(SpanExportResult.FAILURE)
    sender = SpoolSender(spool, exporter, batch_size=512)
    sender_of.append(sender)
    spool.append(record("a"), 1)
    assert sender.send_once() is False
    assert spool.pending_count() == 1
    exporter.result = SpanExportResult.SUCCESS
    assert sender.send_once() is False  # delivered, and no full batch: nothing more waits
    assert spool.pending_count() == 0
    assert [names([payload]) for payload in exporter.payloads] == [["a"], ["a"]]


def test_a_record_that_cannot_be_encoded_is_dropped_not_retried_forever(
    spool: Spool, sender_of: list[SpoolSender], caplog: pytest.LogCaptureFixture
) -> None:
    exporter = PayloadExporter()
    sender = SpoolSender(spool, exporter, batch_size=512)
    sender_of.append(sender)
    spool.append(b"not a record", 1)
    spool.append(record("good"), 1)
    assert sender.send_once() is False
    assert spool.pending_count() == 0
    assert names(exporter.payloads) == ["good"]
    assert "a spooled span could not be encoded; dropped" in caplog.text


def test_a_pass_goes_on_only_while_its_batches_are_full(
    spool: Spool, sender_of: list[SpoolSender]
) -> None:
    """Under steady load a pass must not chase each record that trickles in during an
    export: what is left after a partial batch waits for the next wake-up."""
    exporter = PayloadExporter()
    sender = SpoolSender(spool, exporter, batch_size=4)
    sender_of.append(sender)
    for index in range(10):
        spool.append(record(str(index)), 1)

    assert [sender.send_once() for _ in range(3)] == [True, True, False]
    assert [names([payload]) for payload in exporter.payloads] == [
        ["0", "1", "2", "3"],
        ["4", "5", "6", "7"],
        ["8", "9"],
    ]
    assert spool.pending_count() == 0
