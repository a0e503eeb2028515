"""The light server span against the SDK's own span: the same calls must export the same span."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from gunicorn_django_wide_events._worker.span import (
    ServerSpan,
    ServerSpanFactory,
    TracerSpanStarter,
    server_span_starter,
)

SCOPE = InstrumentationScope("gunicorn_django_wide_events", "1.0")


class StartRecorder(SpanProcessor):
    def __init__(self) -> None:
        self.started: list[tuple[Any, Context | None]] = []
        self.ending: list[Any] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started.append((span, parent_context))

    def _on_ending(self, span: Span) -> None:
        self.ending.append(span)


@dataclass
class Pair:
    """An SDK provider with an in-memory exporter, and our factory over the same provider."""

    provider: TracerProvider
    exporter: InMemorySpanExporter
    recorder: StartRecorder
    factory: ServerSpanFactory

    def sdk_span(
        self, name: str, attributes: dict[str, Any], context: Context | None = None
    ) -> Any:
        tracer = self.provider.get_tracer(SCOPE.name, SCOPE.version)
        return tracer.start_span(name, context=context, kind=SpanKind.SERVER, attributes=attributes)

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


def make_pair(**provider_kwargs: Any) -> Pair:
    provider = TracerProvider(shutdown_on_exit=False, **provider_kwargs)
    exporter = InMemorySpanExporter()
    recorder = StartRecorder()
    provider.add_span_processor(recorder)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Pair(provider, exporter, recorder, ServerSpanFactory(provider, SCOPE))


@pytest.fixture
def pair() -> Iterator[Pair]:
    yield make_pair()


def comparable(span: ReadableSpan) -> dict[str, Any]:
    """What an exporter reads of a span, minus ids and clocks."""
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, dict(e.attributes or {}), e.dropped_attributes) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "dropped_links": span.dropped_links,
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource,
        "scope": span.instrumentation_scope,
        "parent": span.parent,
        "sampled": span.context.trace_flags.sampled if span.context else None,
    }


Script = Callable[[Any], None]


def run_both(pair: Pair, script: Script, attributes: dict[str, Any] | None = None) -> None:
    """Run ``script`` on an SDK span and on ours; both exported spans must read the same."""
    sdk = pair.sdk_span("GET", dict(attributes or {}))
    script(sdk)
    sdk.end()
    ours = pair.factory.start_span("GET", None, dict(attributes or {}))
    assert isinstance(ours, ServerSpan)
    script(ours)
    ours.end()
    sdk_span, our_span = pair.finished()
    assert comparable(our_span) == comparable(sdk_span)


SCRIPTS: dict[str, Script] = {
    "nothing": lambda span: None,
    "attributes": lambda span: span.set_attributes(
        {"s": "x", "i": -3, "f": 1.5, "b": True, "l": ["a", "b"], "t": (1, 2), "by": b"\x00"}
    ),
    "invalid values are cleaned as the SDK does": lambda span: span.set_attributes(
        {"obj": object(), "ok": 1, "": "empty key", "nested": {"k": [1, {"j": None}]}}
    ),
    "one attribute": lambda span: span.set_attribute("http.route", "items/<int:pk>/"),
    "rename": lambda span: span.update_name("GET items/"),
    "error status": lambda span: span.set_status(Status(StatusCode.ERROR, "boom")),
    "status code and description": lambda span: span.set_status(StatusCode.ERROR, "bad"),
    "ok is final": lambda span: (
        span.set_status(StatusCode.OK),
        span.set_status(Status(StatusCode.ERROR, "late")),
    ),
    "unset is ignored": lambda span: (
        span.set_status(StatusCode.ERROR, "kept"),
        span.set_status(StatusCode.UNSET),
    ),
    "event": lambda span: span.add_event("cache.miss", {"key": "k", "bad": object()}, 1234),
    "exception": lambda span: span.record_exception(ValueError("nope"), {"extra": 1}, 99, True),
    "link": lambda span: span.add_link(
        SpanContext(5, 6, is_remote=True, trace_flags=TraceFlags(1)), {"why": "batch"}
    ),
    "invalid link without attributes is ignored": lambda span: span.add_link(
        trace.INVALID_SPAN_CONTEXT
    ),
}


@pytest.mark.parametrize("script", SCRIPTS.values(), ids=SCRIPTS.keys())
def test_reads_like_an_sdk_span(pair: Pair, script: Script) -> None:
    run_both(pair, script, {"http.request.method": "GET", "url.path": "/items/1"})


def test_after_end_nothing_changes(pair: Pair) -> None:
    def after_end(span: Any) -> None:
        span.end()
        span.set_attribute("late", 1)
        span.add_event("late")
        span.update_name("late")
        span.set_status(StatusCode.ERROR, "late")
        assert not span.is_recording()

    ours = pair.factory.start_span("GET", None, {})
    assert isinstance(ours, ServerSpan)
    after_end(ours)
    if isinstance(ours, ServerSpan):
        ours.add_trusted({"late": 2})
    ours.end()  # a second end exports nothing more
    (span,) = pair.finished()
    assert span.name == "GET"
    assert dict(span.attributes or {}) == {}
    assert span.events == ()
    assert span.status.status_code is StatusCode.UNSET


def test_trusted_attributes_go_in_as_they_are(pair: Pair) -> None:
    ours = pair.factory.start_span("GET", None, {"a": 1})
    assert isinstance(ours, ServerSpan)
    ours.add_trusted({"b": "two", "c": ("x", "y")})
    ours.end()
    (span,) = pair.finished()
    assert dict(span.attributes or {}) == {"a": 1, "b": "two", "c": ("x", "y")}
    assert span.kind is SpanKind.SERVER
    assert span.instrumentation_scope == SCOPE


def test_the_exported_attributes_are_a_copy(pair: Pair) -> None:
    """A timed-out request's thread may still write while the exporter reads."""
    ours = pair.factory.start_span("GET", None, {"a": 1})
    ours.end()
    ours._attributes["late"] = 1  # type: ignore[attr-defined]
    (span,) = pair.finished()
    assert "late" not in (span.attributes or {})


