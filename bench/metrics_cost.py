"""What the worker's HTTP server metrics cost a request, in the request's own thread.

Run: ``.venvs/default/bin/python bench/metrics_cost.py`` (about 20 s; ``--help`` for options).

One request's metrics are a start (``http.server.active_requests`` up) and an end (down, and a
``http.server.request.duration`` point), on an SDK meter provider with one reader that is never
collected during the rounds, as between two exports. Timed with ``timeit`` over many requests of
a few routes and statuses, in alternated rounds (every case once per round), the fastest round
kept, in microseconds per request:

- ``sdk``: what the SDK's stock instruments cost for the same measurements (a synchronous
  up-down counter, added to twice, and ``Histogram.record``), as an instrumentation using only
  the API would record them;
- ``package``: the package's recorder (``_worker/metrics.py``: the counts observed at
  collection, the light histogram of ``_worker/histogram.py``), with the event's span passed
  for the exemplar (the SDK's default trace-based exemplar filter samples it: a sampled span)
  and without one (as with ``OTEL_METRICS_EXEMPLAR_FILTER=always_off``);
- ``none``: the recorder of a worker whose metrics nobody exports (``OTEL_METRICS_EXPORTER=none``).

The throughput benchmark measures the same through a whole request:
``bench/compare.py events metrics:OTEL_METRICS_EXPORTER=otlp``.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from typing import Any

from harness.machine import machine_lines
from harness.report import emit
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, set_span_in_context

from gunicorn_django_wide_events._attributes import DURATION_BUCKETS
from gunicorn_django_wide_events._worker.metrics import RequestMetrics, no_request_metrics

START = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "network.protocol.version": "1.1",
    "url.path": "/items/7/",
    "client.address": "127.0.0.1",
}
ENDS = [
    {"http.route": "items/<int:id>/", "http.response.status_code": 200},
    {"http.route": "hello/", "http.response.status_code": 200},
    {"http.route": "items/<int:id>/", "http.response.status_code": 404},
    {"http.route": "raise/", "http.response.status_code": 500, "error.type": "RuntimeError"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--number", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (the fastest is kept)")
    args = parser.parse_args()

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    span = (
        TracerProvider(shutdown_on_exit=False)
        .get_tracer("bench")
        .start_span("GET", kind=SpanKind.SERVER)
    )
    meter = provider.get_meter("bench")
    active = meter.create_up_down_counter("sdk.active_requests")
    duration = meter.create_histogram(
        "sdk.request.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS
    )
    package = RequestMetrics(provider.get_meter("bench.package"))
    no_exemplars = RequestMetrics(provider.get_meter("bench.no_exemplars"), exemplars=False)
    state = {"index": 0}

    def next_end() -> dict[str, Any]:
        state["index"] = index = (state["index"] + 1) % len(ENDS)
        return ENDS[index]

    def sdk() -> None:
        attributes = {"http.request.method": "GET", "url.scheme": "http"}
        active.add(1, attributes)
        end = next_end()
        active.add(-1, attributes)
        point = {**attributes, "network.protocol.version": "1.1", **end}
        duration.record(0.012, point, set_span_in_context(span, Context()))

    def recorder(metrics: Any, with_span: bool) -> Callable[[], None]:
        def one() -> None:
            started = metrics.request_started(START)
            metrics.request_ended(started, next_end(), 0.012, span if with_span else None)

        return one

    cases: list[tuple[str, Callable[[], None]]] = [
        ("sdk: stock instruments (exemplar of the span)", sdk),
        ("package: with the span's exemplar", recorder(package, True)),
        ("package: no exemplar", recorder(no_exemplars, False)),
        ("none: OTEL_METRICS_EXPORTER=none", recorder(no_request_metrics, True)),
    ]
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, case in cases:
            seconds = timeit.timeit(case, number=args.number)
            best[name] = min(best.get(name, seconds), seconds)
        reader.get_metrics_data()  # between rounds, as an export would

    emit("== machine")
    for line in machine_lines():
        emit(f"  {line}")
    emit()
    emit(f"== one request's metrics (start + end), µs; fastest of {args.rounds} rounds")
    for name, _ in cases:
        emit(f"  {name:<48} {best[name] / args.number * 1e6:6.2f}")
    provider.shutdown()


if __name__ == "__main__":
    main()
