"""Fixtures that run the real thing: gunicorn serving Django, exporting OTLP.

The package under test hooks into gunicorn's process model (master, forked
workers, signals, graceful shutdown), which in-process tests cannot
reproduce.  So each test starts real gunicorn processes from the venv that
runs pytest, in their own process group, and they export to the session's
in-process ``OtlpReceiver``.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import psutil
import pytest

from gunicorn_django_wide_events._master.spool_exporter import PROCESS_NAME as SPOOL_EXPORTER_NAME
from tests.integration.otlp_receiver import OtlpReceiver
from tests.waiting import wait_until

LOOPBACK = "127.0.0.1"
INTEGRATION_DIR = Path(__file__).resolve().parent
#: The directory of the interpreter running pytest, so the gunicorn and
#: opentelemetry-instrument scripts come from the same virtualenv.
VENV_BIN = Path(sys.executable).parent
#: Variables dropped from the inherited environment: the test sets what it
#: needs explicitly, and the developer's shell must not leak in.
STRIPPED_PREFIXES = ("OTEL_", "WIDE_EVENTS_")
#: GUNICORN_CMD_ARGS would silently add settings to every server.
STRIPPED_NAMES = ("GUNICORN_CMD_ARGS",)
STARTUP_TIMEOUT = 30.0
POLL_INTERVAL = 0.05
TEARDOWN_TIMEOUT = 15.0


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class Headers(dict[str, str]):
    """Response headers keyed by lowercase name, looked up case-insensitively.

    Repeated headers are joined with ``", "`` (``Set-Cookie`` aside, that is
    what HTTP allows), so a plain dict is enough for assertions.
    """

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]]) -> Headers:
        headers = cls()
        for name, value in pairs:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


class GunicornServer:
    """One running gunicorn master (and its workers) in its own process group."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        log_path: Path,
        log_file: IO[bytes],
        command: Sequence[str],
    ) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        self.command = list(command)
        self._log_file = log_file

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        """The master's pid (opentelemetry-instrument execs gunicorn in place)."""
        return self.process.pid

    def log_text(self) -> str:
        """Everything the master and workers wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    # ----------------------------------------------------------------- HTTP

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        timeout: float = 30,
    ) -> tuple[int, Headers, bytes]:
        """Send one request with http.client; returns (status, headers, body).

        http.client (rather than urllib) sends headers exactly as given, so
        tests can send odd or conflicting ones, and it never follows
        redirects or raises on error statuses.
        """
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            data = response.read()
            return response.status, Headers.from_pairs(response.getheaders()), data
        finally:
            connection.close()

    def get(
        self,
        path: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, Headers, bytes]:
        """``request("GET", path, ...)``."""
        return self.request("GET", path, headers=headers, timeout=timeout)

    def send_raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Write raw bytes on a fresh connection and read until the server closes.

        For requests http.client refuses to produce (malformed request
        lines, bad headers).  Include ``Connection: close`` for well-formed
        requests to keep-alive workers, or this waits for the keep-alive
        timeout.  Raises ``TimeoutError`` if the server never closes.
        """
        chunks: list[bytes] = []
        with socket.create_connection((LOOPBACK, self.port), timeout=timeout) as sock:
            sock.sendall(data)
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except ConnectionResetError:
                pass
            except TimeoutError as exc:
                raise TimeoutError(
                    f"server did not close within {timeout}s; got {b''.join(chunks)!r}"
                ) from exc
        return b"".join(chunks)

    # ------------------------------------------------------------ processes

    def worker_pids(self) -> list[int]:
        """Pids of the master's current workers: its children that gunicorn booted as workers
        (not the spools' exporter, nor a short-lived exporting child)."""
        booted = {int(pid) for pid in BOOTED_WORKER.findall(self.log_text())}
        return sorted(worker.pid for worker in workers_of(self.pid) if worker.pid in booted)

    def wait_for_workers(self, count: int, timeout: float = STARTUP_TIMEOUT) -> list[int]:
        """Wait until the master has at least ``count`` workers; return their pids.

        The port accepts connections as soon as the master binds it, before
        workers exist, so tests that inspect workers wait here first.
        """
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            if len(pids) >= count:
                return pids
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} worker(s), have {pids}\n--- log ---\n{self.log_text()}"
                )
            time.sleep(POLL_INTERVAL)

    def stop(self, timeout: float = TEARDOWN_TIMEOUT) -> int:
        """SIGTERM the process group, wait, and return the master's exit code.

        If the master is still alive after ``timeout`` the group is killed
        and ``AssertionError`` (with the log) is raised: a shutdown that
        hangs is a failure in itself.
        """
        if self.process.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.process.wait()
                raise AssertionError(
                    f"gunicorn did not exit within {timeout}s of SIGTERM\n"
                    f"--- log ---\n{self.log_text()}"
                ) from None
        return int(self.process.returncode)

    def _teardown(self) -> None:
        """Stop whatever is left, however it behaves, and release the log."""
        if self.process.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(TEARDOWN_TIMEOUT)
        # Also reaps workers orphaned by a master that died first.
        _signal_group(self.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait()
        self._log_file.close()

    def __repr__(self) -> str:
        return f"<GunicornServer pid={self.pid} url={self.url}>"


class StartGunicorn(Protocol):
    """Signature of the ``gunicorn_server`` factory."""

    def __call__(
        self,
        *,
        protocol: str = "grpc",
        worker_class: str = "sync",
        workers: int = 1,
        threads: int = 1,
        timeout: int = 30,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        launcher: str = "instrument",
        config_source: str = "",
        app: str = "djangoapp.wsgi",
    ) -> GunicornServer: ...


def build_environment(
    receiver: OtlpReceiver,
    protocol: str,
    database: Path,
    runtime_dir: Path,
    overrides: Mapping[str, str | None] | None,
) -> dict[str, str]:
    """The gunicorn environment: clean of OTEL_*/WIDE_EVENTS_*, then ours.

    ``XDG_RUNTIME_DIR`` points at a private directory because gunicorn (25.1+)
    puts its control socket there, falling back to ``~/.gunicorn/gunicorn.ctl``;
    a shared path would let concurrent servers unlink each other's socket.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(STRIPPED_PREFIXES) and name not in STRIPPED_NAMES
    }
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = (
        f"{INTEGRATION_DIR}{os.pathsep}{existing}" if existing else str(INTEGRATION_DIR)
    )
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "djangoapp.settings",
            "DJANGOAPP_DATABASE": str(database),
            "XDG_RUNTIME_DIR": str(runtime_dir),
            "OTEL_SERVICE_NAME": "djangoapp-tests",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint(protocol),
            # Export 50 ms after a span ends instead of 5 s: tests stay fast.
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "PYTHONUNBUFFERED": "1",
            # Show DeprecationWarnings in the log so tests can assert on them.
            "PYTHONWARNINGS": "default",
        }
    )
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


AUTO_CONFIG_LINE = "import gunicorn_django_wide_events.auto  # noqa: F401\n"


def run_gunicorn_until_it_exits(
    receiver: OtlpReceiver,
    tmp_path: Path,
    launcher: str,
    env: Mapping[str, str | None],
    instrument_flags: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run a gunicorn expected to stop at start-up (a bad setting), to its end.

    ``launcher="instrument"`` runs it under ``opentelemetry-instrument`` (with
    ``instrument_flags``), ``"config"`` with a config file importing ``auto``.
    """
    environment = build_environment(receiver, "grpc", tmp_path / "db.sqlite3", tmp_path, env)
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(AUTO_CONFIG_LINE)
    gunicorn = [
        str(VENV_BIN / "gunicorn"),
        "djangoapp.wsgi",
        "--bind",
        f"127.0.0.1:{free_port()}",
        "--control-socket",
        str(tmp_path / "gunicorn.ctl"),
    ]
    if launcher == "instrument":
        command = [str(VENV_BIN / "opentelemetry-instrument"), *instrument_flags, *gunicorn]
    else:
        command = [*gunicorn, "-c", str(config)]
    return subprocess.run(
        command,
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_until_listening(
    process: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float
) -> None:
    """Poll until the port accepts TCP, failing early if gunicorn exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(
                f"gunicorn exited with {process.returncode} before listening\n"
                f"--- log ---\n{log_path.read_text(errors='replace')}"
            )
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"gunicorn not listening on {port} after {timeout}s\n"
                f"--- log ---\n{log_path.read_text(errors='replace')}"
            )
        time.sleep(POLL_INTERVAL)


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """One receiver for the whole session (tests tell events apart by path)."""
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def receiver(otlp_receiver: OtlpReceiver) -> OtlpReceiver:
    """The session receiver, emptied and back to full speed for this test."""
    otlp_receiver.clear()
    otlp_receiver.set_delay(0)
    return otlp_receiver


# What gunicorn's arbiter logs in each worker it forks, whatever its class.
BOOTED_WORKER = re.compile(r"Booting worker with pid: (\d+)")


def workers_of(master_pid: int) -> list[psutil.Process]:
    """The children of a gunicorn master but its spools' exporting process (by its name,
    which it takes right after its fork: a child this young may still be it)."""
    try:
        children = psutil.Process(master_pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return []
    workers = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name() != SPOOL_EXPORTER_NAME:
                workers.append(child)
    return workers


def spool_exporter_of(master_pid: int) -> psutil.Process | None:
    """The master's spools' exporting process, if it runs (and took its name) now."""
    try:
        children = psutil.Process(master_pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return None
    exporters = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name() == SPOOL_EXPORTER_NAME:
                exporters.append(child)
    return exporters[0] if len(exporters) == 1 else None


def the_spool_exporter_of(master_pid: int) -> psutil.Process:
    """The master's spools' exporting process, waited for."""
    wait_until(lambda: spool_exporter_of(master_pid) is not None, what="the spools' exporter")
    exporter = spool_exporter_of(master_pid)
    assert exporter is not None
    return exporter


class GunicornLauncher:
    """Starts gunicorn serving ``djangoapp.wsgi`` (or ``app``, e.g. ``djangoapp.asgi`` for the
    ASGI worker classes) under ``base_dir``; ``close()`` stops all.

    ``launcher="instrument"`` runs ``opentelemetry-instrument gunicorn ...``
    (zero-code instrumentation); ``launcher="config"`` runs plain gunicorn
    with ``-c gunicorn.conf.py`` containing ``config_source`` (also given to
    ``opentelemetry-instrument`` when ``config_source`` is set).  Note that
    gunicorn gives command-line options precedence over the config file, so
    ``-w``/``-k``/``--threads``/``--timeout`` always win.  Also, gunicorn
    silently runs the ``gthread`` worker when ``worker_class="sync"`` is
    combined with ``threads > 1``.

    Each server gets its own directory under ``base_dir`` (its cwd, log and
    config file): gunicorn loads ``./gunicorn.conf.py`` from its cwd even
    without ``-c``, so servers must not share a cwd.
    """

    def __init__(self, receiver: OtlpReceiver, base_dir: Path) -> None:
        self.receiver = receiver
        self.base_dir = base_dir
        self.servers: list[GunicornServer] = []
        self.cleanups: list[Callable[[], object]] = []

    def __call__(
        self,
        *,
        protocol: str = "grpc",
        worker_class: str = "sync",
        workers: int = 1,
        threads: int = 1,
        timeout: int = 30,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        launcher: str = "instrument",
        config_source: str = "",
        app: str = "djangoapp.wsgi",
    ) -> GunicornServer:
        workdir = self.base_dir / f"gunicorn-{len(self.servers) + 1}"
        workdir.mkdir()
        # Unix socket paths are limited to ~107 bytes, too short for tmp_path
        # with a long test name, so the control socket lives under /tmp.
        runtime_dir = Path(tempfile.mkdtemp(prefix="gunicorn-ctl-"))
        self.cleanups.append(functools.partial(shutil.rmtree, runtime_dir, ignore_errors=True))
        port = free_port()
        gunicorn_args = [
            app,
            "--bind",
            f"{LOOPBACK}:{port}",
            "-w",
            str(workers),
            "-k",
            worker_class,
            "--threads",
            str(threads),
            "--timeout",
            str(timeout),
            "--graceful-timeout",
            "10",
            "--access-logfile",
            "-",
            # Its own control socket: the default path is one per user, and servers would clash.
            "--control-socket",
            str(runtime_dir / "gunicorn.ctl"),
            *extra_args,
        ]
        if launcher == "config" or config_source:
            config_path = workdir / "gunicorn.conf.py"
            config_path.write_text(config_source, encoding="utf-8")
            gunicorn_args = ["-c", str(config_path), *gunicorn_args]
        if launcher == "instrument":
            command = [
                str(VENV_BIN / "opentelemetry-instrument"),
                str(VENV_BIN / "gunicorn"),
                *gunicorn_args,
            ]
        elif launcher == "config":
            command = [str(VENV_BIN / "gunicorn"), *gunicorn_args]
        else:
            raise ValueError(f"unknown launcher {launcher!r}")

        log_path = workdir / "gunicorn.log"
        log_file = log_path.open("wb")
        environment = build_environment(
            self.receiver, protocol, self.base_dir / "db.sqlite3", runtime_dir, env
        )
        try:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            log_file.close()
            raise
        server = GunicornServer(process, port, log_path, log_file, command)
        self.servers.append(server)
        wait_until_listening(process, port, log_path, STARTUP_TIMEOUT)
        return server

    def close(self) -> None:
        for server in self.servers:
            server._teardown()
        for cleanup in self.cleanups:
            cleanup()


@pytest.fixture
def gunicorn_server(otlp_receiver: OtlpReceiver, tmp_path: Path) -> Iterator[StartGunicorn]:
    """Factory that starts gunicorn for one test; every server is stopped after it."""
    launch = GunicornLauncher(otlp_receiver, tmp_path)
    try:
        yield launch
    finally:
        launch.close()


@pytest.fixture(scope="module")
def module_gunicorn_server(
    otlp_receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartGunicorn]:
    """The same factory for servers shared by the tests of one module (they start slowly)."""
    launch = GunicornLauncher(otlp_receiver, tmp_path_factory.mktemp("gunicorn"))
    try:
        yield launch
    finally:
        launch.close()