def test_processors_see_start_and_ending(pair: Pair) -> None:
    context = set_span_in_context(NonRecordingSpan(trace.INVALID_SPAN_CONTEXT))
    ours = pair.factory.start_span("GET", context, {})
    assert pair.recorder.started == [(ours, context)]
    ours.end()
    assert pair.recorder.ending == [ours]


def test_root_span_gets_new_ids_and_the_random_flag(pair: Pair) -> None:
    first = pair.factory.start_span("GET", None, {}).get_span_context()
    second = pair.factory.start_span("GET", None, {}).get_span_context()
    assert first.is_valid and second.is_valid
    assert first.trace_id != second.trace_id
    assert first.trace_flags.sampled
    sdk_flags = pair.sdk_span("GET", {}).get_span_context().trace_flags
    assert first.trace_flags == sdk_flags


def test_remote_parent_from_traceparent(pair: Pair) -> None:
    header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    context = TraceContextTextMapPropagator().extract({"traceparent": header})
    ours = pair.factory.start_span("GET", context, {})
    ours.end()
    (span,) = pair.finished()
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.parent.span_id == 0xB7AD6B7169203331
    assert span.parent.is_remote
    assert span.context.span_id != span.parent.span_id


def test_sampler_says_drop() -> None:
    pair = make_pair(sampler=ALWAYS_OFF)
    ours = pair.factory.start_span("GET", None, {})
    assert not ours.is_recording()
    assert ours.get_span_context().is_valid
    ours.end()
    assert pair.finished() == []
    assert pair.recorder.started == []


