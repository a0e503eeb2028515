"""Benchmark of the OTLP span encoders: the stock one against ``otlp_wire``, per span.

Run: ``/work/venv/bin/python bench/encoder.py`` (about 20 s; ``--help`` for options).

Both encoders get the same batches of finished SDK spans and produce request bytes: stock is
``encode_spans(spans).SerializeToString()`` (what the gRPC exporter sends; HTTP's
``SerializePartialToString`` costs the same), ours ``otlp_wire.encode_spans(spans)``.

- Wide events of exactly 40 attributes of mixed types (strings, ints, floats, bools, string
  lists), as the package records them.
- Wide events of 40 to 60 attributes, a quarter of them failed requests carrying the exception
  type, message and a 2 kB multi-line stack trace.
- One worker's stream: the 40-attribute events as one worker sends them in a row, where the
  worker's id, its client (the proxy) and the monitor's samples (new once a second, so the same
  for thousands of requests) repeat, while routes cycle and per-request values vary. The
  encoder reuses the encoding of a value seen last time for the same key; the first two
  batches, whose sample values are random per span, show what that costs where it misses.
- Thin spans: 8 attributes, what an instrumentation's CLIENT span carries.

Each is timed with ``timeit`` over whole batches, median of several repeats, and reported per
span. Before timing, the two outputs are checked to parse to equal messages.
"""

from __future__ import annotations

import argparse
import random
import statistics
import timeit
from collections.abc import Callable, Sequence
from typing import Any

from harness.machine import machine_lines
from harness.report import emit
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as stock_encode_spans,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from gunicorn_django_wide_events._export.otlp_wire import encode_spans as wire_encode_spans

WIDE_40 = "wide, 40 attrs"
WIDE_40_60 = "wide, 40-60 attrs"
WORKER_STREAM = "worker stream, 40"
THIN = "thin, 8 attrs"
PATHS = ("/api/orders/{id}/", "/api/customers/{id}/invoices/", "/healthz", "/admin/login/")
STACK_TRACE = (
    "Traceback (most recent call last):\n"
    + "".join(
        f'  File "/srv/app/orders/services/step_{n}.py", line {40 + n}, in run_step_{n}\n'
        f"    return self.next_step(order, context=context, retry={n})\n"
        for n in range(18)
    )
    + "RuntimeError: payment provider timed out after 3 attempts\n"
)


# -- spans --------------------------------------------------------------------------------------


