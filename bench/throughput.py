"""Throughput benchmark (issue 6): what a wide event costs a request, against bare gunicorn and
against the contrib Django instrumentation.

Run: ``/work/venv/bin/python bench/throughput.py`` (about 5 minutes with the defaults;
``--help`` for options, e.g. ``--duration 3 --rounds 3`` for a quick look). Installs Debian's
``wrk`` (``apt-get update && apt-get install -y wrk``) if it is missing.

One run serves the same Django app (``bench/benchapp``: ``/hello/``, a hello world, and
``/db/``, three cheap sqlite queries on a persistent connection) with ONE sync worker, three ways:

``bare``
    ``gunicorn benchapp.wsgi``, no OpenTelemetry at all.
``package``
    this package under ``opentelemetry-instrument``, with
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=django,sqlite3``: the wide event alone (the package
    retires the contrib Django instrumentation anyway).
``contrib``
    ``opentelemetry-instrument`` with only ``opentelemetry-instrumentation-django``
    (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=wide_events,sqlite3``): the thin span users compare to.

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
comparison is about spans.

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
import contextlib
import http.client
import importlib.metadata
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import psutil
from machine import cpu_model

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = BENCH_DIR.parent
VENV_BIN: Final = Path(sys.executable).parent
LOOPBACK: Final = "127.0.0.1"

VIEWS: Final = {"hello": "/hello/", "db": "/db/"}
VARIANTS: Final = ("bare", "package", "contrib")
DISABLED_INSTRUMENTATIONS: Final = {"package": "django,sqlite3", "contrib": "wide_events,sqlite3"}
DESCRIPTIONS: Final = {
    "bare": "gunicorn, no OpenTelemetry",
    "package": "opentelemetry-instrument, this package only",
    "contrib": "opentelemetry-instrument, opentelemetry-instrumentation-django only",
}

# Issue 6's targets.
TARGET_PACKAGE_OVER_BARE: Final = {"hello": 0.80, "db": 0.90}
TARGET_PACKAGE_OVER_CONTRIB_HELLO: Final = 1.5

TRACE_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
STRIPPED_PREFIXES: Final = ("OTEL_", "WIDE_EVENTS_")
STRIPPED_NAMES: Final = ("GUNICORN_CMD_ARGS", "DJANGO_SETTINGS_MODULE", "PYTHONPATH")
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0
QUEUE_FULL: Final = "Queue full, dropping"


def emit(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- the counting sink --------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _length_delimited(buf: bytes, start: int, end: int, wanted: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each length-delimited field number ``wanted`` in ``buf[start:end]``;
    every other field is skipped by its wire type, never decoded."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        wire_type = tag & 7
        if wire_type == 2:
            length, pos = _varint(buf, pos)
            if tag >> 3 == wanted:
                yield pos, pos + length
            pos += length
        elif wire_type == 0:
            _, pos = _varint(buf, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected wire type {wire_type}")


def count_spans(request: bytes) -> int:
    """Spans in a serialised ``ExportTraceServiceRequest``.

    ``resource_spans`` is field 1 of the request, ``scope_spans`` field 2 of ``ResourceSpans``,
    ``spans`` field 2 of ``ScopeSpans``; a span's own bytes are skipped over by their length.
    """
    spans = 0
    for rs_start, rs_end in _length_delimited(request, 0, len(request), 1):
        for ss_start, ss_end in _length_delimited(request, rs_start, rs_end, 2):
            for _ in _length_delimited(request, ss_start, ss_end, 2):
                spans += 1
    return spans


def check_count_spans() -> None:
    """``count_spans`` against messages built with the official protobuf classes, if installed."""
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
        from opentelemetry.proto.trace.v1 import trace_pb2
    except ImportError:
        return
    request = trace_service_pb2.ExportTraceServiceRequest()
    expected = 0
    for resource_index in range(3):
        resource_spans = request.resource_spans.add()
        resource_spans.schema_url = "https://example.test/schema"
        resource_spans.resource.attributes.append(
            KeyValue(key="service.name", value=AnyValue(string_value=f"svc{resource_index}"))
        )
        for scope_index in range(resource_index + 1):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = f"scope{scope_index}"
            for span_index in range(scope_index + 2):
                span = scope_spans.spans.add()
                span.trace_id = bytes(range(16))
                span.span_id = bytes(range(8))
                span.name = "GET hello/"
                span.kind = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
                span.start_time_unix_nano = 1_700_000_000_000_000_000 + span_index
                span.attributes.append(KeyValue(key="k", value=AnyValue(double_value=1.5)))
                span.attributes.append(KeyValue(key="n", value=AnyValue(int_value=-3)))
                span.events.add().name = "event"
                expected += 1
    counted = count_spans(request.SerializeToString())
    if counted != expected:
        raise SystemExit(f"count_spans is wrong: {counted} counted, {expected} built")


class SpanSink:
    """A gRPC ``TraceService`` on loopback that counts spans and acknowledges (after
    ``delay_s``, to play a slow collector)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.spans = 0
        self.exports = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="span-sink"),
            options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)],
        )
        handler = grpc.unary_unary_rpc_method_handler(
            self._export, request_deserializer=None, response_serializer=None
        )
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": handler}),)
        )
        self.port = self._server.add_insecure_port(f"{LOOPBACK}:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        spans = count_spans(request)
        with self._lock:
            self.spans += spans
            self.exports += 1
            self.bytes += len(request)
        if self.delay_s:
            time.sleep(self.delay_s)
        return b""  # an empty ExportTraceServiceResponse: everything accepted

    def count(self) -> int:
        with self._lock:
            return self.spans

    def stop(self) -> None:
        self._server.stop(grace=1).wait(5)


# -- the servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def base_environ(database: Path) -> dict[str, str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(STRIPPED_PREFIXES) and key not in STRIPPED_NAMES
    }
    environ.update(
        PYTHONPATH=str(BENCH_DIR),
        DJANGO_SETTINGS_MODULE="benchapp.settings",
        BENCHAPP_DATABASE=str(database),
        PYTHONUNBUFFERED="1",
    )
    return environ


