"""Benchmark of the board: what it costs a worker per request, and the master's monitor per second.

Run: ``/work/venv/bin/python bench/board.py`` (about 25 s; ``--help`` for options).

(a) Per request, a worker calls ``WorkerSlot.request_started`` (which gives the request its
    entry), the entry's ``route_resolved``, ``add_attributes`` and the entry's ``finished``:
    timed with ``timeit`` over many iterations, median of several repeats, parts and the whole.
    The monitor and server samples are on the board, so ``add_attributes`` reads them as in
    production.
(b) The master's monitor: real child processes stand in for the workers, and ``Monitor.sample()``
    runs for them once per interval in a thread of this process, as the monitor thread does.
    The CPU time that thread spends sampling, over the wall time of the run, is its share of one
    core.
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.machine import machine_lines
from harness.report import emit
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from gunicorn_django_wide_events._board import Board, ServerSample, WorkerSample
from gunicorn_django_wide_events._master.monitor import Monitor, listen_backlog
from gunicorn_django_wide_events._worker.slot import WorkerSlot

REQUEST_GOAL_US = 10.0  # board write + read per request
MONITOR_GOAL_PERCENT = 1.0  # of one core
SLEEPER = "import time; time.sleep(600)"


# -- (a) per request ----------------------------------------------------------------------------


def per_call_us(func: Callable[[], object], number: int, repeat: int) -> float:
    """Median over ``repeat`` runs of the time per call of ``func``, in microseconds."""
    runs = timeit.Timer(func).repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number * 1e6


def bench_request(number: int, repeat: int, workers: int) -> list[tuple[str, float]]:
    provider = TracerProvider()
    span = provider.get_tracer("bench").start_span("GET", kind=SpanKind.SERVER)
    board = Board(max(32, 4 * workers))
    slots = [board.assign_slot() for _ in range(workers)]
    slot = slots[0]
    assert slot is not None
    worker = WorkerSlot(board, slot)
    now = time.time()
    board.write_monitor(slot, WorkerSample(now, 1.5, 80_000_000, 3, 12))
    board.write_server(ServerSample(now, 0.5, 0, 60_000_000, 12.0, 1_280_000_000))
    attributes: dict[str, AttributeValue] = {}
    path = "/api/orders/12345/items/"

    query = "page=2&sort=date"

    def whole() -> None:
        entry = worker.request_started(span, "GET", path, query)
        entry.route_resolved("api/orders/<int:order_id>/items/", "shop.views.order_items")
        worker.add_attributes(attributes)
        entry.finished()

    def started() -> None:
        worker.request_started(span, "GET", path, query).finished()

    def added() -> None:
        worker.add_attributes(attributes)

    whole()  # warm up
    results = [
        ("request_started + finished", per_call_us(started, number, repeat)),
        ("add_attributes", per_call_us(added, number, repeat)),
        ("all of one request (start, route, attributes, end)", per_call_us(whole, number, repeat)),
    ]
    span.end()
    provider.shutdown()
    return results


# -- (b) the monitor ----------------------------------------------------------------------------


@dataclass
class MonitorRun:
    samples_cpu_s: list[float] = field(default_factory=list)
    samples_wall_s: list[float] = field(default_factory=list)
    thread_cpu_s: float = 0.0  # the sampling thread, sleeping included (it costs nothing)
    wall_s: float = 0.0
    process_cpu_s: float = 0.0  # the whole benchmark process over the run
    workers_sampled: int = 0
    backlog_cpu_s: float = 0.0  # median CPU of one listen_backlog() call, part of each sample


def sample_loop(monitor: Monitor, interval_s: float, duration_s: float, run: MonitorRun) -> None:
    """What the monitor thread does: sample, wait out the interval, for ``duration_s``."""
    start_wall, start_cpu = time.perf_counter(), time.thread_time()
    next_at = start_wall
    while True:
        wall, cpu = time.perf_counter(), time.thread_time()
        monitor.sample()
        run.samples_cpu_s.append(time.thread_time() - cpu)
        run.samples_wall_s.append(time.perf_counter() - wall)
        next_at += interval_s
        time.sleep(max(next_at - time.perf_counter(), 0))
        if next_at - start_wall >= duration_s - 1e-9:
            break
    run.thread_cpu_s = time.thread_time() - start_cpu
    run.wall_s = time.perf_counter() - start_wall


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_monitor(workers: int, interval_s: float, duration_s: float) -> MonitorRun:
    children: list[subprocess.Popen[bytes]] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for _ in range(workers):
            children.append(subprocess.Popen([sys.executable, "-c", SLEEPER]))
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        board = Board(max(32, 4 * workers))
        pids: dict[int, int] = {}
        for child in children:
            slot = board.assign_slot()
            assert slot is not None
            pids[slot] = child.pid
        monitor = Monitor(board, interval_s, workers=lambda: pids, listeners=lambda: [listener])
        run = MonitorRun()
        cpu_before = process_cpu_s()
        thread = threading.Thread(
            target=sample_loop, args=(monitor, interval_s, duration_s, run), name="bench-monitor"
        )
        thread.start()
        thread.join()
        run.process_cpu_s = process_cpu_s() - cpu_before
        run.workers_sampled = sum(board.read_monitor(slot) is not None for slot in pids)
        costs = []
        for _ in range(10):
            cpu = time.thread_time()
            listen_backlog([listener])
            costs.append(time.thread_time() - cpu)
        run.backlog_cpu_s = statistics.median(costs)
        return run
    finally:
        listener.close()
        for child in children:
            child.kill()
        for child in children:
            child.wait()


# -- report -------------------------------------------------------------------------------------


def verdict(value: float, goal: float) -> str:
    return "ok" if value < goal else "MISSED"


def report(request: list[tuple[str, float]], run: MonitorRun, args: Any) -> None:
    emit("gunicorn-django-wide-events board benchmark")
    emit("=" * 78)
    for line in machine_lines():
        emit(line)
    emit()
    emit(
        f"(a) per request, worker side: WorkerSlot calls, timeit median of {args.repeat} "
        f"repeats x {args.number} calls"
    )
    emit(f"    {'part':<28}{'us/request':>12}   goal")
    for name, micros in request:
        goal = ""
        if name.startswith("all three"):
            goal = f"< {REQUEST_GOAL_US:g} us   {verdict(micros, REQUEST_GOAL_US)}"
        emit(f"    {name:<28}{micros:>12.2f}   {goal}")
    emit()
    cpu_percent = run.thread_cpu_s / run.wall_s * 100
    process_percent = run.process_cpu_s / run.wall_s * 100
    samples = len(run.samples_cpu_s)
    emit(
        f"(b) monitor, master side: Monitor.sample() for {args.workers} live child processes "
        f"every {args.interval:g} s, {run.wall_s:.1f} s wall, {samples} samples"
    )
    emit(f"    workers with a sample on the board   {run.workers_sampled}/{args.workers}")
    emit(f"    {'measure':<37}{'value':>10}   goal")
    emit(
        f"    {'monitor thread CPU, % of one core':<37}{cpu_percent:>10.3f}   "
        f"< {MONITOR_GOAL_PERCENT:g} %   {verdict(cpu_percent, MONITOR_GOAL_PERCENT)}"
    )
    emit(f"    {'  (whole process CPU over the run)':<37}{process_percent:>10.3f}")
    emit(
        f"    {'CPU per sample, median (ms)':<37}"
        f"{statistics.median(run.samples_cpu_s) * 1e3:>10.3f}"
    )
    emit(f"    {'CPU per sample, first (ms)':<37}{run.samples_cpu_s[0] * 1e3:>10.3f}")
    emit(f"    {'CPU per sample, max (ms)':<37}{max(run.samples_cpu_s) * 1e3:>10.3f}")
    emit(
        f"    {'wall per sample, median (ms)':<37}"
        f"{statistics.median(run.samples_wall_s) * 1e3:>10.3f}"
    )
    median_ms = statistics.median(run.samples_cpu_s) * 1e3
    backlog_ms = run.backlog_cpu_s * 1e3
    emit(f"    {'  of which listen_backlog (ms)':<37}{backlog_ms:>10.3f}   (TCP_INFO)")
    emit(f"    {'  the rest: workers, master (ms)':<37}{median_ms - backlog_ms:>10.3f}")
    emit(f"    {'  the rest per worker (ms)':<37}{(median_ms - backlog_ms) / args.workers:>10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per timeit repeat")
    parser.add_argument("--repeat", type=int, default=7, help="timeit repeats (median taken)")
    parser.add_argument("--workers", type=int, default=16, help="child processes to sample")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--seconds", type=float, default=20.0, help="monitor run length")
    args = parser.parse_args()
    request = bench_request(args.number, args.repeat, args.workers)
    run = bench_monitor(args.workers, args.interval, args.seconds)
    report(request, run, args)


if __name__ == "__main__":
    main()
