"""Benchmark of timeout events: do they reach the collector before the worker is gone, and on time?

Run: ``/work/venv/bin/python bench/timeouts.py`` (about 75 s on 2 cores; ``--help`` for options).

A sync worker stuck in a request is killed by gunicorn's master once its heartbeat is
``--timeout`` seconds old; the request's own event would be lost with it. The package's watchdog
thread therefore ends the request's span as a ``timeout`` event a margin (1 s by default) before
that moment, exports it at once, answers the client with a 500 and exits the worker with code 1.
Two promises follow, and this script measures both against real processes:

(a) **Delivered while the worker still lives** (goal: every event). For each timed-out request
    the script records when the span arrived at the collector and when the worker process
    stopped running, both with ``time.monotonic()`` of this process. The collector is the
    tests' in-process ``OtlpReceiver`` (gRPC and HTTP/protobuf), stamping each export request
    as it is handed over. A poller thread reads every worker's state every 2 ms; a worker
    counts as gone at the first poll that finds it a zombie or reaped, so
    ``received <= gone`` is the brief's criterion and ``received <= last seen alive`` the
    strict one (no poll-resolution doubt). An event that never arrives counts as not delivered.
(b) **Sent on time** (goal: p99 < 100 ms late). The event carries ``wide_event.elapsed_ms``
    (request start to the watchdog firing) and ``wide_event.deadline_ms``; their difference is
    how late the watchdog fired. The span's own timestamps give ``end - (start + deadline)``,
    which also covers building the event (stack, attributes) before ``span.end()``.

Setup: ``opentelemetry-instrument gunicorn djangoapp.wsgi`` (the integration tests' Django app,
started with the tests' ``GunicornLauncher``) with 2 sync workers, ``--timeout 2`` (deadline 1 s
after the worker's last heartbeat, which a sync worker refreshes just before accepting) and
``OTEL_BSP_SCHEDULE_DELAY=50``. Requests go to ``/slow/?seconds=30`` in rounds: one request per
worker at the same time (both watchdogs fire and export together), then the script waits until
both workers are gone and both replacements have booted (CPU quiet) before the next round.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import math
import os
import re
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import psutil
from harness import REPO_ROOT
from harness.machine import machine_lines
from harness.report import emit
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

# The tests' launcher and receiver are imported from the checkout, which is not installed.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.integration.conftest import GunicornLauncher, GunicornServer
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan

PROTOCOLS: Final = ("grpc", "http/protobuf")
GUNICORN_TIMEOUT: Final = 2  # seconds; deadline = heartbeat + 2 - 1 (default margin)
WORKERS: Final = 2
SLOW_PATH: Final = "/slow/?seconds=30"
LOOPBACK: Final = "127.0.0.1"
SERVER_ENV: Final = {"OTEL_BSP_SCHEDULE_DELAY": "50"}

SHARE_GOAL: Final = 1.0  # every event received before its worker is gone
LATENESS_P99_GOAL_MS: Final = 100.0

POLL_INTERVAL_S: Final = 0.002
QUIET_S: Final = 0.3  # a new worker whose CPU time stood still this long has booted
READY_TIMEOUT_S: Final = 30.0
GONE_TIMEOUT_S: Final = 10.0  # gunicorn itself kills a stuck worker within ~3 s
EVENT_GRACE_S: Final = 3.0  # extra wait for events once the round's workers are gone
REQUEST_TIMEOUT_S: Final = 40.0


# -- the collector ------------------------------------------------------------------------------


class StampingReceiver(OtlpReceiver):
    """The tests' OTLP receiver, also noting when each span arrived (this process's clocks)."""

    def __init__(self) -> None:
        super().__init__()
        self._arrivals_lock = threading.Lock()
        self._arrivals: dict[tuple[str, str], tuple[float, float]] = {}

    def _record_traces(
        self, request: trace_service_pb2.ExportTraceServiceRequest, transport: str
    ) -> None:
        monotonic, wall = time.monotonic(), time.time()
        with self._arrivals_lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        key = (span.trace_id.hex(), span.span_id.hex())
                        self._arrivals.setdefault(key, (monotonic, wall))
        super()._record_traces(request, transport)

    def arrival(self, span: ReceivedSpan) -> tuple[float, float]:
        """``(time.monotonic(), time.time())`` of the export request that brought ``span``."""
        with self._arrivals_lock:
            return self._arrivals[(span.trace_id, span.span_id)]


# -- the workers --------------------------------------------------------------------------------


class PidWatch:
    """A thread that polls watched pids every ``interval_s``: last seen running, first seen gone.

    A zombie counts as gone: it runs no code and its sockets are closed; only the master has
    not reaped it yet (``os.kill(pid, 0)`` would still succeed on it).
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._procs: dict[int, psutil.Process] = {}
        self.last_alive: dict[int, float] = {}
        self.gone_at: dict[int, float] = {}
        self.gaps: list[float] = []  # time between two polls
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-pid-watch", daemon=True)

    def start(self) -> PidWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def watch(self, pid: int) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            with self._lock:
                self._procs[pid] = process
                self.last_alive[pid] = time.monotonic()
            return
        with self._lock:
            self.gone_at[pid] = time.monotonic()

    def times(self, pid: int) -> tuple[float | None, float | None]:
        """When ``pid`` was last seen running and first seen gone (monotonic), if known."""
        with self._lock:
            return self.last_alive.get(pid), self.gone_at.get(pid)

    def wait_gone(self, pids: Sequence[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(pid in self.gone_at for pid in pids):
                    return True
            time.sleep(0.01)
        return False

    @staticmethod
    def _running(process: psutil.Process) -> bool:
        try:
            return process.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except psutil.NoSuchProcess:
            return False

    def _run(self) -> None:
        previous = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                procs = list(self._procs.items())
            started = time.monotonic()
            self.gaps.append(started - previous)
            previous = started
            for pid, process in procs:
                before = time.monotonic()
                running = self._running(process)
                after = time.monotonic()
                with self._lock:
                    if running:
                        self.last_alive[pid] = before  # running at least until then
                    else:
                        self.gone_at[pid] = after  # gone by then
                        self._procs.pop(pid, None)
            time.sleep(self.interval_s)


def cpu_seconds(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return None
    return float(times.user + times.system)


def ready_workers(server: GunicornServer, exclude: set[int], count: int) -> tuple[list[int], float]:
    """Wait for ``count`` new workers (not in ``exclude``) that have booted; return them and
    the seconds waited. A worker has booted when its CPU time stood still for ``QUIET_S``:
    loading Django and the exporters is CPU-bound, waiting in ``select()`` is not."""
    started = time.monotonic()
    quiet_since: dict[int, tuple[float, float]] = {}  # pid -> (cpu seconds, since)
    while True:
        now = time.monotonic()
        if now - started > READY_TIMEOUT_S:
            raise RuntimeError(
                f"no {count} booted workers after {READY_TIMEOUT_S:.0f}s "
                f"(children {server.worker_pids()})\n--- log ---\n{server.log_text()[-4000:]}"
            )
        ready = []
        for pid in server.worker_pids():
            if pid in exclude:
                continue
            cpu = cpu_seconds(pid)
            if cpu is None:
                continue
            seen = quiet_since.get(pid)
            if seen is None or seen[0] != cpu:
                quiet_since[pid] = (cpu, now)
            elif now - seen[1] >= QUIET_S:
                ready.append(pid)
        if len(ready) >= count:
            return sorted(ready)[:count], time.monotonic() - started
        time.sleep(0.02)


# -- one timeout --------------------------------------------------------------------------------


@dataclass
class Timeout:
    """One request sent to time out, and everything measured about it."""

    trace_id: str
    parent_span_id: str
    sent_at: float = 0.0
    answered_at: float | None = None
    status: int | None = None
    error: str | None = None
    event: ReceivedSpan | None = None
    received_at: float | None = None  # monotonic
    received_wall: float | None = None
    worker_pid: int | None = None  # the event's resource process.pid
    watched: bool = False  # one of the round's workers, polled from before the request
    last_alive: float | None = None
    gone_at: float | None = None

    @property
    def before_gone(self) -> bool:
        return (
            self.received_at is not None
            and self.gone_at is not None
            and self.received_at <= self.gone_at
        )

    @property
    def before_last_alive(self) -> bool:
        return (
            self.received_at is not None
            and self.last_alive is not None
            and self.received_at <= self.last_alive
        )

    def attribute(self, name: str) -> float | None:
        if self.event is None:
            return None
        value = self.event.attributes.get(name)
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def lateness_ms(self) -> float | None:
        elapsed = self.attribute("wide_event.elapsed_ms")
        deadline = self.attribute("wide_event.deadline_ms")
        return None if elapsed is None or deadline is None else elapsed - deadline

    @property
    def span_lateness_ms(self) -> float | None:
        deadline = self.attribute("wide_event.deadline_ms")
        if self.event is None or deadline is None:
            return None
        due_ns = self.event.start_time_unix_nano + deadline * 1e6
        return (self.event.end_time_unix_nano - due_ns) / 1e6

    @property
    def export_ms(self) -> float | None:
        """Span end (worker's wall clock) to arrival (this process's wall clock)."""
        if self.event is None or self.received_wall is None:
            return None
        return (self.received_wall - self.event.end_time_unix_nano / 1e9) * 1e3

    @property
    def margin_ms(self) -> float | None:
        """Arrival to the worker found gone (positive: it arrived first)."""
        if self.received_at is None or self.gone_at is None:
            return None
        return (self.gone_at - self.received_at) * 1e3


def send_slow(port: int, timeout: Timeout) -> None:
    """Send the stuck request and wait for its answer (the watchdog's 500) or the hang-up."""
    traceparent = f"00-{timeout.trace_id}-{timeout.parent_span_id}-01"
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=REQUEST_TIMEOUT_S)
    timeout.sent_at = time.monotonic()
    try:
        connection.request("GET", SLOW_PATH, headers={"traceparent": traceparent})
        response = connection.getresponse()
        response.read()
        timeout.status = response.status
    except (OSError, http.client.HTTPException) as exc:
        timeout.error = type(exc).__name__
    finally:
        timeout.answered_at = time.monotonic()
        connection.close()


def server_span(spans: list[ReceivedSpan], trace_id: str) -> ReceivedSpan | None:
    for span in spans:
        if span.is_server and span.trace_id == trace_id:
            return span
    return None


def all_events_of(timeouts: Sequence[Timeout]) -> Callable[[list[ReceivedSpan]], bool]:
    wanted = {item.trace_id for item in timeouts}

    def arrived(spans: list[ReceivedSpan]) -> bool:
        return wanted <= {span.trace_id for span in spans if span.is_server}

    return arrived


# -- one protocol -------------------------------------------------------------------------------


@dataclass
class Run:
    protocol: str
    timeouts: list[Timeout] = field(default_factory=list)
    rounds: int = 0
    wall_s: float = 0.0
    boot_waits_s: list[float] = field(default_factory=list)
    not_gone: int = 0  # workers still running GONE_TIMEOUT_S after their round
    command: list[str] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    worker_timeouts_logged: int = 0  # gunicorn's own "WORKER TIMEOUT": it had to kill
    poll_gap_p99_ms: float = 0.0
    poll_gap_max_ms: float = 0.0


def run_protocol(
    protocol: str, receiver: StampingReceiver, total: int, parallel: int, base_dir: Path
) -> Run:
    run = Run(protocol)
    started = time.monotonic()
    launcher = GunicornLauncher(receiver, base_dir)
    watch = PidWatch(POLL_INTERVAL_S).start()
    used: set[int] = set()
    try:
        server = launcher(
            protocol=protocol, workers=WORKERS, timeout=GUNICORN_TIMEOUT, env=SERVER_ENV
        )
        run.command = server.command
        while len(run.timeouts) < total:
            batch = min(parallel, total - len(run.timeouts))
            pids, waited = ready_workers(server, used, batch)
            run.boot_waits_s.append(waited)
            used.update(pids)
            for pid in pids:
                watch.watch(pid)
            batch_timeouts = [
                Timeout(secrets.token_hex(16), secrets.token_hex(8)) for _ in range(batch)
            ]
            threads = [
                threading.Thread(target=send_slow, args=(server.port, item), daemon=True)
                for item in batch_timeouts
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(REQUEST_TIMEOUT_S + 5)
            if not watch.wait_gone(pids, GONE_TIMEOUT_S):
                run.not_gone += 1
            with contextlib.suppress(AssertionError):
                receiver.wait_for(all_events_of(batch_timeouts), timeout=EVENT_GRACE_S)
            spans = receiver.spans()
            for item in batch_timeouts:
                item.event = server_span(spans, item.trace_id)
                if item.event is not None:
                    item.received_at, item.received_wall = receiver.arrival(item.event)
                    worker_pid = item.event.resource.get("process.pid")
                    item.worker_pid = worker_pid if isinstance(worker_pid, int) else None
                if item.worker_pid is not None:
                    item.last_alive, item.gone_at = watch.times(item.worker_pid)
                    item.watched = item.worker_pid in pids
            run.timeouts.extend(batch_timeouts)
            run.rounds += 1
        log = wait_for_exit_lines(server, used)
        for pid_text, code in re.findall(r"Worker \(pid:(\d+)\) exited with code (-?\d+)", log):
            if int(pid_text) in used:
                run.exit_codes[code] = run.exit_codes.get(code, 0) + 1
        run.worker_timeouts_logged = sum(
            int(pid_text) in used for pid_text in re.findall(r"WORKER TIMEOUT \(pid:(\d+)\)", log)
        )
    finally:
        watch.stop()
        launcher.close()
    gaps = sorted(watch.gaps[1:]) or [0.0]
    run.poll_gap_p99_ms = percentile(gaps, 99) * 1e3
    run.poll_gap_max_ms = gaps[-1] * 1e3
    run.wall_s = time.monotonic() - started
    return run


def wait_for_exit_lines(server: GunicornServer, pids: set[int], timeout: float = 5.0) -> str:
    """The master's log once it has logged the exit of every worker in ``pids`` (it reaps and
    logs a moment after this script sees a worker turn zombie); whatever it has by ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        log = server.log_text()
        logged = {int(pid) for pid in re.findall(r"Worker \(pid:(\d+)\) exited", log)}
        if pids <= logged or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


# -- report -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=True
    ).stdout


def code_state() -> str:
    """The commit measured, and any uncommitted change to the package (gunicorn's master
    imports it at start, so the code under test is what src/ holds when each server starts)."""
    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--", "src").splitlines()
        diff = git("diff", "HEAD", "--", "src")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout?)"
    if not dirty:
        return f"{head}, src/ clean"
    names = ", ".join(line[3:].removeprefix("src/gunicorn_django_wide_events/") for line in dirty)
    digest = hashlib.sha1(diff.encode(), usedforsecurity=False).hexdigest()[:10]
    return f"{head} + uncommitted src/ changes ({names}; diff sha1 {digest})"


def stats_line(label: str, values: Sequence[float], goal: str = "") -> str:
    if not values:
        return f"    {label:<40}{'(no values)':>44}"
    cells = (
        "".join(f"{percentile(values, q):>9.1f}" for q in (50, 90, 99))
        + f"{max(values):>9.1f}{min(values):>9.1f}"
    )
    return f"    {label:<40}{cells}   {goal}".rstrip()


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report_run(run: Run) -> tuple[bool, bool]:
    items = run.timeouts
    sent = len(items)
    answered_500 = sum(item.status == 500 for item in items)
    errors: dict[str, int] = {}
    for item in items:
        if item.status != 500:
            key = item.error or f"HTTP {item.status}"
            errors[key] = errors.get(key, 0) + 1
    received = [item for item in items if item.event is not None]
    timeout_events = sum(
        item.event.attributes.get("wide_event.type") == "timeout" for item in received if item.event
    )
    from_master = sum(
        "wide_event.reported_by" in item.event.attributes for item in received if item.event
    )
    before_gone = sum(item.before_gone for item in items)
    unwatched = sum(item.event is not None and not item.watched for item in items)
    before_alive = sum(item.before_last_alive for item in items)
    share = before_gone / sent if sent else 0.0
    lateness = [v for item in items if (v := item.lateness_ms) is not None]
    span_lateness = [v for item in items if (v := item.span_lateness_ms) is not None]
    export_ms = [v for item in items if (v := item.export_ms) is not None]
    margin_ms = [v for item in items if (v := item.margin_ms) is not None]
    deadlines = [v for item in items if (v := item.attribute("wide_event.deadline_ms")) is not None]
    answer_s = [item.answered_at - item.sent_at for item in items if item.answered_at is not None]
    share_ok = share >= SHARE_GOAL
    late_ok = bool(lateness) and percentile(lateness, 99) < LATENESS_P99_GOAL_MS
    late_ok = late_ok and len(lateness) == sent

    emit(f"protocol {run.protocol}")
    emit(f"  server   {shlex.join(run.command)}")
    emit(
        f"  rounds   {run.rounds} x {WORKERS} requests at once; "
        f"waited {statistics.mean(run.boot_waits_s):.2f} s on average per round for booted "
        f"workers; worker poll every {POLL_INTERVAL_S * 1e3:g} ms "
        f"(gap p99 {run.poll_gap_p99_ms:.1f} ms, max {run.poll_gap_max_ms:.1f} ms)"
    )
    emit(f"    {'timeouts sent':<40}{sent:>9}")
    emit(
        f"    {'answered 500 by the watchdog':<40}{answered_500:>9}"
        + (f"   others: {errors}" if errors else "")
    )
    emit(
        f"    {'events received':<40}{len(received):>9}   goal {sent}   "
        f"{verdict(len(received) == sent)}"
    )
    emit(f"    {'  of which wide_event.type=timeout':<40}{timeout_events:>9}")
    emit(f"    {'  of which sent by the master':<40}{from_master:>9}")
    emit(f"    {'  from a worker not polled beforehand':<40}{unwatched:>9}")
    emit(
        f"    {'received before worker gone':<40}{before_gone:>9}   "
        f"{share * 100:.1f} %   goal {SHARE_GOAL * 100:g} %   {verdict(share_ok)}"
    )
    emit(
        f"    {'  ... before it was last seen running':<40}{before_alive:>9}   "
        f"{(before_alive / sent * 100) if sent else 0:.1f} %   (no poll-resolution doubt)"
    )
    emit(
        f"    {'worker exits in gunicorn log':<40}"
        f"{', '.join(f'code {c}: {n}' for c, n in sorted(run.exit_codes.items())) or '-':>9}"
        f"   WORKER TIMEOUT (gunicorn killing): {run.worker_timeouts_logged}"
        f"   still running after {GONE_TIMEOUT_S:g} s: {run.not_gone}"
    )
    emit(f"    {'ms':<40}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'min':>9}")
    emit(
        stats_line(
            "lateness: elapsed_ms - deadline_ms",
            lateness,
            f"goal p99 < {LATENESS_P99_GOAL_MS:g}   {verdict(late_ok)}",
        )
    )
    emit(stats_line("span end - (span start + deadline)", span_lateness))
    emit(stats_line("deadline_ms (from request start)", deadlines))
    emit(stats_line("span end -> received (wall clocks)", export_ms))
    emit(stats_line("received -> worker found gone", margin_ms))
    emit(stats_line("request sent -> 500 answer", [s * 1e3 for s in answer_s]))
    emit(f"    {'run time':<40}{run.wall_s:>8.1f}s")
    return share_ok, late_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeouts", type=int, default=50, help="timeouts per protocol")
    parser.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help="comma-separated OTLP protocols"
    )
    args = parser.parse_args()
    protocols = [name.strip() for name in args.protocols.split(",") if name.strip()]
    started = time.monotonic()
    code_before = code_state()
    runs: list[Run] = []
    receiver = StampingReceiver()
    receiver.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-timeouts-") as tmp:
            for index, protocol in enumerate(protocols):
                base_dir = Path(tmp) / f"run-{index}"
                base_dir.mkdir()
                runs.append(run_protocol(protocol, receiver, args.timeouts, WORKERS, base_dir))
    finally:
        receiver.stop()
    total_s = time.monotonic() - started
    code_after = code_state()

    emit("gunicorn-django-wide-events timeout-event benchmark")
    emit("=" * 100)
    for line in machine_lines():
        emit(line)
    emit(f"command    {shlex.join([sys.executable, *sys.argv])}   (cwd {os.getcwd()})")
    emit(f"code       {code_before}")
    if code_after != code_before:
        emit(f"           CHANGED DURING THE RUN, now: {code_after}")
    emit(
        f"setup      {WORKERS} sync workers, --timeout {GUNICORN_TIMEOUT}, margin 1 s (default), "
        f"OTEL_BSP_SCHEDULE_DELAY=50, GET {SLOW_PATH}, collector: in-process OtlpReceiver"
    )
    emit(
        "goals      every timeout event received before its worker is gone; "
        f"lateness p99 < {LATENESS_P99_GOAL_MS:g} ms"
    )
    emit()
    verdicts = []
    for run in runs:
        verdicts.append(report_run(run))
        emit()
    emit(f"total time {total_s:.1f} s")
    emit(
        "verdict    "
        + "; ".join(
            f"{run.protocol}: delivery {verdict(share_ok)}, lateness {verdict(late_ok)}"
            for run, (share_ok, late_ok) in zip(runs, verdicts, strict=True)
        )
    )


if __name__ == "__main__":
    main()
