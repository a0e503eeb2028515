"""A fresh worker's first requests, and what the package costs in memory, side by side.

Run, for example (about a minute)::

    git worktree add /tmp/base HEAD~3
    .venvs/default/bin/python bench/first_request.py base:SRC=/tmp/base/src now --rounds 15

Variants as in ``compare.py`` (``NAME`` or ``NAME:KEY=VALUE,...``, ``SRC=DIR`` for another
checkout), beside bare gunicorn; one sync worker each, serving ``bench/benchapp``. Each round
replaces every variant's worker (SIGTERM to the worker; the master forks a new one), waits until
the new worker is idle (its CPU time stops moving: the app is loaded), then times its first
``--requests`` requests to ``/hello/`` from the client, then has the worker time one full
garbage collection (``/gc/``: what a gen-2 collection costs when it lands on a request). Printed
per variant: the medians over the rounds of the first request, of the slowest of the rest, of
all the others and of the full collection (with the objects it walked), and the memory of the
master and of the last worker (RSS, and USS: what the process does not share with the master).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from compare import Variant, start_servers
from harness.report import emit

IDLE_FOR_S = 0.5
BOOT_TIMEOUT_S = 60.0


@dataclass
class Timings:
    first_ms: list[float] = field(default_factory=list)
    slowest_rest_ms: list[float] = field(default_factory=list)
    rest_ms: list[float] = field(default_factory=list)
    collection_ms: list[float] = field(default_factory=list)
    collected_objects: list[int] = field(default_factory=list)


def request_ms(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (loopback)
        response.read()
    return (time.perf_counter() - started) * 1e3


def only_worker(master: psutil.Process) -> psutil.Process:
    workers = master.children()
    if len(workers) != 1:
        raise SystemExit(f"expected one worker of {master.pid}, found {workers}")
    return workers[0]


def fresh_idle_worker(master: psutil.Process, old_pid: int) -> psutil.Process:
    """Wait for the worker that replaces ``old_pid`` to be forked and to finish loading."""
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        workers = [child for child in master.children() if child.pid != old_pid]
        if len(workers) == 1 and not psutil.pid_exists(old_pid):
            worker = workers[0]
            break
        time.sleep(0.05)
    else:
        raise SystemExit(f"no new worker for master {master.pid}")
    last = -1.0
    while time.monotonic() < deadline:
        times = worker.cpu_times()
        busy = times.user + times.system
        if busy == last:
            return worker
        last = busy
        time.sleep(IDLE_FOR_S)
    raise SystemExit(f"worker {worker.pid} never went idle")


def memory_mib(process: psutil.Process) -> tuple[float, float]:
    info = process.memory_full_info()
    return info.rss / 2**20, info.uss / 2**20


def run_round(variant: Variant, timings: Timings, requests: int) -> None:
    server = variant.server
    assert server.process is not None
    master = psutil.Process(server.process.pid)
    old = only_worker(master)
    os.kill(old.pid, signal.SIGTERM)
    fresh_idle_worker(master, old.pid)
    url = server.url("hello")
    latencies = [request_ms(url) for _ in range(requests)]
    timings.first_ms.append(latencies[0])
    timings.slowest_rest_ms.append(max(latencies[1:]))
    timings.rest_ms.extend(latencies[1:])
    # After the timed requests: a full collection in the worker, timed by the worker.
    with urllib.request.urlopen(url.replace("/hello/", "/gc/"), timeout=30) as response:  # noqa: S310
        elapsed_ms, objects = response.read().split()
    timings.collection_ms.append(float(elapsed_ms))
    timings.collected_objects.append(int(objects))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="NAME or NAME:KEY=VALUE,... (see compare.py)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20, help="timed per fresh worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="first-request-") as tmp:
        variants = start_servers(args.variants, Path(tmp))
        timings = {variant.name: Timings() for variant in variants}
        try:
            for round_number in range(args.rounds):
                order = (
                    variants[round_number % len(variants) :]
                    + variants[: round_number % len(variants)]
                )
                for variant in order:
                    run_round(variant, timings[variant.name], args.requests)
            emit(f"{args.rounds} rounds, {args.requests} requests to /hello/ per fresh worker")
            emit()
            emit(
                "| variant | first request | slowest of the rest | the rest "
                "| full collection in the worker | master RSS / USS | worker RSS / USS |"
            )
            emit("|---|---|---|---|---|---|---|")
            for variant in variants:
                assert variant.server.process is not None
                master = psutil.Process(variant.server.process.pid)
                master_rss, master_uss = memory_mib(master)
                worker_rss, worker_uss = memory_mib(only_worker(master))
                timing = timings[variant.name]
                emit(
                    f"| {variant.name} | {statistics.median(timing.first_ms):.2f} ms "
                    f"| {statistics.median(timing.slowest_rest_ms):.2f} ms "
                    f"| {statistics.median(timing.rest_ms):.2f} ms "
                    f"| {statistics.median(timing.collection_ms):.1f} ms "
                    f"({statistics.median(timing.collected_objects)} objects) "
                    f"| {master_rss:.1f} / {master_uss:.1f} MiB "
                    f"| {worker_rss:.1f} / {worker_uss:.1f} MiB |"
                )
        finally:
            for variant in variants:
                variant.server.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
