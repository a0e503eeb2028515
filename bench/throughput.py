"""Throughput benchmark (issue 6): what a wide event costs a request, against bare gunicorn and
against the contrib Django instrumentation.

Run: ``/work/venv/bin/python bench/throughput.py`` (about 5 minutes with the defaults;
``--help`` for options, e.g. ``--duration 3 --rounds 3`` for a quick look). Installs Debian's
``wrk`` (``apt-get update && apt-get install -y wrk``) if it is missing.

One run serves the same Django app (``bench/benchapp``: ``/hello/``, a hello world, and
``/db/``, three cheap sqlite queries on a persistent connection; ``/ahello/``, the hello world
from ``async def``, on request) with ONE worker, sync unless ``--worker-class`` says otherwise
(e.g. ``--worker-class gevent --connections 32``: a worker serving many connections at once,
measured under as many; an ASGI class serves ``benchapp.asgi``), three ways:

``bare``
    ``gunicorn benchapp.wsgi``, no OpenTelemetry at all.
``package``
    this package under ``opentelemetry-instrument``, with
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=django,sqlite3``: the wide event alone (the package
    retires the contrib Django instrumentation anyway).
``contrib``
    ``opentelemetry-instrument`` with only ``opentelemetry-instrumentation-django``
    (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=wide_events,sqlite3``): the thin span users compare to.

Another worker class is measured against the same class bare: ``--worker-class gthread
--worker-threads 8``, ``--worker-class gevent --connections 32``, or an ASGI class serving
``benchapp.asgi`` with concurrency, e.g. ``--worker-class asgi --connections 32 --views
hello,ahello,db`` (or
``uvicorn_worker.UvicornWorker``). Under an ASGI class, the ``contrib`` variant needs
``opentelemetry-instrumentation-asgi``, which the contrib Django instrumentation uses there.

The three servers run side by side on loopback ports for the whole run (an idle server costs
nothing measurable), so every variant is measured warm. Load comes from ``wrk -t1 -c4``; each
round drives every view of every variant once, and the order of the variants rotates from round
to round, so that machine drift and position effects hit all variants alike. The result per
variant and view is the median of the rounds' requests per second.

Spans go over OTLP gRPC (the SDK's stock exporter and batch processor, with their defaults) to a
counting sink in this process: one gRPC server per instrumented variant, which walks the protobuf
wire format just deep enough to count the spans of each export request (resource spans, scope
spans, spans) and decodes nothing else. After every round the script waits until the sink has
counted as many spans as wrk counted responses (the batch processor exports a partial batch
only every ``OTEL_BSP_SCHEDULE_DELAY``, 5 s by default), so no export of one round runs during
another round. A round's spans that never arrive within that wait (``--flush-timeout``) were
dropped: the batch processor drops spans when its queue is full (the SDK logs "Queue full" only
once per burst, so the log only says whether it happened); ``--sink-delay-ms`` makes the sink a
slow collector, to see that happen. Metrics and logs exporters are off
(``OTEL_METRICS_EXPORTER=none``, ``OTEL_LOGS_EXPORTER=none``) in both instrumented variants: the
comparison is about spans. ``--metrics`` turns the metrics on in both
(``OTEL_METRICS_EXPORTER=otlp``, to the same sink, which takes and counts them): the package's
``http.server.request.duration`` and ``http.server.active_requests`` (and the master's own),
the contrib instrumentation's ``http.server.duration`` and ``http.server.active_requests`` (the
stable names with ``--server-env OTEL_SEMCONV_STABILITY_OPT_IN=http``). The cost of the
package's metrics alone, in one run: ``bench/compare.py`` with a variant that turns them on.

Besides requests per second (and the ratios and per-request overhead derived from them) it
prints wrk's latencies, the worker's CPU time per request by thread (psutil: the request thread,
the export thread, gRPC's native threads) and the worker's RSS and USS after the load. Extra
variables for the instrumented servers go in with ``--server-env KEY=VALUE`` (for example
``OTEL_TRACES_EXPORTER=none`` with ``--flush-timeout 0.1`` measures the request path without
export).

``--profile SECONDS`` then runs py-spy (``pip install py-spy``; ``--profile-variant`` picks the
worker, ``package`` by default) while wrk drives ``/hello/``, and prints where the worker's time
goes per thread: by category (the package, the OpenTelemetry API and SDK, the OTLP encoder and
transport, Django, gunicorn) and by function. py-spy samples the thread holding the GIL
(``--profile-all``: every thread that is not idle); each thread's share of samples is scaled to
its user CPU time per request, measured with psutil over the same seconds.
"""