def wide_attributes(rng: random.Random, n: int, count: int, failed: bool) -> dict[str, Any]:
    """One request's wide event of ``count`` attributes (at most 60), mixed types.

    A failed request carries the exception's type, message and 2 kB stack trace among them.
    """
    route = PATHS[n % len(PATHS)]
    path = route.replace("{id}", str(rng.randrange(1, 10**6)))
    attributes: dict[str, Any] = {
        "http.request.method": rng.choice(("GET", "GET", "GET", "POST", "PUT")),
        "url.path": path,
        "url.scheme": "https",
        "url.query": f"page={rng.randrange(1, 50)}&sort=created",
        "http.route": route,
        "server.address": "shop.example.com",
        "server.port": 443,
        "client.address": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        "network.protocol.version": "1.1",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        "http.response.status_code": rng.choice((200, 200, 200, 201, 302, 404, 500)),
        "http.request.body.size": rng.randrange(0, 4096),
        "http.response.body.size": rng.randrange(200, 250_000),
        "user.id": str(rng.randrange(1, 10**7)),
        "wide_event.type": "request",
        "wide_event.cpu_time_ms": rng.uniform(0.5, 80),
        "wide_event.queue_time_ms": rng.uniform(0, 5),
        "wide_event.elapsed_ms": rng.uniform(2, 900),
        "wide_event.deadline_ms": 30_000.0,
        "wide_event.reported_by": "worker",
        "wide_event.response_incomplete": False,
        "django.view": "orders.views.OrderDetailView",
        "django.url_name": "order-detail",
        "django.db.query_count": rng.randrange(0, 40),
        "django.db.duration_ms": rng.uniform(0, 300),
        "django.db.duplicate_query_count": rng.randrange(0, 5),
        "django.db.slowest_query_ms": rng.uniform(0, 120),
        "django.db.slowest_query": 'SELECT "orders_order"."id", "orders_order"."status" '
        'FROM "orders_order" WHERE "orders_order"."customer_id" = %s ORDER BY "created" DESC',
        "django.version": "5.2.1",
        "gunicorn.version": "23.0.0",
        "gunicorn.worker.id": n % 8,
        "gunicorn.worker.age": rng.randrange(0, 100_000),
        "gunicorn.worker.requests": rng.randrange(1, 100_000),
        "gunicorn.worker.cpu.percent": rng.uniform(0, 100),
        "gunicorn.worker.memory.rss": rng.randrange(80, 400) * 1024 * 1024,
        "gunicorn.worker.threads": 4,
        "gunicorn.worker.open_fds": rng.randrange(10, 200),
        "gunicorn.worker.class": "gthread",
        "gunicorn.workers.total": 8,
        "gunicorn.workers.busy": rng.randrange(0, 9),
        "gunicorn.workers.idle": rng.randrange(0, 9),
        "gunicorn.workers.utilization": rng.random(),
        "gunicorn.workers.cpu.percent": rng.uniform(0, 800),
        "gunicorn.workers.memory.rss": rng.randrange(1, 4) * 1024**3,
        "gunicorn.listen.backlog": rng.randrange(0, 20),
        "gunicorn.master.memory.rss": 60 * 1024 * 1024,
        "gunicorn.monitor.sample_age_ms": rng.uniform(0, 1000),
        "gunicorn.timeout": 30,
        "app.feature_flags": ["new-checkout", "fast-search"],
        "app.cache_hit": rng.random() < 0.7,
        "app.tenant": rng.choice(("acme", "globex", "initech")),
        "app.cart.items": rng.randrange(0, 30),
        "app.cart.total": rng.uniform(0, 2000),
        "app.currency": "EUR",
        "app.experiment": rng.choice(("control", "variant-b")),
        "app.search.terms": ["blue", "shoes", "size 42"],
        "app.request_id": f"{rng.getrandbits(128):032x}",
        "app.retry": False,
    }
    failure = {
        "exception.type": "RuntimeError",
        "exception.message": "payment provider timed out after 3 attempts",
        "exception.stacktrace": STACK_TRACE,
    }
    names = list(attributes)[: count - len(failure) if failed else count]
    chosen = {name: attributes[name] for name in names}
    return {**chosen, **failure} if failed else chosen


# What one worker's consecutive events share (see the module's docstring).
STEADY_WORKER_FIELDS: dict[str, Any] = {
    "client.address": "10.0.0.2",
    "gunicorn.worker.id": 3,
    "gunicorn.worker.cpu.percent": 41.5,
    "gunicorn.worker.memory.rss": 150 * 1024 * 1024,
    "gunicorn.worker.open_fds": 42,
    "gunicorn.workers.busy": 5,
}


def thin_attributes(rng: random.Random) -> dict[str, Any]:
    return {
        "db.system.name": "postgresql",
        "db.namespace": "shop",
        "db.operation.name": "SELECT",
        "db.collection.name": "orders_order",
        "server.address": "db.internal",
        "server.port": 5432,
        "db.response.returned_rows": rng.randrange(0, 100),
        "db.query.summary": "SELECT orders_order",
    }


