"""The stable HTTP server metrics, recorded from every event a worker finishes.

``http.server.request.duration`` (a histogram, in seconds, with the semantic conventions' bucket
boundaries) and ``http.server.active_requests`` (an up-down counter), with the stable
attributes only: nothing of high cardinality such as the path or the query. Each worker is its
own series (its resource's ``service.instance.id``). A request counts as
active from its event's start to its event's end, and every event ends in one place
(``RequestEvent.finish``): an exception, a timeout, a request gunicorn rejected or a client
that went away all bring the count back down, unlike the contrib middleware's (contrib #4431).

The instruments are created once per worker, after fork, on the meter provider
``opentelemetry-instrument`` configured. Where nothing would export the points (no SDK meter
provider, ``OTEL_METRICS_EXPORTER=none``), the request path gets ``no_request_metrics``, whose
methods do nothing: no attributes are even picked.

Both request paths (``wsgi``, ``asgi``) and both kinds of rejected requests (``rejected``,
``asgi_rejected``) record the same way, through ``RequestEvent``: ``request_started`` with the
attributes known at the start, and ``request_ended`` with what it returned, the event's final
attributes and the request's duration.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from time import time_ns
from typing import Final, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.url_attributes import URL_SCHEME
from opentelemetry.trace import Span, set_span_in_context
from opentelemetry.util.types import AttributeValue

from .. import __about__
from .._attributes import (
    DURATION_BUCKETS,
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_DURATION,
    METER_NAME,
)
from .._guard import never_raise
from .._os_threads import allocate_lock
from .histogram import MAX_COMBINATIONS, LightHistogram

# A request's method, scheme and protocol version come from a few known values (``_OTHER`` for
# unknown methods, gunicorn's http or https, HTTP/1.0 or 1.1), so their combinations are few.
MAX_STARTS: Final = 256
OVERFLOW_KEY: Final = ("_OTHER", None, None)

MetricAttributes = dict[str, AttributeValue]
_started_guard: Final = never_raise("metrics.request_started")
_ended_guard: Final = never_raise("metrics.request_ended")
_recording_guard: Final = never_raise("metrics.record_durations")
# Durations kept before a request's end records them all: a batch costs that request about
# 0.1 ms, each point a third of what it would cost alone.
DURATIONS_PER_BATCH: Final = 64


class Started:
    """One combination of a request's start attributes, and how many of its requests are active.

    Requests of the same method, scheme and protocol version share one: ``request_started``
    hands it to the request, which gives it back to ``request_ended``.
    """

    __slots__ = ("active", "active_attributes", "base")

    def __init__(self, active_attributes: MetricAttributes, base: MetricAttributes) -> None:
        self.active_attributes = active_attributes  # http.server.active_requests: method, scheme
        self.base = base  # and the protocol version: where a duration point starts from
        self.active = 0  # changed under RequestMetrics' lock


NOT_STARTED: Final = Started({}, {})
PointKey = tuple[Started, AttributeValue | None, AttributeValue | None, AttributeValue | None]
"""A duration point's start combination, route, status code and error type."""
EndedRequest = tuple[float, int, PointKey, Span | None]
"""A duration not recorded yet: seconds, when it ended (ns), its point's key, its span."""


class RequestRecorder(Protocol):
    """What a request path calls; ``RequestMetrics`` or ``no_request_metrics``."""

    def request_started(self, attributes: Mapping[str, AttributeValue]) -> Started: ...

    def request_ended(
        self,
        started: Started,
        attributes: Mapping[str, AttributeValue],
        duration_s: float,
        span: Span | None = None,
    ) -> None: ...