from __future__ import annotations

import argparse
import math
import shlex
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from harness import measure
from harness.load import ensure_wrk, median_latency
from harness.machine import load_test_machine_lines
from harness.profile import profile_worker
from harness.report import emit, median
from harness.run import Run, measured_run
from harness.servers import (
    DEFAULT_VIEWS,
    DESCRIPTIONS,
    VARIANTS,
    VIEWS,
    Server,
    make_servers,
    serves_asgi,
    start_all,
    stop_all,
)
from harness.sink import bsp_schedule_delay_s, check_count_spans

# Issue 6's targets.
TARGET_PACKAGE_OVER_BARE: Final = {"hello": 0.80, "db": 0.90}
TARGET_PACKAGE_OVER_CONTRIB_HELLO: Final = 1.5

QUEUE_FULL: Final = "Queue full, dropping"  # the SDK's warning when the batch queue overflows


# -- the rounds ---------------------------------------------------------------------------------


@dataclass
class Cell:
    """One variant on one view: its rounds."""

    rps: list[float] = field(default_factory=list)
    requests: int = 0
    spans: int = 0
    errors: int = 0
    non_2xx: int = 0
    latencies: list[str] = field(default_factory=list)
    p50s: list[str] = field(default_factory=list)
    p99s: list[str] = field(default_factory=list)
    cpu_s: float = 0.0  # the worker's user + system CPU time over the rounds, flushes included
    # the same by thread group (main, python, native): user and system seconds
    threads: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0]))


def run_benchmark(args: argparse.Namespace, wrk: str, servers: list[Server]) -> None:
    """The warm-up, then the rounds (every view of every variant once, the order of the
    variants rotated), then the report."""
    views = args.views
    flush_timeout_s = args.flush_timeout or bsp_schedule_delay_s(args.server_env) + 3.0
    flush_timeout_s += args.sink_delay_ms / 1000 * 8  # a slow sink takes longer to drain
    cells: dict[tuple[str, str], Cell] = defaultdict(Cell)
    warm: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # variant: requests, spans

    def one_run(server: Server, view: str, duration: int) -> Run:
        run = measured_run(
            wrk,
            server,
            view,
            threads=args.threads,
            connections=args.connections,
            duration=duration,
            flush_timeout_s=flush_timeout_s,
        )
        time.sleep(args.pause)
        return run

    if args.warmup > 0:
        emit(f"warm-up: {args.warmup:g}s per variant and view")
        for server in servers:
            for view in views:
                run = one_run(server, view, args.warmup)
                warm[server.variant][0] += run.wrk.requests
                warm[server.variant][1] += run.spans

    started = time.monotonic()
    for round_index in range(args.rounds):
        shift = round_index % len(servers)
        order = servers[shift:] + servers[:shift]
        line = []
        for view in views:
            for server in order:
                run = one_run(server, view, args.duration)
                result = run.wrk
                cell = cells[server.variant, view]
                cell.rps.append(result.rps)
                cell.requests += result.requests
                cell.spans += run.spans
                cell.cpu_s += run.cpu_s
                for group, (user, system) in run.threads.items():
                    cell.threads[group][0] += user
                    cell.threads[group][1] += system
                cell.errors += result.errors
                cell.non_2xx += result.non_2xx
                cell.latencies.append(result.latency)
                cell.p50s.append(result.p50)
                cell.p99s.append(result.p99)
                line.append(f"{server.variant}/{view} {result.rps:.0f}")
        emit(
            f"round {round_index + 1}/{args.rounds} ({time.monotonic() - started:.0f}s): "
            + ", ".join(line)
        )

    memory = {server.variant: measure.memory(server.worker) for server in servers}
    report(args, servers, cells, memory, warm)


# -- the report ---------------------------------------------------------------------------------