class TaggingSampler(Sampler):
    """Samples every span and adds an attribute and a trace state of its own."""

    def should_sample(  # noqa: PLR0917 (the SDK's signature)
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE, {"sampler.tag": "kept"}, TraceState([("vendor", "on")])
        )

    def get_description(self) -> str:
        return "TaggingSampler"


@pytest.mark.parametrize("sampler", [ALWAYS_ON, DEFAULT_ON, TaggingSampler()], ids=str)
def test_root_spans_are_sampled_as_the_sdk_samples_them(sampler: Sampler) -> None:
    """The default samplers are not asked about root spans; what they would say still holds.

    A sampler's own attributes are added to the span's, as the specification says (the SDK's
    span keeps only the sampler's, which would drop a wide event's start attributes).
    """
    pair = make_pair(sampler=sampler)
    pair.sdk_span("GET", {"start": 1}).end()
    pair.factory.start_span("GET", None, {"start": 1}).end()
    sdk_span, our_span = pair.finished()
    assert our_span.context is not None and sdk_span.context is not None
    assert our_span.context.trace_flags == sdk_span.context.trace_flags
    assert our_span.context.trace_state == sdk_span.context.trace_state
    assert dict(our_span.attributes or {}) == {"start": 1, **dict(sdk_span.attributes or {})}


def test_parent_not_sampled_means_not_sampled() -> None:
    pair = make_pair(sampler=ParentBased(TraceIdRatioBased(1.0)))
    parent = SpanContext(7, 8, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    ours = pair.factory.start_span("GET", set_span_in_context(NonRecordingSpan(parent)), {})
    assert not ours.is_recording()
    assert ours.get_span_context().trace_id == 7


def test_attribute_count_limit_drops_the_oldest() -> None:
    pair = make_pair(span_limits=SpanLimits(max_span_attributes=3))
    run_both(pair, lambda span: span.set_attributes({f"k{i}": i for i in range(5)}), {"start": 0})
    span = pair.finished()[1]
    assert dict(span.attributes or {}) == {"k2": 2, "k3": 3, "k4": 4}
    assert span.dropped_attributes == 3


def test_trusted_attributes_are_bounded_too() -> None:
    pair = make_pair(span_limits=SpanLimits(max_span_attributes=2, max_span_attribute_length=3))
    ours = pair.factory.start_span("GET", None, {"a": "abcdef"})
    assert isinstance(ours, ServerSpan)
    ours.add_trusted({"b": ["xyzzy"], "c": "long"})
    ours.end()
    (span,) = pair.finished()
    assert dict(span.attributes or {}) == {"b": ("xyz",), "c": "lon"}
    assert span.dropped_attributes == 1


def test_event_limits_match_the_sdk() -> None:
    pair = make_pair(span_limits=SpanLimits(max_events=2, max_event_attributes=1))
    run_both(pair, lambda span: [span.add_event(f"e{i}", {"a": 1, "b": 2}) for i in range(4)])
    assert pair.finished()[1].dropped_events == 2


def test_link_limits_match_the_sdk() -> None:
    pair = make_pair(span_limits=SpanLimits(max_links=1))
    context = SpanContext(5, 6, is_remote=True)
    run_both(pair, lambda span: [span.add_link(context, {"i": i}) for i in range(3)])
    assert pair.finished()[1].dropped_links == 2


def test_starter_without_the_sdk_uses_the_api_tracer() -> None:
    tracer = trace.NoOpTracer()
    span = TracerSpanStarter(tracer).start_span("GET", None, {"a": 1})
    assert not span.is_recording()


def test_starter_follows_the_global_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    assert isinstance(server_span_starter("x", "1"), ServerSpanFactory)
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert isinstance(server_span_starter("x", "1"), TracerSpanStarter)


def test_disabled_tracer_records_nothing() -> None:
    pair = make_pair()
    pair.factory.enabled = False
    span = pair.factory.start_span("GET", None, {})
    assert not span.is_recording()
    span.end()
    assert pair.finished() == []