class RequestMetrics:
    """The two instruments of one worker, and how a request's start and end are measured.

    The active requests are counts kept here, one per ``Started``, observed when the SDK
    collects (an asynchronous up-down counter: the same non-monotonic sum as a synchronous one,
    for 0.1 µs instead of 6 µs a change). A duration is kept as it ended, with its time and
    span, and goes through ``LightHistogram`` with others, ``DURATIONS_PER_BATCH`` at a time or
    when the SDK collects (its callbacks run first, so a collection has every point): recorded
    one per request, between Django's code, each costs about three times what it costs in a
    batch (the caches). Neither method raises: a failure is logged once and the request goes on.
    """

    __slots__ = ("_duration", "_ended", "_exemplars", "_lock", "_points", "_starts")

    def __init__(self, meter: metrics.Meter, exemplars: bool = True) -> None:
        self._duration = LightHistogram(
            meter.create_histogram(
                HTTP_SERVER_REQUEST_DURATION,
                unit="s",
                description="Duration of HTTP server requests.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
        )
        meter.create_observable_up_down_counter(
            HTTP_SERVER_ACTIVE_REQUESTS,
            callbacks=[self._observe_active],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )
        # With exemplars on (the SDK's default samples those of sampled spans), a duration
        # point links to its wide event, also when the watchdog ends it from its own thread.
        self._exemplars = exemplars
        # Threads of a gthread worker (and the watchdog) start and end requests at once. A lock
        # of the OS (gevent's workers patch threading after this is built, their watchdog is an
        # OS thread), held for a few bytecodes, never across a greenlet switch.
        self._lock = allocate_lock()
        self._starts: dict[tuple[object, object, object], Started] = {}
        self._points: dict[PointKey, MetricAttributes] = {}
        self._ended: list[EndedRequest] = []  # durations not recorded yet

    def request_started(self, attributes: Mapping[str, AttributeValue]) -> Started:
        """A request starts (its event's start ``attributes``): one more active request."""
        try:
            key = (
                attributes.get(HTTP_REQUEST_METHOD),
                attributes.get(URL_SCHEME),
                attributes.get(NETWORK_PROTOCOL_VERSION),
            )
            started = self._starts.get(key)
            with self._lock:
                if started is None:
                    started = self._start_for(key)
                started.active += 1
            return started
        except Exception:
            _started_guard.report()
            return NOT_STARTED

    def _start_for(self, key: tuple[object, object, object]) -> Started:
        """The ``Started`` of a new combination (under the lock: one per combination)."""
        started = self._starts.get(key)
        if started is not None:
            return started
        method, scheme, version = key
        active: MetricAttributes = {}
        if isinstance(method, str):
            active[HTTP_REQUEST_METHOD] = method
        if isinstance(scheme, str):
            active[URL_SCHEME] = scheme
        base = dict(active)
        if isinstance(version, str):
            base[NETWORK_PROTOCOL_VERSION] = version
        if len(self._starts) >= MAX_STARTS:
            key = OVERFLOW_KEY  # no request goes uncounted: the rest share one method
            started = self._starts.get(key)
            if started is not None:
                return started
            active = base = {HTTP_REQUEST_METHOD: "_OTHER"}
        started = self._starts[key] = Started(active, base)
        return started

    def request_ended(
        self,
        started: Started,
        attributes: Mapping[str, AttributeValue],
        duration_s: float,
        span: Span | None = None,
    ) -> None:
        """The request's event ended with ``attributes``: one active request less, its duration.

        ``span``: the event's span, for the point's exemplar (whichever thread ends it).
        """
        if started is NOT_STARTED:
            return
        try:
            ended = (
                duration_s,
                time_ns(),
                (
                    started,
                    attributes.get(HTTP_ROUTE),
                    attributes.get(HTTP_RESPONSE_STATUS_CODE),
                    attributes.get(ERROR_TYPE),
                ),
                span,
            )
            with self._lock:
                started.active -= 1
                self._ended.append(ended)
                full = len(self._ended) >= DURATIONS_PER_BATCH
            if full:
                self.record_durations()
        except Exception:
            _ended_guard.report()

    def record_durations(self) -> None:
        """Record the durations kept so far (from whichever thread: each batch once)."""
        with self._lock:
            ended, self._ended = self._ended, []
        record = self._duration.record
        points = self._points
        exemplars = self._exemplars
        for duration_s, ended_at, key, span in ended:
            point = points.get(key)
            if point is None:
                point = self._point_for(*key)
                if len(points) < MAX_COMBINATIONS:
                    points[key] = point
            context = set_span_in_context(span) if span is not None and exemplars else None
            record(duration_s, key, point, context, ended_at)

    @staticmethod
    def _point_for(
        started: Started,
        route: AttributeValue | None,
        status: AttributeValue | None,
        error: AttributeValue | None,
    ) -> MetricAttributes:
        """A duration point's attributes: the request's start ones, then what its end said.
        Kept per combination and handed to the SDK as is, never changed after."""
        point = dict(started.base)
        if route is not None:
            point[HTTP_ROUTE] = route
        if status is not None:
            point[HTTP_RESPONSE_STATUS_CODE] = status
        if error is not None:
            point[ERROR_TYPE] = error
        return point

    def _observe_active(self, options: CallbackOptions) -> Iterator[Observation]:
        # The SDK runs the callbacks before it collects the histogram: its points are all in.
        with _recording_guard:
            self.record_durations()
        for started in list(self._starts.values()):
            yield Observation(started.active, started.active_attributes)


class NoRequestMetrics:
    """Stands in where no metrics are exported: nothing is picked, nothing recorded."""

    __slots__ = ()

    def request_started(self, attributes: Mapping[str, AttributeValue]) -> Started:
        return NOT_STARTED

    def request_ended(
        self,
        started: Started,
        attributes: Mapping[str, AttributeValue],
        duration_s: float,
        span: Span | None = None,
    ) -> None:
        return None


no_request_metrics: Final = NoRequestMetrics()


def request_metrics_for(exported: bool) -> RequestMetrics | NoRequestMetrics:
    """This worker's recorder: real instruments when ``exported`` (something will export
    the points, see ``ForkSafeExport.metrics_exported``), else ``no_request_metrics``."""
    provider = metrics.get_meter_provider()
    if not exported or not isinstance(provider, MeterProvider):
        return no_request_metrics
    meter = provider.get_meter(METER_NAME, __about__.__version__)
    exemplar_filter = provider._sdk_config.exemplar_filter
    return RequestMetrics(meter, exemplars=not isinstance(exemplar_filter, AlwaysOffExemplarFilter))