def fmt_ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def report(
    args: argparse.Namespace,
    servers: list[Server],
    cells: dict[tuple[str, str], Cell],
    memory: dict[str, tuple[int, int]],
    warm: dict[str, list[int]],
) -> None:
    variants = [server.variant for server in servers]
    views = args.views
    rps = {key: median(cell.rps) for key, cell in cells.items()}

    emit()
    emit(
        f"== requests/s per round (wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s)"
    )
    for view in views:
        for variant in variants:
            cell = cells[variant, view]
            low, high = min(cell.rps), max(cell.rps)
            spread = (high - low) / rps[variant, view] * 100
            rounds = " ".join(f"{value:7.0f}" for value in cell.rps)
            emit(f"  {view:5} {variant:8} {rounds}   spread {spread:4.1f}%")

    emit()
    emit("== results (median of rounds)")
    header = (
        f"  {'view':5} {'variant':8} {'req/s':>8} {'us/req':>7} {'overhead':>9} "
        f"{'/bare':>6} {'/contrib':>8} {'cpu/req':>8}  {'mean':>7} {'p50':>7} {'p99':>7}  "
        "errors"
    )
    emit(header)
    for view in views:
        bare = rps.get(("bare", view), float("nan"))
        contrib = rps.get(("contrib", view), float("nan"))
        for variant in variants:
            value = rps[variant, view]
            cell = cells[variant, view]
            overhead = 1e6 / value - 1e6 / bare if variant != "bare" else 0.0
            overhead_text = f"{overhead:+7.1f}us" if variant != "bare" else f"{'-':>9}"
            latencies = " ".join(
                f"{median_latency(values):>7}" for values in (cell.latencies, cell.p50s, cell.p99s)
            )
            emit(
                f"  {view:5} {variant:8} {value:8.0f} {1e6 / value:7.1f} {overhead_text} "
                f"{fmt_ratio(value / bare):>6} {fmt_ratio(value / contrib):>8} "
                f"{cell.cpu_s / cell.requests * 1e6 if cell.requests else 0:6.1f}us  {latencies}  "
                f"{cell.errors} socket, {cell.non_2xx} non-2xx"
            )
    emit("  us/req = 1e6 / (req/s); overhead = us/req of the variant - us/req of bare gunicorn;")
    emit(
        "  cpu/req: the worker's user + system CPU time (all threads, export included) per request;"
    )
    emit(
        f"  latency: wrk's mean, p50 and p99 per round ({args.connections} connections on one "
        f"{args.worker_class} worker), median"
    )

    emit()
    emit("== worker CPU per request by thread (user + system, us; whole rounds, flushes included)")
    emit(f"  {'view':5} {'variant':8} {'total':>7} {'main':>20} {'python':>20} {'native':>20}")
    for view in views:
        for variant in variants:
            cell = cells[variant, view]
            if not cell.requests:
                continue
            columns = []
            for group in ("main", "python", "native"):
                user, system = cell.threads.get(group, (0.0, 0.0))
                per = 1e6 / cell.requests
                columns.append(
                    f"{(user + system) * per:6.1f} ({user * per:5.1f}+{system * per:5.1f})"
                )
            emit(
                f"  {view:5} {variant:8} {cell.cpu_s * 1e6 / cell.requests:7.1f} "
                + " ".join(f"{column:>20}" for column in columns)
            )
    emit("  main: the request thread; python: the export thread of the batch span processor (and")
    emit("  the package's watchdog, idle here); native: gRPC's own threads; (user+system)")

    emit()
    emit("== spans at the collector (OTLP gRPC, counted per round after the batch was flushed)")
    emit(f"  {'view':5} {'variant':8} {'requests':>9} {'spans':>9} {'spans/req':>9} {'dropped':>8}")
    queue_full = {server.variant: QUEUE_FULL in server.log() for server in servers if server.sink}
    for view in views:
        for server in servers:
            if server.sink is None:
                continue
            cell = cells[server.variant, view]
            ratio = cell.spans / cell.requests if cell.requests else float("nan")
            emit(
                f"  {view:5} {server.variant:8} {cell.requests:9d} {cell.spans:9d} "
                f"{ratio:9.4f} {max(cell.requests - cell.spans, 0):8d}"
            )
    for server in servers:
        if server.sink is None:
            continue
        sink = server.sink
        emit(
            f"  {server.variant}: {sink.exports} export requests, {sink.spans} spans, "
            f"{sink.bytes / max(sink.spans, 1):.0f} bytes/span on the wire; warm-up "
            f"{warm[server.variant][0]} requests, {warm[server.variant][1]} spans; the SDK's "
            f"'Queue full' warning {'WAS' if queue_full[server.variant] else 'was not'} logged"
        )
        if sink.metric_exports:
            emit(
                f"  {server.variant}: {sink.metric_exports} metrics export requests, "
                f"{sink.metric_bytes} bytes (from every process of the server)"
            )
    emit("  dropped: requests served minus spans received within the round's flush wait;")
    emit("  spans/req slightly above 1: requests wrk cut off at the end of a round were still")
    emit("  served, and traced, but not counted by wrk")

    emit()
    emit("== worker memory: after the load (after start-up and three requests)")
    for server in servers:
        rss, uss = memory[server.variant]
        rss0, uss0 = server.memory_at_start
        emit(
            f"  {server.variant:8} RSS {rss / 2**20:6.1f} MiB ({rss0 / 2**20:5.1f})   "
            f"USS {uss / 2**20:6.1f} MiB ({uss0 / 2**20:5.1f})"
        )

    if {"bare", "package", "contrib"} <= set(variants) and args.worker_class == "sync":
        emit()
        emit("== issue 6 targets")
        for view, goal in TARGET_PACKAGE_OVER_BARE.items():
            if view in views:
                ratio = rps["package", view] / rps["bare", view]
                emit(f"  package/bare on {view}: {ratio:.2f} {verdict(ratio, goal)}")
        if "hello" in views:
            ratio = rps["package", "hello"] / rps["contrib", "hello"]
            goal = TARGET_PACKAGE_OVER_CONTRIB_HELLO
            emit(f"  package/contrib on hello: {ratio:.2f} {verdict(ratio, goal)}")
        package_rss, contrib_rss = memory["package"][0], memory["contrib"][0]
        emit(
            f"  package worker RSS {package_rss / 2**20:.1f} MiB vs contrib "
            f"{contrib_rss / 2**20:.1f} MiB (goal: not higher): "
            f"{'met' if package_rss <= contrib_rss else 'NOT met'}"
        )