def otel_environ(variant: str, sink: SpanSink, extra: dict[str, str]) -> dict[str, str]:
    environ = {
        "OTEL_SERVICE_NAME": f"throughput-bench-{variant}",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": DISABLED_INSTRUMENTATIONS[variant],
    }
    environ.update(extra)
    return environ


@dataclass
class Server:
    variant: str
    port: int
    command: list[str]
    own_environ: dict[str, str]  # what this variant sets on top of the base environment
    environ: dict[str, str]
    log_path: Path
    sink: SpanSink | None = None
    process: subprocess.Popen[bytes] | None = None
    worker: psutil.Process | None = None
    memory_at_start: tuple[int, int] = (0, 0)
    _log: Any = None

    def url(self, view: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{VIEWS[view]}"

    def shell_command(self) -> str:
        assignments = [f"{key}={shlex.quote(value)}" for key, value in self.own_environ.items()]
        return " ".join([*assignments, shlex.join(self.command)])

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command,
            env=self.environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=BENCH_DIR,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.variant}: server exited; log:\n{self.log()}")
            status = http_status(self.url("hello"))
            if status is not None:
                if status != 200:
                    raise SystemExit(f"{self.variant}: /hello/ answered {status}:\n{self.log()}")
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"{self.variant}: not ready in {READY_TIMEOUT_S}s:\n{self.log()}")
        for view in VIEWS:
            status = http_status(self.url(view))
            if status != 200:
                raise SystemExit(f"{self.variant}: {VIEWS[view]} answered {status}:\n{self.log()}")
        master = psutil.Process(self.process.pid)
        if "gunicorn" not in " ".join(master.cmdline()):
            raise SystemExit(f"{self.variant}: pid {master.pid} is not gunicorn's master")
        workers = master.children()
        if len(workers) != 1:
            raise SystemExit(f"{self.variant}: expected one worker, found {workers}")
        self.worker = workers[0]
        self.memory_at_start = self.worker_memory()

    def worker_cpu_s(self) -> float:
        """User + system CPU time of the worker process (all its threads) so far."""
        assert self.worker is not None
        times = self.worker.cpu_times()
        return times.user + times.system

    def worker_cpu_by_thread(self) -> dict[str, tuple[float, float]]:
        """User and system CPU seconds of the worker's threads, in three groups: ``main`` (the
        thread that serves requests), ``python`` (the other Python threads: the batch span
        processor's export thread and the package's watchdog, which the kernel names like the
        process) and ``native`` (threads started by C code, gRPC's, which name themselves)."""
        assert self.worker is not None
        pid = self.worker.pid
        process_comm = self._comm(pid, pid)
        groups: dict[str, tuple[float, float]] = {}
        for thread in self.worker.threads():
            if thread.id == pid:
                group = "main"
            elif self._comm(pid, thread.id) == process_comm:
                group = "python"
            else:
                group = "native"
            user, system = groups.get(group, (0.0, 0.0))
            groups[group] = (user + thread.user_time, system + thread.system_time)
        return groups

    @staticmethod
    def _comm(pid: int, tid: int) -> str:
        try:
            return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            return "?"

    def worker_memory(self) -> tuple[int, int]:
        """RSS and USS of the worker, in bytes."""
        assert self.worker is not None
        info = self.worker.memory_full_info()
        return info.rss, info.uss

    def stop(self) -> None:
        """SIGTERM to the master (the worker exports what it still holds), SIGKILL if stuck."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # our own session, started above
                process.wait(5)
        if self._log is not None:
            self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def http_status(url: str) -> int | None:
    match = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    assert match is not None
    conn = http.client.HTTPConnection(match[1], int(match[2]), timeout=5)
    try:
        conn.request("GET", match[3])
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def make_servers(
    variants: Sequence[str],
    tmp: Path,
    sink_delay_s: float,
    server_env: dict[str, str],
) -> list[Server]:
    database = tmp / "bench.sqlite3"
    sys.path.insert(0, str(BENCH_DIR))
    from benchapp.views import create_database

    create_database(str(database))
    servers = []
    for variant in variants:
        port = free_port()
        gunicorn = [
            str(VENV_BIN / "gunicorn"),
            "--workers",
            "1",
            "--worker-class",
            "sync",
            "--bind",
            f"{LOOPBACK}:{port}",
            "--no-control-socket",
            "benchapp.wsgi:application",
        ]
        own = {
            "PYTHONPATH": str(BENCH_DIR),
            "DJANGO_SETTINGS_MODULE": "benchapp.settings",
            "BENCHAPP_DATABASE": str(database),
        }
        sink = None
        command = gunicorn
        if variant != "bare":
            sink = SpanSink(sink_delay_s)
            own.update(otel_environ(variant, sink, server_env))
            command = [str(VENV_BIN / "opentelemetry-instrument"), *gunicorn]
        environ = base_environ(database)
        environ.update(own)
        servers.append(
            Server(variant, port, command, own, environ, tmp / f"{variant}.log", sink=sink)
        )
    return servers


# -- the load -----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    errors: int
    non_2xx: int
    latency: str  # mean
    p50: str
    p99: str
    output: str


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    emit("wrk not found: installing Debian's wrk (apt-get update && apt-get install -y wrk)")
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        result = subprocess.run(command, capture_output=True, text=True, env=environ, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{shlex.join(command)} failed:\n{result.stdout}{result.stderr}")
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("wrk could not be installed")
    return wrk


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).splitlines()
    return first[0].strip() if first else "unknown"


def run_wrk(wrk: str, url: str, threads: int, connections: int, duration: int) -> WrkResult:
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=duration + 60
    )
    out = result.stdout
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if result.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed ({result.returncode}):\n{out}\n{result.stderr}")
    requests = int(match[1])
    seconds = float(match[2]) / (1000 if match[3] == "ms" else 1)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = re.search(r"Latency\s+(\S+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    return WrkResult(
        requests=requests,
        seconds=seconds,
        rps=float(rps[1]) if rps else requests / seconds,
        errors=errors,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        latency=latency[1] if latency else "?",
        p50=p50[1] if p50 else "?",
        p99=p99[1] if p99 else "?",
        output=out,
    )


def wait_for_spans(sink: SpanSink, before: int, expected: int, timeout_s: float) -> int:
    """Wait until ``expected`` spans arrived since ``before`` and no more came for a moment (the
    requests wrk cut off at the end of its run still end a span each)."""
    deadline = time.monotonic() + timeout_s
    last, last_change = sink.count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now_count = sink.count()
        if now_count != last:
            last, last_change = now_count, time.monotonic()
        if now_count - before >= expected and time.monotonic() - last_change >= 0.3:
            break
    return sink.count() - before


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """One wrk run against one server, and what the worker and the sink did meanwhile."""

    wrk: WrkResult
    spans: int  # received by the sink, the batch flushed
    cpu_s: float  # the worker's user + system CPU time, the flush included
    threads: dict[str, tuple[float, float]]  # the same per thread group: user, system


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


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_lines(wrk: str) -> list[str]:
    from google.protobuf.internal import api_implementation

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    memory = psutil.virtual_memory().total / 2**30
    return [
        f"cpu          {cpu_model()}",
        f"cores        {affinity} usable (os.cpu_count() {os.cpu_count()}), {memory:.1f} GiB",
        f"os           {platform.platform()}",
        f"python       {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        f"gunicorn     {version('gunicorn')}, Django {version('Django')}",
        f"otel         sdk {version('opentelemetry-sdk')}, "
        f"exporter-otlp-proto-grpc {version('opentelemetry-exporter-otlp-proto-grpc')}, "
        f"instrumentation-django {version('opentelemetry-instrumentation-django')}",
        f"protobuf     {version('protobuf')} ({api_implementation.Type()}), "
        f"grpcio {version('grpcio')}",
        f"package      gunicorn-django-wide-events {version('gunicorn-django-wide-events')}",
        f"wrk          {wrk_version(wrk)} ({wrk})",
        f"load         {' '.join(f'{load:.2f}' for load in os.getloadavg())} (1/5/15 min, "
        "at start)",
    ]


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    environ = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--server-env wants KEY=VALUE, got {pair!r}")
        environ[key] = value
    return environ


def bsp_schedule_delay_s(server_env: dict[str, str]) -> float:
    raw = server_env.get("OTEL_BSP_SCHEDULE_DELAY", "5000")
    try:
        return float(raw) / 1000
    except ValueError:
        return 5.0


def run_benchmark(args: argparse.Namespace, wrk: str, servers: list[Server]) -> None:
    views = args.views
    flush_timeout_s = args.flush_timeout or bsp_schedule_delay_s(args.server_env) + 3.0
    flush_timeout_s += args.sink_delay_ms / 1000 * 8  # a slow sink takes longer to drain
    cells: dict[tuple[str, str], Cell] = defaultdict(Cell)
    warm: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # variant: requests, spans

    def one_run(server: Server, view: str, duration: int) -> Run:
        before = server.sink.count() if server.sink else 0
        threads_before = server.worker_cpu_by_thread()
        cpu_before = server.worker_cpu_s()
        result = run_wrk(wrk, server.url(view), args.threads, args.connections, duration)
        spans = 0
        if server.sink is not None:
            spans = wait_for_spans(server.sink, before, result.requests, flush_timeout_s)
        cpu = server.worker_cpu_s() - cpu_before
        threads_after = server.worker_cpu_by_thread()
        threads = {
            group: (
                user - threads_before.get(group, (0.0, 0.0))[0],
                system - threads_before.get(group, (0.0, 0.0))[1],
            )
            for group, (user, system) in threads_after.items()
        }
        time.sleep(args.pause)
        return Run(result, spans, cpu, threads)

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

    memory = {server.variant: server.worker_memory() for server in servers}
    report(args, servers, cells, memory, warm)


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
    emit("  latency: wrk's mean, p50 and p99 per round (4 connections queue on one worker), median")

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

    if {"bare", "package", "contrib"} <= set(variants):
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


def median_latency(latencies: Sequence[str]) -> str:
    """wrk's mean latency per round (``870.12us``, ``1.23ms``): the median, in its own unit."""
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}
    values = []
    for text in latencies:
        match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
        if match:
            values.append(float(match[1]) * scale[match[2]])
    return f"{median(values):.2f}ms" if values else "?"


