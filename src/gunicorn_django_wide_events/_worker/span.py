"""The request's SERVER span: an OpenTelemetry ``Span`` whose attributes are a plain dict.

The SDK's span cleans, bounds and locks every attribute write and builds a sampling result, a
bounded mapping and a readable copy per span: about 20 µs for a wide event, a tenth of a
hello-world request. This span keeps what users and other instrumentations see of the SDK: the
tracer provider's sampler, id generator, resource, span limits and span processors
(``on_start``, ``on_end``), the API's ``Span`` methods, and the ``ReadableSpan`` that exporters
receive. What it drops is the per-write work on attributes the package builds itself, which are
valid by construction: they go into the dict as they are (``add_trusted``). Writes that come
from elsewhere (``set_attribute`` from the app or another instrumentation, ``add_fields``) are
cleaned the SDK's way, with its ``BoundedAttributes``.

The SDK's span limits are applied when the span ends, and only when they bite: more attributes
than ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` (the oldest go, counted as dropped, as the SDK does) or
a ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Protocol

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util import types

from .._attributes import exception_type_name
from .._export.otlp_wire import snapshot_of
from .._export.processor import WorkerSpanProcessor

_UNSET: Final = Status(StatusCode.UNSET)


class SpanStarter(Protocol):
    def start_span(
        self, name: str, context: Context | None, attributes: dict[str, types.AnyValue]
    ) -> trace.Span: ...


class TracerSpanStarter:
    """Server spans from any API tracer: where the tracer provider is not the SDK's."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def start_span(
        self, name: str, context: Context | None, attributes: dict[str, types.AnyValue]
    ) -> trace.Span:
        return self.tracer.start_span(
            name, context=context, kind=SpanKind.SERVER, attributes=attributes
        )