def verdict(ratio: float, goal: float) -> str:
    return f"(goal >= {goal:.2f}): {'met' if ratio >= goal else 'NOT met'}"


# -- main ---------------------------------------------------------------------------------------


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    environ = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--server-env wants KEY=VALUE, got {pair!r}")
        environ[key] = value
    return environ


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds per wrk run (whole seconds) [5]"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant and view [5]")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds, 0: none [2]")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads [1]")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections [4]")
    parser.add_argument(
        "--worker-threads", type=int, default=1, help="gunicorn --threads (gthread) [1]"
    )
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between runs [0.3]")
    parser.add_argument(
        "--variants",
        type=lambda text: text.split(","),
        default=list(VARIANTS),
        help=f"comma-separated, of {','.join(VARIANTS)} [all]",
    )
    parser.add_argument(
        "--views",
        type=lambda text: text.split(","),
        default=list(DEFAULT_VIEWS),
        help=f"comma-separated, of {','.join(VIEWS)} [{','.join(DEFAULT_VIEWS)}]",
    )
    parser.add_argument(
        "--worker-class",
        default="sync",
        help="gunicorn's -k for every server: sync, gthread, gevent; asgi or "
        "uvicorn_worker.UvicornWorker serve benchapp.asgi [sync]",
    )
    parser.add_argument(
        "--gunicorn-args",
        type=shlex.split,
        default=[],
        help='more gunicorn options for every server, e.g. "--threads 8" [none]',
    )
    parser.add_argument(
        "--sink-delay-ms",
        type=float,
        default=0.0,
        help="the sink waits this long before acknowledging each export (a slow collector) [0]",
    )
    parser.add_argument(
        "--flush-timeout",
        type=float,
        default=0.0,
        help="longest wait for a round's spans [OTEL_BSP_SCHEDULE_DELAY + 3 s]",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the instrumented servers (e.g. OTEL_BSP_SCHEDULE_DELAY=1000)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="the instrumented servers export metrics too (OTEL_METRICS_EXPORTER=otlp), every "
        "OTEL_METRIC_EXPORT_INTERVAL (the SDK's 60 s unless --server-env sets it)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="after the benchmark, py-spy a worker (--profile-variant) on /hello/ this long [0]",
    )
    parser.add_argument("--profile-only", action="store_true", help="skip the benchmark")
    parser.add_argument(
        "--profile-variant", default="package", help="the variant to profile [package]"
    )
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples/s [250]")
    parser.add_argument(
        "--profile-all",
        action="store_true",
        help="sample every thread that is not idle, not only the one holding the GIL (the "
        "default, py-spy --gil: Python's CPU time, which the worker's threads share)",
    )
    parser.add_argument("--profile-top", type=int, default=25, help="functions listed [25]")
    parser.add_argument("--profile-out", default="", help="where to keep py-spy's raw stacks")
    parser.add_argument("--keep-logs", default="", help="copy the servers' logs to this folder")
    args = parser.parse_args(argv)
    for variant in args.variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}")
    for view in args.views:
        if view not in VIEWS:
            parser.error(f"unknown view {view!r}")
    if args.duration < 1 or args.warmup < 0 or args.rounds < 1 or args.profile < 0:
        parser.error("--duration and --rounds must be at least 1, --warmup and --profile >= 0")
    if args.profile_only and not args.profile:
        args.profile = 5
    if args.profile_variant not in VARIANTS:
        parser.error(f"unknown variant {args.profile_variant!r}")
    if args.profile and args.profile_variant not in args.variants:
        args.variants.append(args.profile_variant)
    if serves_asgi(args.worker_class) and "contrib" in args.variants:
        try:
            import opentelemetry.instrumentation.asgi  # noqa: F401
        except ImportError:
            parser.error(
                "the contrib variant under an ASGI worker needs opentelemetry-instrumentation-asgi "
                "(pip install it, or leave contrib out with --variants bare,package)"
            )
    args.server_env = parse_env(args.server_env)
    if args.metrics:
        args.server_env.setdefault("OTEL_METRICS_EXPORTER", "otlp")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    check_count_spans()
    wrk = ensure_wrk()
    emit("== machine")
    for line in load_test_machine_lines(wrk):
        emit(f"  {line}")
    emit()
    emit("== command")
    emit(f"  {shlex.join([sys.executable, *sys.argv])}")
    variants = [args.profile_variant] if args.profile_only else args.variants
    with tempfile.TemporaryDirectory(prefix="wide-events-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        servers = make_servers(
            variants,
            tmp,
            args.sink_delay_ms / 1000,
            args.server_env,
            worker_class=args.worker_class,
            gunicorn_args=args.gunicorn_args,
            threads=args.worker_threads,
        )
        emit()
        emit(f"== servers (one {args.worker_class} worker each, started from bench/)")
        for server in servers:
            emit(f"  {server.variant:8} {DESCRIPTIONS[server.variant]}")
            emit(f"           {server.shell_command()}")
        emit()
        load = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration:g}s"]
        emit(
            f"== load: {shlex.join(load)} --latency URL; {args.rounds} rounds x "
            f"{len(args.views)} views x {len(servers)} variants, variant order rotated every round"
        )
        try:
            start_all(servers)
            if not args.profile_only:
                run_benchmark(args, wrk, servers)
            if args.profile:
                profiled = next(s for s in servers if s.variant == args.profile_variant)
                profile_worker(
                    wrk,
                    profiled,
                    seconds=args.profile,
                    rate=args.profile_rate,
                    all_threads=args.profile_all,
                    top=args.profile_top,
                    threads=args.threads,
                    connections=args.connections,
                    raw_path=Path(args.profile_out) if args.profile_out else tmp / "profile.txt",
                    keep_raw=bool(args.profile_out),
                )
        finally:
            stop_all(servers)
            if args.keep_logs:
                target = Path(args.keep_logs)
                target.mkdir(parents=True, exist_ok=True)
                for server in servers:
                    if server.log_path.exists():
                        shutil.copy(server.log_path, target / server.log_path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