# -- the profile ---------------------------------------------------------------------------------


FRAME_RE: Final = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
CATEGORIES: Final = (
    "package",
    "api",
    "sdk",
    "encoder",
    "transport",
    "django",
    "gunicorn",
    "other",
)
INSTRUMENTATION: Final = frozenset({"package", "api", "sdk", "encoder", "transport"})
CATEGORY_NOTES: Final = {
    "package": "gunicorn_django_wide_events",
    "api": "opentelemetry API: context, attributes, propagators",
    "sdk": "opentelemetry SDK: spans, processors, resources",
    "encoder": "OTLP encoder: SDK spans to protobuf objects",
    "transport": "OTLP gRPC exporter and grpc",
    "django": "Django",
    "gunicorn": "gunicorn",
    "other": "stdlib and the rest, when no frame above is one of these",
}


def frame_category(filename: str) -> str:
    if "gunicorn_django_wide_events" in filename:
        return "package"
    if (
        "opentelemetry/exporter/otlp/proto/common" in filename
        or "google/protobuf" in filename
        or "opentelemetry/proto/" in filename
    ):
        return "encoder"
    if "opentelemetry/exporter" in filename or "/grpc/" in filename:
        return "transport"
    if "opentelemetry/sdk" in filename:
        return "sdk"
    if "opentelemetry/" in filename:
        return "api"
    if "/django/" in filename:
        return "django"
    if "/gunicorn/" in filename:
        return "gunicorn"
    return "other"