def server_span_starter(name: str, version: str) -> SpanStarter:
    """Light spans when the global tracer provider is the SDK's, the tracer's otherwise."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        return ServerSpanFactory(provider, InstrumentationScope(name, version))
    return TracerSpanStarter(trace.get_tracer(name, version))


class ServerSpanFactory:
    """Starts server spans for one tracer provider, as its tracer would, minus the overhead."""

    def __init__(self, provider: TracerProvider, scope: InstrumentationScope) -> None:
        self.scope = scope
        self.resource = provider.resource
        self.sampler = provider.sampler
        self.id_generator = provider.id_generator
        self.limits = provider._span_limits
        self.processor = provider._active_span_processor
        # The default sampler (and always_on) samples every root span with no attributes or
        # trace state of its own: no need to ask it for the request spans that start traces.
        self.samples_every_root = self.sampler is DEFAULT_ON or self.sampler is ALWAYS_ON
        tracer = provider.get_tracer(scope.name, scope.version, scope.schema_url)
        # A tracer configurator may disable this package's tracer by name (SDK >= 1.39).
        is_enabled = getattr(tracer, "_is_enabled", None)
        self.enabled = bool(is_enabled()) if is_enabled is not None else True

    def start_span(
        self, name: str, context: Context | None, attributes: dict[str, types.AnyValue]
    ) -> trace.Span:
        """A started SERVER span named ``name``; ``attributes`` becomes its own dict."""
        parent = trace.get_current_span(context).get_span_context()
        if not parent.is_valid:
            parent_context = None
            trace_id = self.id_generator.generate_trace_id()
            random_trace_id = self.id_generator.is_trace_id_random()
        else:
            parent_context = parent
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        if not self.enabled:
            return NonRecordingSpan(parent)
        if parent_context is None and self.samples_every_root:
            sampled = recording = True
            trace_state = None
        else:
            sampling = self.sampler.should_sample(
                context, trace_id, name, SpanKind.SERVER, attributes, ()
            )
            sampled = sampling.decision.is_sampled()  # type: ignore[no-untyped-call]
            recording = sampling.decision.is_recording()  # type: ignore[no-untyped-call]
            trace_state = sampling.trace_state
            # Samplers may hand back the span's own attributes (the SDK's always_on does).
            if sampling.attributes and sampling.attributes is not attributes:
                attributes.update(sampling.attributes)
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        if random_trace_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        span_context = SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=trace_state,
        )
        if not recording:
            return NonRecordingSpan(span_context)
        span = ServerSpan(self, name, span_context, parent_context, attributes)
        self.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span


class ServerSpan(trace.Span):
    """One request's SERVER span; see the module's docstring for what makes it light."""

    __slots__ = (
        "_attributes",
        "_context",
        "_dropped_attributes",
        "_end_time",
        "_events",
        "_factory",
        "_links",
        "_name",
        "_parent",
        "_start_time",
        "_status",
    )

    def __init__(
        self,
        factory: ServerSpanFactory,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, types.AnyValue],
    ) -> None:
        self._factory = factory
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._dropped_attributes = 0
        self._events: BoundedList[Event] | None = None
        self._links: BoundedList[Link] | None = None
        self._status = _UNSET
        self._start_time = time.time_ns()
        self._end_time: int | None = None

    # -- what the package itself uses -------------------------------------------------------

    @property
    def attributes(self) -> Mapping[str, types.AnyValue]:
        return MappingProxyType(self._attributes)

    @property
    def parent(self) -> SpanContext | None:
        return self._parent

    def add_trusted(self, attributes: Mapping[str, types.AnyValue]) -> None:
        """Attributes the package built itself: valid values, stored without cleaning."""
        if self._end_time is None:
            self._attributes.update(attributes)

    # -- opentelemetry.trace.Span ----------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is None:
            limits = self._factory.limits
            cleaned = BoundedAttributes(
                None, attributes, max_value_len=limits.max_span_attribute_length
            )
            self._attributes.update(cleaned)
            self._dropped_attributes += cleaned.dropped  # invalid keys

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self.set_attributes({key: value})

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is not None:
            return
        limits = self._factory.limits
        if self._events is None:
            self._events = BoundedList(limits.max_events)
        cleaned = BoundedAttributes(
            limits.max_event_attributes, attributes, max_value_len=limits.max_attribute_length
        )
        self._events.append(Event(name, cleaned, timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._end_time is not None or (not context.is_valid and not attributes):
            return
        limits = self._factory.limits
        if self._links is None:
            self._links = BoundedList(limits.max_links)
        cleaned = BoundedAttributes(
            limits.max_link_attributes, attributes, max_value_len=limits.max_attribute_length
        )
        self._links.append(Link(context, cleaned))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # The SDK's rules: OK is final, UNSET is never set, a Status carries its own description.
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        event_attributes: dict[str, Any] = {
            EXCEPTION_TYPE: exception_type_name(exception),
            EXCEPTION_MESSAGE: str(exception),
            EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            EXCEPTION_ESCAPED: str(escaped),
        }
        if attributes:
            event_attributes.update(attributes)
        self.add_event("exception", event_attributes, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else time.time_ns()
        factory = self._factory
        processor = factory.processor
        processor._on_ending(self)  # type: ignore[arg-type]
        processors = processor._span_processors
        if len(processors) == 1 and isinstance(processors[0], WorkerSpanProcessor):
            spool = processors[0].spools_as_it_is(self._context.span_id)
            if spool is not None and not self._limits_bite():
                # Straight into the spool: no ReadableSpan, no copy of the attributes.
                snapshot = snapshot_of(
                    self._context,
                    self._parent,
                    self._name,
                    SpanKind.SERVER,
                    (self._start_time, self._end_time),
                    (self._attributes, 0),
                    (self._events, 0),
                    (self._links, 0),
                    self._status,
                )
                processors[0].spool_snapshot(spool, snapshot, factory.resource, factory.scope)
                return
        processor.on_end(self._readable())

    def _limits_bite(self) -> bool:
        """Whether the SDK's span limits change the attributes (rare): then the span ends
        through a ``ReadableSpan``, with the SDK's ``BoundedAttributes``."""
        limits = self._factory.limits
        max_count = limits.max_span_attributes
        return bool(
            self._dropped_attributes
            or limits.max_span_attribute_length is not None
            or (max_count is not None and len(self._attributes) > max_count)
        )

    def _bounded_attributes(self) -> types.Attributes:
        """A copy of the attributes (a timed-out request's thread may still write to them),
        bounded by the SDK's limits where they bite, which is rare."""
        attributes = dict(self._attributes)
        if not self._limits_bite():
            return attributes
        limits = self._factory.limits
        max_count = limits.max_span_attributes
        max_length = limits.max_span_attribute_length
        # BoundedAttributes keeps the newest and counts the dropped, which ReadableSpan reports.
        bounded = BoundedAttributes(max_count, attributes, max_value_len=max_length)
        bounded.dropped += self._dropped_attributes
        return bounded

    def _readable(self) -> ReadableSpan:
        factory = self._factory
        return ReadableSpan(
            name=self._name,
            context=self._context,
            parent=self._parent,
            resource=factory.resource,
            attributes=self._bounded_attributes(),
            events=self._events if self._events is not None else (),
            links=self._links if self._links is not None else (),
            kind=SpanKind.SERVER,
            status=self._status,
            start_time=self._start_time,
            end_time=self._end_time,
            instrumentation_scope=factory.scope,
        )
