"""One measured wrk run against a server: wrk's report, the worker's CPU time meanwhile (and the
spools' exporting process's), and the spans that reached the server's sink."""

from __future__ import annotations

from dataclasses import dataclass

from harness.load import WrkResult, run_wrk
from harness.measure import ThreadCpu, cpu_by_thread, cpu_by_thread_since, cpu_seconds
from harness.servers import Server
from harness.sink import wait_for_spans


@dataclass
class Run:
    """One wrk run against one server, and what the worker and the sink did meanwhile."""

    wrk: WrkResult
    spans: int  # received by the sink, the batch flushed
    cpu_s: float  # the worker's user + system CPU time, the flush included
    threads: ThreadCpu  # the same per thread group: user, system
    exporter_cpu_s: float  # the spools' exporting process's, if the server has one


def measured_run(
    wrk: str,
    server: Server,
    view: str,
    *,
    threads: int,
    connections: int,
    duration: int,
    flush_timeout_s: float,
) -> Run:
    """Drive ``view`` of ``server`` for ``duration`` seconds, then wait (up to
    ``flush_timeout_s``) for the run's spans: the CPU time counted includes exporting them,
    and no export of this run overlaps the next one."""
    before = server.sink.count() if server.sink else 0
    threads_before = cpu_by_thread(server.worker)
    cpu_before = cpu_seconds(server.worker)
    exporter_before = cpu_seconds(server.exporter) if server.exporter else 0.0
    result = run_wrk(wrk, server.url(view), threads, connections, duration)
    spans = 0
    if server.sink is not None:
        spans = wait_for_spans(server.sink, before, result.requests, flush_timeout_s)
    cpu = cpu_seconds(server.worker) - cpu_before
    threads_used = cpu_by_thread_since(threads_before, cpu_by_thread(server.worker))
    exporter_cpu = cpu_seconds(server.exporter) - exporter_before if server.exporter else 0.0
    return Run(result, spans, cpu, threads_used, exporter_cpu)