def make_spans(count: int, seed: int) -> dict[str, list[ReadableSpan]]:
    """``count`` spans of each kind, from a real TracerProvider, by kind."""
    rng = random.Random(seed)
    provider = TracerProvider(
        resource=Resource({"service.name": "shop", "service.version": "4.2.0", "host.name": "h1"}),
        span_limits=SpanLimits(max_span_attributes=1024),
        shutdown_on_exit=False,
    )
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("gunicorn_django_wide_events", "1.0.0")
    batches: dict[str, list[ReadableSpan]] = {}
    for name, sizes, failure_rate, steady in (
        (WIDE_40, (40, 40), 0.0, {}),
        (WIDE_40_60, (40, 60), 0.25, {}),
        (WORKER_STREAM, (40, 40), 0.0, STEADY_WORKER_FIELDS),
    ):
        for n in range(count):
            failed = rng.random() < failure_rate
            attributes = wide_attributes(rng, n, rng.randint(*sizes), failed)
            attributes.update((key, value) for key, value in steady.items() if key in attributes)
            span = tracer.start_span("GET /api/orders/{id}/", kind=SpanKind.SERVER)
            span.set_attributes(attributes)
            if failed:
                span.set_status(Status(StatusCode.ERROR, "RuntimeError"))
            span.end()
        batches[name] = list(memory.get_finished_spans())
        memory.clear()
    for _ in range(count):
        tracer.start_span(
            "SELECT orders_order", kind=SpanKind.CLIENT, attributes=thin_attributes(rng)
        ).end()
    batches[THIN] = list(memory.get_finished_spans())
    provider.shutdown()
    return batches


# -- timing -------------------------------------------------------------------------------------


def stock(spans: Sequence[ReadableSpan]) -> bytes:
    return stock_encode_spans(spans).SerializeToString()


def per_span_us(
    encode: Callable[[Sequence[ReadableSpan]], bytes],
    spans: Sequence[ReadableSpan],
    number: int,
    repeat: int,
) -> float:
    """Median over ``repeat`` runs of the time to encode the batch, per span, in microseconds."""
    runs = timeit.Timer(lambda: encode(spans)).repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number / len(spans) * 1e6


def check_equal(spans: Sequence[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(wire_encode_spans(spans))
    if ours != stock_encode_spans(spans):
        raise SystemExit("otlp_wire output differs from the stock encoder's: not timing it")


# -- report -------------------------------------------------------------------------------------


def describe(spans: Sequence[ReadableSpan]) -> str:
    counts = [len(span.attributes or {}) for span in spans]
    failed = sum(1 for span in spans if "exception.stacktrace" in (span.attributes or {}))
    traces = f", {failed} with a 2 kB stack trace" if failed else ""
    return f"{min(counts)}-{max(counts)} attributes, mean {statistics.mean(counts):.1f}{traces}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=512, help="spans per batch (BSP default)")
    parser.add_argument("--number", type=int, default=5, help="batches per timeit repeat")
    parser.add_argument("--repeat", type=int, default=7, help="timeit repeats (median taken)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the span contents")
    args = parser.parse_args()

    batches = make_spans(args.batch, args.seed)
    emit("gunicorn-django-wide-events OTLP encoder benchmark")
    emit("=" * 78)
    for line in machine_lines():
        emit(line)
    emit()
    emit(
        f"batches of {args.batch} spans; timeit median of {args.repeat} repeats x "
        f"{args.number} batches; us per span"
    )
    for name, spans in batches.items():
        emit(f"{name:<18}{describe(spans)}")
    emit()
    emit(f"    {'batch':<18}{'stock':>10}{'otlp_wire':>12}{'ratio':>9}")
    for name, spans in batches.items():
        check_equal(spans)
        stock_us = per_span_us(stock, spans, args.number, args.repeat)
        wire_us = per_span_us(wire_encode_spans, spans, args.number, args.repeat)
        emit(f"    {name:<18}{stock_us:>10.2f}{wire_us:>12.2f}{stock_us / wire_us:>8.1f}x")
    size = len(wire_encode_spans(batches[WIDE_40_60]))
    emit()
    emit(
        f"    request size, {WIDE_40_60} batch: {size / 1024:.0f} kB "
        f"({size / args.batch:.0f} B per span)"
    )


if __name__ == "__main__":
    main()
