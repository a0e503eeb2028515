"""CallerContext: what ``propagate.extract`` returns, for every propagator setup and request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Getter, TextMapPropagator, default_getter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gunicorn_django_wide_events._worker.propagation import CallerContext, environ_getter

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class TenantBaggage(W3CBaggagePropagator):
    """A subclass that reads one more header: it must not be taken for the stock one."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        context = super().extract(carrier, context, getter)
        tenant = getter.get(carrier, "x-tenant")
        return baggage.set_baggage("tenant", tenant[0], context) if tenant else context


PROPAGATORS: dict[str, TextMapPropagator] = {
    "tracecontext,baggage": CompositePropagator(
        [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    ),
    "tracecontext": TraceContextTextMapPropagator(),
    "baggage": W3CBaggagePropagator(),
    "baggage,tracecontext": CompositePropagator(
        [W3CBaggagePropagator(), TraceContextTextMapPropagator()]
    ),
    "tracecontext,subclass": CompositePropagator(
        [TraceContextTextMapPropagator(), TenantBaggage()]
    ),
    "none": CompositePropagator([]),
}
ENVIRONS: dict[str, dict[str, str]] = {
    "no headers": {"PATH_INFO": "/"},
    "traceparent": {"HTTP_TRACEPARENT": TRACEPARENT},
    "baggage": {"HTTP_BAGGAGE": "tenant=acme"},
    "both": {"HTTP_TRACEPARENT": TRACEPARENT, "HTTP_BAGGAGE": "tenant=acme"},
    "malformed traceparent": {"HTTP_TRACEPARENT": "00-zz"},
    "another header": {"HTTP_X_TENANT": "acme"},
}


def comparable(ctx: Context | None) -> dict[str, object] | None:
    """A context's entries, its span by its SpanContext (spans compare by identity).

    None where the propagators handed back none (an empty composite passes its input through).
    """
    if ctx is None:
        return None
    return {
        key: value.get_span_context() if isinstance(value, trace.Span) else value
        for key, value in ctx.items()
    }


@pytest.fixture
def global_propagator() -> Iterator[None]:
    saved = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(saved)


@pytest.fixture(params=[False, True], ids=["no current span", "a current span"])
def current_context(request: pytest.FixtureRequest) -> Iterator[None]:
    """Some propagators start from the current context: the short cut must not differ there."""
    if not request.param:
        yield
        return
    span = NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(1)))
    ctx = baggage.set_baggage("outer", "1", trace.set_span_in_context(span))
    token = context.attach(ctx)
    yield
    context.detach(token)


@pytest.mark.usefixtures("global_propagator", "current_context")
@pytest.mark.parametrize("environ", ENVIRONS.values(), ids=ENVIRONS.keys())
@pytest.mark.parametrize("propagator", PROPAGATORS.values(), ids=PROPAGATORS.keys())
def test_caller_context_is_what_extract_returns(
    propagator: TextMapPropagator, environ: dict[str, str]
) -> None:
    propagate.set_global_textmap(propagator)
    expected = propagate.extract(environ, getter=environ_getter)
    assert comparable(CallerContext()(environ)) == comparable(expected)


@pytest.mark.usefixtures("global_propagator")
def test_a_propagator_set_later_is_followed() -> None:
    """The app may replace the global propagator after the first request."""
    caller_context = CallerContext()
    environ = {"HTTP_BAGGAGE": "tenant=acme"}
    propagate.set_global_textmap(PROPAGATORS["tracecontext"])
    assert caller_context(environ) == Context()
    propagate.set_global_textmap(PROPAGATORS["baggage"])
    assert baggage.get_baggage("tenant", caller_context(environ)) == "acme"


@pytest.mark.usefixtures("global_propagator")
def test_the_caller_span_is_extracted_from_traceparent() -> None:
    propagate.set_global_textmap(PROPAGATORS["tracecontext,baggage"])
    parent = trace.get_current_span(CallerContext()({"HTTP_TRACEPARENT": TRACEPARENT}))
    assert parent.get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert parent.get_span_context().is_remote
