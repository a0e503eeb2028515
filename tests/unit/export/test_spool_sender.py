"""SpoolSender: a worker's export thread sending its slot's spool and marking what arrived."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gunicorn_django_wide_events._export.exporters import EncodedSpans
from gunicorn_django_wide_events._export.processor import SpoolSender
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
    record = b"x" * 1000
    needed = math.ceil(RING / 4 / len(record))  # records that make a quarter of the ring
    for _ in range(needed - 1):
        spool.append(record, 1)
        sender.appended(len(record))
    assert exporter.payloads == []  # under a quarter and under a batch: it waits
    spool.append(record, 1)
    sender.appended(len(record))
    wait_until(lambda: spool.pending_count() == 0, what="the spool sent")
    assert b"".join(exporter.payloads) == record * needed


def test_a_failed_export_leaves_the_records_pending_for_the_next_pass(
    spool: Spool, sender_of: list[SpoolSender]
) -> None:
    exporter = PayloadExporter(SpanExportResult.FAILURE)
    sender = SpoolSender(spool, exporter, batch_size=512)
    sender_of.append(sender)
    spool.append(b"a" * 100, 1)
    assert sender.send_once() is False
    assert spool.pending_count() == 1
    exporter.result = SpanExportResult.SUCCESS
    assert sender.send_once() is False  # delivered, and no full batch: nothing more waits
    assert spool.pending_count() == 0
    assert exporter.payloads == [b"a" * 100] * 2


def test_a_pass_goes_on_only_while_its_batches_are_full(
    spool: Spool, sender_of: list[SpoolSender]
) -> None:
    """Under steady load a pass must not chase each record that trickles in during an
    export: what is left after a partial batch waits for the next wake-up."""
    exporter = PayloadExporter()
    sender = SpoolSender(spool, exporter, batch_size=4)
    sender_of.append(sender)
    for index in range(10):
        spool.append(bytes([index]) * 8, 1)

    assert [sender.send_once() for _ in range(3)] == [True, True, False]
    assert [len(payload) // 8 for payload in exporter.payloads] == [4, 4, 2]
    assert spool.pending_count() == 0