def short_frame(frame: str) -> tuple[str, str]:
    """``func (path:line)`` -> (``func (short/path.py)``, category)."""
    match = FRAME_RE.match(frame.strip())
    if match is None:
        return frame.strip(), "other"
    filename = match["file"]
    category = frame_category(filename)
    short = filename
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3"):
        if marker in short:
            short = short.split(marker, 1)[1]
            break
    return f"{match['func']} ({short})", category


@dataclass
class Sample:
    thread: str
    frames: list[tuple[str, str]]  # (function, category), outermost first
    count: int

    @property
    def owner(self) -> str:
        """The category of the innermost frame that is not ``other``: a stdlib call (a lock, a
        socket, json) is charged to the code that made it."""
        for _, category in reversed(self.frames):
            if category != "other":
                return category
        return "other"

    def instrumentation_frames(self) -> set[tuple[str, str]]:
        """The instrumentation's frames this sample is in, counted from the leaf up to the first
        Django or gunicorn frame: so the package's middleware is charged for its own work and
        for the SDK calls it makes, not for the Django view it wraps."""
        frames = set()
        for frame in reversed(self.frames):
            if frame[1] in ("django", "gunicorn"):
                break
            if frame[1] in INSTRUMENTATION:
                frames.add(frame)
        return frames


