"""SpoolReader: the exporting process sending the slots' spools and moving what they
acknowledge, beside a worker writing them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext

from gunicorn_django_wide_events._export.exporters import EncodedSpans
from gunicorn_django_wide_events._export.spooled import record_of
from gunicorn_django_wide_events._master.spool_exporter import SpoolReader
from gunicorn_django_wide_events._spool import HEADER_SIZE, Kind, Spool

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


DELAY_S = 5.0


def reader(
    spools: Sequence[Spool], exporter: PayloadExporter, batch_size: int = 512
) -> SpoolReader:
    return SpoolReader(spools, exporter, batch_size, DELAY_S)


def test_a_slot_waits_for_the_delay_or_an_eighth_of_its_ring(spool: Spool) -> None:
    exporter = PayloadExporter()
    sending = reader([spool], exporter)
    payload = record("big", padding=1000)
    needed = math.ceil(RING / 8 / len(payload))  # records that make an eighth of the ring
    for _ in range(needed - 1):
        spool.append(payload, 1)
    assert sending.pass_once(0.0) is False
    assert exporter.payloads == []  # under an eighth and not waited the delay
    spool.append(payload, 1)
    assert sending.pass_once(0.1) is True
    assert names(exporter.payloads) == ["big"] * needed
    spool.append(record("late"), 1)
    assert sending.pass_once(1.0) is False  # its clock starts now
    assert sending.pass_once(1.0 + DELAY_S) is True
    assert names(exporter.payloads[-1:]) == ["late"]


def test_what_was_sent_is_acknowledged_and_the_writer_reuses_its_room(spool: Spool) -> None:
    exporter = PayloadExporter()
    sending = reader([spool], exporter)
    for round_index in range(40):  # the ring goes round several times
        for index in range(5):
            spool.append(record(f"{round_index}.{index}", padding=900), 1)
        assert sending.pass_once(round_index * DELAY_S * 2) is False  # first seen
        assert sending.pass_once((round_index * 2 + 1) * DELAY_S) is True
        assert spool.pending_count() == 0
    assert names(exporter.payloads) == [f"{r}.{i}" for r in range(40) for i in range(5)]
    assert spool.take_dropped() == 0


def test_a_failed_export_leaves_the_records_and_waits_before_trying_again(spool: Spool) -> None:
    exporter = PayloadExporter(SpanExportResult.FAILURE)
    sending = reader([spool], exporter)
    spool.append(record("a"), 1)
    assert sending.pass_once(0.0) is False  # first seen
    assert sending.pass_once(DELAY_S) is False
    exporter.result = SpanExportResult.SUCCESS
    assert sending.pass_once(DELAY_S + 0.5) is False  # within the retry wait
    assert sending.pass_once(DELAY_S + 1.0) is True
    assert [names([payload]) for payload in exporter.payloads] == [["a"], ["a"]]
    assert spool.pending_count() == 0


def test_a_record_that_cannot_be_encoded_is_dropped_not_retried_forever(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = PayloadExporter()
    spool.append(b"not a record", 1)
    spool.append(record("good"), 1)
    sending = reader([spool], exporter)
    assert sending.pass_once(0.0) is False  # first seen
    assert sending.pass_once(DELAY_S) is True
    assert names(exporter.payloads) == ["good"]
    assert "a spooled span could not be encoded; dropped" in caplog.text


def test_batches_are_sent_while_full_and_a_held_record_stops_them(spool: Spool) -> None:
    exporter = PayloadExporter()
    sending = reader([spool], exporter, batch_size=4)
    for index in range(6):
        spool.append(record(str(index)), 1)
    held = spool.append(record("urgent"), 1, Kind.PRECIOUS, held=True)
    spool.append(record("after"), 1)
    assert sending.pass_once(0.0) is False  # first seen
    assert sending.pass_once(DELAY_S) is False
    assert [names([payload]) for payload in exporter.payloads] == [["0", "1", "2", "3"], ["4", "5"]]
    (urgent,) = [r for r in spool.pending(1 << 20, held_too=True) if r.position == held]
    spool.mark_sent([urgent])  # its own thread delivered it
    assert sending.pass_once(3 * DELAY_S) is True
    assert names(exporter.payloads[-1:]) == ["after"]


def test_finishing_sends_what_a_dead_worker_held_and_every_slot(spool: Spool) -> None:
    other = Spool(bytearray(HEADER_SIZE + RING), 0, HEADER_SIZE + RING)
    exporter = PayloadExporter()
    spool.append(record("held"), 1, Kind.PRECIOUS, held=True)
    other.append(record("plain"), 1)
    assert reader([spool, other], exporter).pass_once(0.0, finishing=True) is True
    assert sorted(names(exporter.payloads)) == ["held", "plain"]


def test_a_record_the_writer_dropped_while_it_was_read_is_not_sent(spool: Spool) -> None:
    """The writer makes room by moving the tail before it overwrites; the reader checks the
    tail after its copy."""
    exporter = PayloadExporter()
    for index in range(3):
        spool.append(record(str(index), padding=1000), 1)
    records, _ = spool.unsent(1 << 20, 512)
    assert len(records) == 3
    for index in range(3, 200):  # no reader: the oldest plain records make room
        spool.append(record(str(index), padding=1000), 1)
    assert spool.take_dropped() > 3
    assert reader([spool], exporter).pass_once(DELAY_S, finishing=True) is True
    sent = names(exporter.payloads)
    assert "0" not in sent
    assert sent == [str(index) for index in range(200 - len(sent), 200)]
