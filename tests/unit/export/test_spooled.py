"""The spool's records: a span through ``record_of`` then ``encoded_request`` is what
``encode_spans`` writes for it, whatever its values, and a bad record spoils only itself."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Status, StatusCode, TraceState

from gunicorn_django_wide_events._export import otlp_wire
from gunicorn_django_wide_events._export.spooled import encoded_request, record_of, span_ids

from .wire import PARENT_SPAN_ID, SPAN_ID, Color, Label, Ratio, Recorder, context, readable


def test_a_span_through_the_spool_encodes_as_encode_spans_encodes_it() -> None:
    span = readable(
        context=context(trace_state=TraceState([("vendor", "value")])),
        parent=context(PARENT_SPAN_ID, remote=True),
        attributes={"http.route": "/x/{id}", "n": 3, "ratio": 0.5, "ok": True, "tags": ("a",)},
        events=[Event("exception", {"exception.type": "ValueError"}, 7)],
        links=[Link(context(9), {"why": "batch"})],
        status=Status(StatusCode.ERROR, "boom"),
    )
    payload, count = encoded_request([record_of(span)])
    assert count == 1
    assert payload == otlp_wire.encode_spans([span])


def test_records_of_several_resources_and_scopes_are_grouped_as_encode_spans_groups() -> None:
    first, second = Resource({"service.name": "a"}), Resource({"service.name": "b"})
    scope = InstrumentationScope("other", "2")
    spans = [
        readable(name="1", resource=first),
        readable(name="2", resource=second),
        readable(name="3", resource=first, instrumentation_scope=scope),
        readable(name="4", resource=first),
    ]
    payload, count = encoded_request(map(record_of, spans))
    assert count == 4
    assert payload == otlp_wire.encode_spans(spans)


def test_values_marshal_refuses_are_spooled_as_the_encoder_writes_them() -> None:
    attributes = {"color": Color.RED, "label": Label("x"), "ratio": Ratio(0.25), "list": [1, 2]}
    span = Recorder().span(attributes, name="subclasses")
    payload, _ = encoded_request([record_of(span)])
    assert payload == otlp_wire.encode_spans([span])


def test_a_value_of_no_exportable_type_is_dropped_with_a_log_the_rest_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    span = readable(attributes={"kept": 1, "odd": object()})
    payload, count = encoded_request([record_of(span)])
    (sent,) = ExportTraceServiceRequest.FromString(payload).resource_spans[0].scope_spans[0].spans
    assert count == 1
    assert [attribute.key for attribute in sent.attributes] == ["kept"]
    assert "cannot be exported; dropped" in caplog.text


def test_a_record_that_cannot_be_read_or_encoded_is_left_out_with_a_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = readable(name="good")
    negative_time = record_of(readable(name="bad", start_time=-1))
    payload, count = encoded_request([b"\x00garbage", negative_time, record_of(good)])
    assert count == 1
    assert payload == otlp_wire.encode_spans([good])
    assert "a spooled span could not be encoded; dropped" in caplog.text


def test_span_ids_reads_a_record_and_ignores_garbage() -> None:
    assert span_ids(record_of(readable())) == [SPAN_ID]
    assert span_ids(b"garbage") == []