def read_raw_profile(raw_path: Path) -> list[Sample]:
    samples = []
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        thread = "?"
        while frames and frames[0].startswith(("process ", "thread ")):
            thread = frames[0]
            frames = frames[1:]
        thread = re.sub(r"^thread \((?:0x)?[0-9a-fA-F]+\): ", "", thread)
        samples.append(Sample(thread, [short_frame(frame) for frame in frames], int(count_text)))
    return samples


def thread_group(thread: str) -> str:
    """py-spy's thread name to the groups of ``Server.worker_cpu_by_thread``."""
    return "main" if thread == "MainThread" else "python"


def summarise_profile(
    raw_path: Path,
    rps: float,
    duration_s: float,
    rate: int,
    top: int,
    gil: bool,
    cpu_per_request: dict[str, tuple[float, float]] | None = None,
) -> None:
    """Print where the worker's time goes: per thread, per category, top functions.

    With ``cpu_per_request`` (user and system microseconds per request of each thread group,
    measured over the profile), a group's user CPU time is spread over its samples: a function's
    "us/req" is its share of its thread's samples times that thread's user CPU per request. py-spy
    sees only part of the time (it misses samples, and ``--gil`` drops the time spent in system
    calls), so the shares are what it measures and the CPU time is the scale. Without it, a sample
    counts as 1/rate s of wall time.
    """
    samples = read_raw_profile(raw_path)
    if not samples:
        emit(f"  no samples in {raw_path}")
        return
    total = sum(sample.count for sample in samples)
    expected = duration_s * rate
    threads: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for sample in samples:
        threads[sample.thread] += sample.count
        groups[thread_group(sample.thread)] += sample.count

    wall_per_sample = 1e6 / (rate * rps * duration_s) if rps else 0.0
    scale: dict[str, float] = {}
    for thread in threads:
        group = thread_group(thread)
        if cpu_per_request is not None and group in cpu_per_request:
            scale[thread] = cpu_per_request[group][0] / groups[group]
        else:
            scale[thread] = wall_per_sample

    kind = "holding the GIL" if gil else "not idle"
    emit(
        f"  {total} samples of threads {kind} ({expected:.0f} per always-sampled thread at "
        f"{rate} Hz over {duration_s:g}s); wrk: {rps:.0f} req/s under the profiler "
        f"({1e6 / rps if rps else 0:.0f} us/request)"
    )
    if cpu_per_request is not None:
        emit("  the worker's CPU per request meanwhile (psutil, per thread group):")
        for group, (user, system) in sorted(cpu_per_request.items()):
            emit(
                f"    {group:7} user {user:6.1f} us  system {system:6.1f} us  "
                f"({groups.get(group, 0)} samples)"
            )
        emit("  'us/req' below = a thread's user CPU per request x the share of its samples")
    else:
        emit(f"  'us/req' below = samples x {wall_per_sample:.3f} (wall time)")

    owners: dict[str, Counter[str]] = defaultdict(Counter)
    inclusive: Counter[tuple[str, str, str]] = Counter()
    self_time: Counter[tuple[str, tuple[str, str]]] = Counter()
    for sample in samples:
        owners[sample.thread][sample.owner] += sample.count
        for name, category in sample.instrumentation_frames():
            inclusive[sample.thread, name, category] += sample.count
        if sample.frames:
            self_time[sample.thread, sample.frames[-1]] += sample.count

    def share(thread: str, count: float) -> str:
        return f"{count / threads[thread] * 100:5.1f}% {count * scale[thread]:6.1f} us/req"

    emit("  per thread (% of the thread's samples), charged to the innermost non-stdlib frame:")
    for thread, count in threads.most_common():
        emit(f"    {share(thread, count)}  {thread} ({count / expected * 100:.0f}% of wall time)")
        for category in CATEGORIES:
            if owners[thread][category]:
                emit(
                    f"      {share(thread, owners[thread][category])}  {category:9} "
                    f"({CATEGORY_NOTES[category]})"
                )
    emit(f"  top {top} instrumentation functions by inclusive time (with what they call, except")
    emit("  Django: the middleware is charged for its own work, not for the view it wraps):")
    by_time = sorted(inclusive.items(), key=lambda item: -item[1] * scale[item[0][0]])
    for (thread, name, category), count in by_time[:top]:
        emit(f"    {share(thread, count)}  [{category}] {name}  ({thread})")
    emit(f"  top {top} functions by self time in the instrumentation (package, api, sdk, encoder,")
    emit("  transport):")
    shown = 0
    self_by_time = sorted(self_time.items(), key=lambda item: -item[1] * scale[item[0][0]])
    for (thread, (name, category)), count in self_by_time:
        if category in INSTRUMENTATION:
            emit(f"    {share(thread, count)}  [{category}] {name}  ({thread})")
            shown += 1
            if shown >= top:
                break
    emit(f"  top {top} functions by self time, all code:")
    for (thread, (name, category)), count in self_by_time[:top]:
        emit(f"    {share(thread, count)}  [{category}] {name}  ({thread})")


