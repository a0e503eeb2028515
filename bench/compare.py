"""A/B benchmark: variants of this package side by side against bare gunicorn.

Run, for example (about 3 minutes)::

    git worktree add /tmp/base HEAD~3
    .venvs/default/bin/python bench/compare.py base:SRC=/tmp/base/src now --rounds 8

What the package's metrics cost a request (issue 17: at most 10 µs more than without them)::

    .venvs/default/bin/python bench/compare.py events metrics:OTEL_METRICS_EXPORTER=otlp

Each positional argument is one variant of the ``package`` server of ``throughput.py`` (the
package alone under ``opentelemetry-instrument``, spans over OTLP gRPC to a counting sink,
which takes metrics too; the metrics exporter is off unless a variant sets it):
``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE``. The pairs are extra environment for that server;
``SRC=DIR`` puts another checkout's ``src`` ahead of the installed package, which is how two
versions of the code are compared. One bare gunicorn serves as the baseline.

Rounds are alternated as in ``throughput.py``: every variant is driven once per round with
``wrk -t1 -c4`` (``--connections``; ``--worker-class gevent --connections 32`` measures a gevent
worker, the bare one included, under 32 connections at once), the order rotating from round to
round, and each variant's spans are waited for before the next one runs. It prints, per
variant, the median requests per second, the time per request and its difference to bare
gunicorn, the ratio to bare, the worker's CPU time per request (all threads, then the request
thread's and the other threads': the export thread, gRPC's, the watchdog), the CPU time of
the spools' exporting process per request, beside the worker's (with the spool on, it does
the sending the worker's export thread does otherwise), the spread of the
rounds and the worker's RSS after the load. Changes smaller than the spread need more rounds to
be told apart; CPU time per thread varies less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import BENCH_DIR
from harness.load import ensure_wrk
from harness.measure import memory
from harness.report import emit
from harness.run import measured_run
from harness.servers import VIEWS, Server, make_servers, start_all, stop_all
from harness.sink import bsp_schedule_delay_s


@dataclass
class Variant:
    name: str
    server: Server
    environ: dict[str, str]
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    main_cpu_us: list[float] = field(default_factory=list)  # the request thread's
    exporter_cpu_us: list[float] = field(default_factory=list)  # the spools' exporting process


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME`` or ``NAME:KEY=VALUE,...``; ``SRC=DIR`` becomes the server's ``PYTHONPATH``."""
    name, _, pairs = spec.partition(":")
    if not name or name == "bare":
        raise SystemExit(f"a variant needs a name other than 'bare': {spec!r}")
    environ = {}
    for pair in filter(None, pairs.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"variant {name}: KEY=VALUE expected, got {pair!r}")
        if key == "SRC":
            source = Path(value).resolve()
            if not (source / "gunicorn_django_wide_events").is_dir():
                raise SystemExit(f"variant {name}: no gunicorn_django_wide_events in {source}")
            key, value = "PYTHONPATH", f"{source}:{BENCH_DIR}"
        environ[key] = value
    return name, environ


def start_servers(
    specs: Sequence[str], tmp: Path, worker_class: str = "sync", threads: int = 1
) -> list[Variant]:
    specs_by_name: dict[str, dict[str, str]] = {"bare": {}} | dict(map(parse_variant, specs))
    variants = []
    for name, environ in specs_by_name.items():
        directory = tmp / name
        directory.mkdir()
        kind = "bare" if name == "bare" else "package"
        (server,) = make_servers(
            [kind], directory, 0.0, environ, worker_class=worker_class, threads=threads
        )
        variants.append(Variant(name, server, environ))
    start_all([variant.server for variant in variants])
    return variants


def drive(args: argparse.Namespace, wrk: str, variant: Variant, duration: int) -> None:
    run = measured_run(
        wrk,
        variant.server,
        args.view,
        threads=1,
        connections=args.connections,
        duration=duration,
        flush_timeout_s=bsp_schedule_delay_s(variant.environ) + 3.0,
    )
    requests = run.wrk.requests
    variant.rps.append(run.wrk.rps)
    variant.cpu_us.append(run.cpu_s / requests * 1e6)
    variant.main_cpu_us.append(sum(run.threads["main"]) / requests * 1e6)
    variant.exporter_cpu_us.append(run.exporter_cpu_s / requests * 1e6)
    time.sleep(0.3)


def report(variants: Sequence[Variant]) -> None:
    bare_rps = statistics.median(variants[0].rps)
    emit()
    emit(
        f"  {'variant':<12}{'req/s':>8}{'us/req':>9}{'vs bare':>10}{'/bare':>7}"
        f"{'cpu/req':>10}{'(main':>8}{'other)':>8}{'+exporter':>10}{'spread':>8}{'RSS MiB':>9}"
    )
    for variant in variants:
        rps = statistics.median(variant.rps)
        spread = (max(variant.rps) - min(variant.rps)) / rps * 100
        rss = memory(variant.server.worker)[0] / 2**20
        main_cpu = statistics.median(variant.main_cpu_us)
        other_cpu = statistics.median(
            total - main for total, main in zip(variant.cpu_us, variant.main_cpu_us, strict=True)
        )
        emit(
            f"  {variant.name:<12}{rps:>8.0f}{1e6 / rps:>9.1f}{1e6 / rps - 1e6 / bare_rps:>+10.1f}"
            f"{rps / bare_rps:>7.3f}"
            f"{statistics.median(variant.cpu_us):>10.1f}{main_cpu:>8.1f}{other_cpu:>8.1f}"
            f"{statistics.median(variant.exporter_cpu_us):>10.1f}"
            f"{spread:>7.1f}%{rss:>9.1f}"
        )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="+", help="NAME or NAME:KEY=VALUE,... (SRC=DIR)")
    parser.add_argument("--view", choices=sorted(VIEWS), default="hello")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=4, help="seconds of wrk per run")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections [4]")
    parser.add_argument(
        "--worker-class", default="sync", help="gunicorn's worker class: sync, gthread, gevent"
    )
    parser.add_argument(
        "--worker-threads", type=int, default=1, help="gunicorn --threads (gthread) [1]"
    )
    args = parser.parse_args(argv)
    names = [parse_variant(spec)[0] for spec in args.variants]  # bad specs fail here
    if len(set(names)) != len(names):
        raise SystemExit(f"variant names must differ: {names}")
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="wide-events-compare-") as tmp:
        variants = start_servers(
            args.variants, Path(tmp), worker_class=args.worker_class, threads=args.worker_threads
        )
        emit(
            f"one {args.worker_class} worker per variant, wrk -t1 -c{args.connections}, "
            f"{args.rounds} rounds of {args.duration}s"
        )
        try:
            for variant in variants:
                drive(args, wrk, variant, 2)  # warm-up
                variant.rps.clear()
                variant.cpu_us.clear()
                variant.main_cpu_us.clear()
                variant.exporter_cpu_us.clear()
            for round_index in range(args.rounds):
                shift = round_index % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    drive(args, wrk, variant, args.duration)
                emit(
                    f"round {round_index + 1}/{args.rounds}: "
                    + ", ".join(f"{v.name} {v.rps[-1]:.0f}" for v in variants)
                )
            report(variants)
        finally:
            stop_all([variant.server for variant in variants])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
