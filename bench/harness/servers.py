"""The benchmark app (``bench/benchapp``) served by gunicorn, one worker per variant.

The worker is sync unless told otherwise (``worker_class``: ``gthread`` with ``threads``,
``gevent``); every variant of one run gets the same class.

``bare`` is gunicorn alone; ``package`` and ``contrib`` run it under ``opentelemetry-instrument``
with this package's instrumentation or the contrib Django one, their spans going over OTLP gRPC
to a counting sink of their own. The worker is a sync one unless told otherwise: an ASGI worker
class (``asgi``, ``uvicorn_worker.UvicornWorker``) serves the app's ASGI entry point.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import psutil

from gunicorn_django_wide_events._master.spool_exporter import PROCESS_NAME as SPOOL_EXPORTER_NAME
from harness import BENCH_DIR, LOOPBACK, VENV_BIN
from harness.measure import memory
from harness.sink import SpanSink

VIEWS: Final = {"hello": "/hello/", "db": "/db/", "ahello": "/ahello/"}
DEFAULT_VIEWS: Final = ("hello", "db")
VARIANTS: Final = ("bare", "package", "contrib")
DESCRIPTIONS: Final = {
    "bare": "gunicorn, no OpenTelemetry",
    "package": "opentelemetry-instrument, this package only",
    "contrib": "opentelemetry-instrument, opentelemetry-instrumentation-django only",
}
DISABLED_INSTRUMENTATIONS: Final = {"package": "django,sqlite3", "contrib": "wide_events,sqlite3"}

# The caller's own OpenTelemetry and gunicorn settings would change what is measured.
STRIPPED_PREFIXES: Final = ("OTEL_", "WIDE_EVENTS_")
STRIPPED_NAMES: Final = ("GUNICORN_CMD_ARGS", "DJANGO_SETTINGS_MODULE", "PYTHONPATH")
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0


def serves_asgi(worker_class: str) -> bool:
    """gunicorn's own ``asgi`` worker, or uvicorn's: they serve ``benchapp.asgi``."""
    return worker_class == "asgi" or "uvicorn" in worker_class.lower()


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
    memory_at_start: tuple[int, int] = (0, 0)
    _worker: psutil.Process | None = None
    exporter: psutil.Process | None = None  # the spools' exporting process, if there is one
    _log: IO[bytes] | None = None

    @property
    def worker(self) -> psutil.Process:
        """The one worker process, known once ``wait_ready`` has returned."""
        if self._worker is None:
            raise RuntimeError(f"{self.variant}: the worker is not known before wait_ready()")
        return self._worker

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
        children = master.children()
        workers = [child for child in children if child.name() != SPOOL_EXPORTER_NAME]
        if len(workers) != 1:
            raise SystemExit(f"{self.variant}: expected one worker, found {workers}")
        self._worker = workers[0]
        self.exporter = next((c for c in children if c.name() == SPOOL_EXPORTER_NAME), None)
        self.memory_at_start = memory(self._worker)

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


def make_servers(
    variants: Sequence[str],
    tmp: Path,
    sink_delay_s: float,
    server_env: dict[str, str],
    worker_class: str = "sync",
    gunicorn_args: Sequence[str] = (),
    threads: int = 1,
) -> list[Server]:
    """One server per variant (not started yet), sharing a fresh benchmark database in
    ``tmp``; each instrumented one with a span sink of its own. Every server runs one worker of
    ``worker_class`` (with ``threads`` threads, for gthread), with ``gunicorn_args``
    (``--worker-connections 1000``)."""
    app = "benchapp.asgi:application" if serves_asgi(worker_class) else "benchapp.wsgi:application"
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
            worker_class,
            *(["--threads", str(threads)] if threads > 1 else []),
            "--bind",
            f"{LOOPBACK}:{port}",
            "--no-control-socket",
            *gunicorn_args,
            app,
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


def start_all(servers: Sequence[Server]) -> None:
    """Start every server, then wait for each: they boot side by side."""
    for server in servers:
        server.start()
    for server in servers:
        server.wait_ready()


def stop_all(servers: Sequence[Server]) -> None:
    """Stop every server, then the sinks: a stopping worker still exports what it holds."""
    for server in servers:
        server.stop()
    for server in servers:
        if server.sink is not None:
            server.sink.stop()