def run_profile(args: argparse.Namespace, wrk: str, server: Server, tmp: Path) -> None:
    py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    if not Path(py_spy).exists():
        emit("py-spy is not installed (pip install py-spy): no profile")
        return
    assert server.worker is not None
    raw_path = Path(args.profile_out) if args.profile_out else tmp / "profile.txt"
    seconds = args.profile
    command = [
        py_spy,
        "record",
        "--pid",
        str(server.worker.pid),
        "--duration",
        f"{seconds:g}",
        "--rate",
        str(args.profile_rate),
        "--format",
        "raw",
        "--threads",
        "--full-filenames",
        "--nonblocking",
        *([] if args.profile_all else ["--gil"]),
        "--output",
        str(raw_path),
    ]
    emit()
    emit(f"== profile of the {server.variant} worker on /hello/ (py-spy)")
    emit(f"  {shlex.join(command)}")
    results: list[WrkResult] = []
    load = threading.Thread(
        target=lambda: results.append(
            run_wrk(wrk, server.url("hello"), args.threads, args.connections, seconds + 2)
        )
    )
    load.start()
    time.sleep(1.0)
    cpu_before = server.worker_cpu_by_thread()
    started = time.monotonic()
    spy = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 60)
    elapsed = time.monotonic() - started
    cpu_after = server.worker_cpu_by_thread()
    load.join()
    if spy.returncode != 0 or not raw_path.exists():
        emit(f"  py-spy failed ({spy.returncode}): {spy.stderr.strip()[-2000:]}")
        return
    rps = results[0].rps if results else 0.0
    requests = rps * elapsed
    cpu_per_request = (
        {
            group: (
                (user - cpu_before.get(group, (0.0, 0.0))[0]) / requests * 1e6,
                (system - cpu_before.get(group, (0.0, 0.0))[1]) / requests * 1e6,
            )
            for group, (user, system) in cpu_after.items()
        }
        if requests
        else None
    )
    summarise_profile(
        raw_path,
        rps,
        seconds,
        args.profile_rate,
        args.profile_top,
        not args.profile_all,
        cpu_per_request,
    )
    if args.profile_out:
        emit(f"  raw stacks: {raw_path}")


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds per wrk run (whole seconds) [5]"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant and view [5]")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds, 0: none [2]")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads [1]")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections [4]")
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
        default=list(VIEWS),
        help=f"comma-separated, of {','.join(VIEWS)} [all]",
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
    args.server_env = parse_env(args.server_env)
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    check_count_spans()
    wrk = ensure_wrk()
    emit("== machine")
    for line in machine_lines(wrk):
        emit(f"  {line}")
    emit()
    emit("== command")
    emit(f"  {shlex.join([sys.executable, *sys.argv])}")
    variants = [args.profile_variant] if args.profile_only else args.variants
    with tempfile.TemporaryDirectory(prefix="wide-events-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        servers = make_servers(variants, tmp, args.sink_delay_ms / 1000, args.server_env)
        emit()
        emit("== servers (one sync worker each, started from bench/)")
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
            for server in servers:
                server.start()
            for server in servers:
                server.wait_ready()
            if not args.profile_only:
                run_benchmark(args, wrk, servers)
            if args.profile:
                profiled = next(s for s in servers if s.variant == args.profile_variant)
                run_profile(args, wrk, profiled, tmp)
        finally:
            for server in servers:
                server.stop()
            for server in servers:
                if server.sink is not None:
                    server.sink.stop()
            if args.keep_logs:
                target = Path(args.keep_logs)
                target.mkdir(parents=True, exist_ok=True)
                for server in servers:
                    if server.log_path.exists():
                        shutil.copy(server.log_path, target / server.log_path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
