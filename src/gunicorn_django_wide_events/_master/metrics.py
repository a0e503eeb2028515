"""gunicorn's own metrics, from the master: its workers by state, the backlog, each worker's CPU
and memory, and worker exits by reason; and the duration of the requests whose events it sends
for dead workers (a gevent worker's timeout, a crash), which no worker could record.

The figures are the board's (``_board.py``): busy and idle from the workers' own request flags,
not a guess from CPU time; the backlog, CPU and memory from the monitor's last samples; exits as
``child_exit`` tells them. They go through a meter provider of the master's own (the SDK's
global one is the workers', whose points must not carry the master's instruments), with the
master's resource (``process.pid``, ``service.instance.id``), the user's views and each metric
exporter's temporality and aggregation, and are observed only when collected.

Fork Safety:
    No exporter, gRPC channel or thread of the master's exports them. Once per
    ``OTEL_METRIC_EXPORT_INTERVAL``, gunicorn's main loop (after ``Arbiter.manage_workers``,
    see ``_gunicorn.py``) collects the points in memory and forks a short-lived child that
    builds a fresh exporter of each configured kind, sends them and exits; gunicorn reaps it.
    Exporting from the monitor's thread instead would need an exporter in the master: a gRPC
    channel starts native threads that outlive the monitor's pause around a fork and end on
    their own schedule (the very deadlock the hand-over avoids, ``_export/handover.py``), and
    an export to a slow collector would hold that thread, and with it every fork of a new
    worker that must first stop it, for the export's timeout. In the main loop the master pays
    a collection (microseconds) and a fork per interval; the network is the child's.
    Points are cumulative by default, so an export that fails is made good by the next one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExporter, MetricsData
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD, HTTP_ROUTE

from .. import __about__
from .. import _attributes as attr
from .._attributes import DURATION_BUCKETS, HTTP_SERVER_REQUEST_DURATION, METER_NAME
from .._board import Board, TornRead, WorkerRequest
from .._export.handover import MetricExport
from .._export.log_routing import logging_silenced
from .._guard import log_once, never_raise

GUNICORN_WORKERS: Final = "gunicorn.workers"
GUNICORN_LISTEN_BACKLOG: Final = "gunicorn.listen.backlog"
GUNICORN_WORKER_CPU_UTILIZATION: Final = "gunicorn.worker.cpu.utilization"
GUNICORN_WORKER_MEMORY_RSS: Final = "gunicorn.worker.memory.rss"
GUNICORN_WORKER_EXITS: Final = "gunicorn.worker.exits"


class ExitReason:
    """Values of ``gunicorn.worker.exit_reason``."""

    TIMEOUT: Final = "timeout"  # past gunicorn's timeout: the watchdog's event, or gunicorn's kill
    CRASH: Final = "crash"  # a signal or an exit code nobody asked for (OOM killer, segfault)
    MAX_REQUESTS: Final = "max_requests"  # served its --max-requests and left
    SHUTDOWN: Final = "shutdown"  # stopped by the master: gunicorn exiting, or fewer workers
    RELOAD: Final = "reload"  # replaced after a HUP

    ALL: Final = (TIMEOUT, CRASH, MAX_REQUESTS, SHUTDOWN, RELOAD)


# How a worker ends when the master asks it to: gracefully (0), or by the signal itself if it
# had no handler for it yet (still booting).
_STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGQUIT, signal.SIGINT})
# Signals that end a worker on their own while gunicorn stops, as at any other time: a crash.
# (Not SIGKILL: gunicorn's own, for a worker still there at the end of its graceful timeout.)
_SEGFAULT_LIKE: Final = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
)
# A child still exporting this long after its own timeout is stuck: it is killed.
STUCK_CHILD_GRACE_S: Final = 5.0
_export_guard: Final = never_raise("metrics.master_export")
_record_guard: Final = never_raise("metrics.master_record")


def exit_reason(
    status: int | None,
    *,
    timed_out: bool,
    stopping: bool,
    reloaded: bool,
    served: int,
    max_requests: int,
) -> str:
    """Why a worker ended, from its wait ``status`` and what the master knows of it.

    ``timed_out``: gunicorn aborted it, or its watchdog sent a timeout event for a request it
    was serving; ``stopping``: gunicorn is exiting; ``reloaded``: it is of the workers a HUP
    replaced; ``served``: the requests it started, against gunicorn's ``max_requests``.
    """
    if timed_out:
        return ExitReason.TIMEOUT
    killed_by = os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None
    if stopping and killed_by not in _SEGFAULT_LIKE:
        return ExitReason.SHUTDOWN
    exited_cleanly = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    stopped = exited_cleanly or killed_by in _STOP_SIGNALS
    if reloaded and stopped:
        return ExitReason.RELOAD
    if exited_cleanly and max_requests > 0 and served >= max_requests:
        return ExitReason.MAX_REQUESTS
    if stopped:
        return ExitReason.SHUTDOWN  # asked to stop otherwise: TTOU, or gunicorn's own WINCH
    return ExitReason.CRASH


def build_metric_exporter(exporter_type: type[MetricExporter], timeout_s: float) -> MetricExporter:
    """An exporter of ``exporter_type``, bounded by ``timeout_s`` if its constructor allows."""
    try:
        return exporter_type(timeout=timeout_s)  # type: ignore[call-arg]
    except TypeError:
        return exporter_type()


def export_in_child(
    batches: Sequence[tuple[MetricExport, MetricsData]],
    inherited_fds: Sequence[int],
    timeout_s: float,
    exporter_timeout_s: float | None = None,
) -> int:
    """Fork a child that sends each batch through a fresh exporter of its kind; its pid.

    The exporters read their settings (``OTEL_EXPORTER_OTLP_*``, their timeout included) as the
    workers' do, unless ``exporter_timeout_s`` bounds them (gunicorn exiting). The child exits 0
    when every export succeeded, 2 when one failed: the master reports that once. It closes
    ``inherited_fds`` (gunicorn's listeners) first, and stays quiet: the exporters' own
    warnings would come once per interval.
    """
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for fd in inherited_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        code = 0
        with logging_silenced():
            for export, data in batches:
                exporter = (
                    export.exporter_type()
                    if exporter_timeout_s is None
                    else build_metric_exporter(export.exporter_type, exporter_timeout_s)
                )
                result = exporter.export(data, timeout_millis=timeout_s * 1e3)
                if getattr(result, "name", "") != "SUCCESS":
                    code = 2
                exporter.shutdown()
    finally:
        os._exit(code)


class MasterMetrics:
    """The master's instruments, observed from the board, and their export by a child.

    ``workers()`` names the workers alive (slot -> pid), as the monitor's does.
    """

    def __init__(
        self,
        board: Board,
        exports: Sequence[MetricExport],
        resource: Resource,
        workers: Callable[[], dict[int, int]],
        views: Sequence[View] = (),
    ) -> None:
        self.board = board
        self._workers = workers
        self._readers = [
            (
                InMemoryMetricReader(export.preferred_temporality, export.preferred_aggregation),
                export,
            )
            for export in exports
        ]
        self.provider = MeterProvider(
            metric_readers=[reader for reader, _ in self._readers],
            resource=resource,
            views=views,
            shutdown_on_exit=False,
        )
        self.interval_s = min((export.interval_s for export in exports), default=60.0)
        self.timeout_s = min((export.timeout_s for export in exports), default=30.0)
        self.exits = dict.fromkeys(ExitReason.ALL, 0)
        """Workers ended so far, by reason: plain counts, which ``child_exit`` may change
        from a signal handler (gunicorn before 25 reaps there), so no lock is taken."""
        self._next_export_at = time.monotonic() + self.interval_s
        self._child: tuple[int, float] | None = None  # the exporting child: pid, started at
        self._create_instruments()

    def _create_instruments(self) -> None:
        meter = self.provider.get_meter(METER_NAME, __about__.__version__)
        meter.create_observable_gauge(
            GUNICORN_WORKERS,
            callbacks=[self._observe_workers],
            unit="{worker}",
            description="Workers alive, by state: busy (serving a request) or idle.",
        )
        meter.create_observable_gauge(
            GUNICORN_LISTEN_BACKLOG,
            callbacks=[self._observe_backlog],
            unit="{connection}",
            description="Connections waiting to be accepted (Linux TCP listeners).",
        )
        meter.create_observable_gauge(
            GUNICORN_WORKER_CPU_UTILIZATION,
            callbacks=[self._observe_cpu],
            unit="1",
            description="Share of one CPU the worker used over the last monitor interval.",
        )
        meter.create_observable_gauge(
            GUNICORN_WORKER_MEMORY_RSS,
            callbacks=[self._observe_rss],
            unit="By",
            description="Resident memory of the worker process.",
        )
        meter.create_observable_counter(
            GUNICORN_WORKER_EXITS,
            callbacks=[self._observe_exits],
            unit="{exit}",
            description="Worker processes that ended, by reason.",
        )
        self._durations = meter.create_histogram(
            HTTP_SERVER_REQUEST_DURATION,
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    # -- what the instruments observe ------------------------------------------------------

    def _observe_workers(self, options: CallbackOptions) -> Iterator[Observation]:
        total, busy = self.board.count_in_use_and_busy()
        yield Observation(busy, {attr.GUNICORN_WORKER_STATE: "busy"})
        yield Observation(max(total - busy, 0), {attr.GUNICORN_WORKER_STATE: "idle"})

    def _observe_backlog(self, options: CallbackOptions) -> Iterator[Observation]:
        server = self.board.read_server()
        if server is not None and server.backlog >= 0:
            yield Observation(server.backlog)

    def _samples(self) -> Iterator[tuple[int, Any]]:
        for slot in sorted(self._workers()):
            try:
                sample = self.board.read_monitor(slot)
            except TornRead:
                continue
            if sample is not None:
                yield slot, sample

    def _observe_cpu(self, options: CallbackOptions) -> Iterator[Observation]:
        for slot, sample in self._samples():
            if sample.cpu_percent >= 0:  # psutil needs two readings of a new worker
                yield Observation(sample.cpu_percent / 100, {attr.GUNICORN_WORKER_ID: slot})

    def _observe_rss(self, options: CallbackOptions) -> Iterator[Observation]:
        for slot, sample in self._samples():
            yield Observation(sample.rss, {attr.GUNICORN_WORKER_ID: slot})

    def _observe_exits(self, options: CallbackOptions) -> Iterator[Observation]:
        # Every reason from the start, at zero: a rate over the first exit of a kind sees it.
        for reason, count in list(self.exits.items()):
            yield Observation(count, {attr.GUNICORN_WORKER_EXIT_REASON: reason})

    # -- what the master calls -------------------------------------------------------------

    def count_exit(self, reason: str) -> None:
        self.exits[reason] = self.exits.get(reason, 0) + 1

    def record_request(self, request: WorkerRequest, error_type: str, now: float) -> None:
        """A request whose event the master sends (its worker died): its duration so far,
        with what the board knows of it (no scheme, protocol or status: it got no answer).
        Never raises: the event is sent all the same."""
        with _record_guard:
            self._record_request(request, error_type, now)

    def _record_request(self, request: WorkerRequest, error_type: str, now: float) -> None:
        method = request.method
        attributes: dict[str, Any] = {
            # The board keeps the span name's method: "HTTP" for one the conventions do not know.
            HTTP_REQUEST_METHOD: method if method and method != "HTTP" else "_OTHER",
            ERROR_TYPE: error_type,
        }
        if request.route:
            attributes[HTTP_ROUTE] = request.route
        self._durations.record(max(now - request.started_at, 0.0), attributes)

    def export_if_due(self, inherited_fds: Iterable[int], exit_statuses: Any) -> None:
        """From gunicorn's main loop: every interval, collect and fork the exporting child.

        Not while the last child is still sending (a slow collector): its points are older.
        """
        now = time.monotonic()
        if now < self._next_export_at or not self._child_done(now, exit_statuses):
            return
        self._next_export_at = now + self.interval_s
        with _export_guard:
            self._export(list(inherited_fds), self.timeout_s)

    def export_now(self, inherited_fds: Iterable[int], timeout_s: float) -> None:
        """gunicorn exits: the last points (its workers' last exits among them) go out now,
        within ``timeout_s``."""
        with _export_guard:
            self._export(list(inherited_fds), timeout_s, exporter_timeout_s=timeout_s)

    def collect(self) -> list[tuple[MetricExport, MetricsData]]:
        """The points now, once per metric exporter (each its own temporality)."""
        batches = []
        for reader, export in self._readers:
            data = reader.get_metrics_data()
            if data is not None and data.resource_metrics:
                batches.append((export, data))
        return batches

    def _export(
        self, inherited_fds: list[int], timeout_s: float, exporter_timeout_s: float | None = None
    ) -> None:
        batches = self.collect()
        if batches:
            pid = export_in_child(batches, inherited_fds, timeout_s, exporter_timeout_s)
            self._child = (pid, time.monotonic())

    def _child_done(self, now: float, exit_statuses: Any) -> bool:
        """Whether the last exporting child is gone; a failed export is reported once."""
        if self._child is None:
            return True
        pid, started_at = self._child
        status = exit_statuses.pop(pid)
        if status is None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self._child = None  # reaped, its status not noted: nothing to say about it
                return True
            if now - started_at < self.timeout_s + STUCK_CHILD_GRACE_S:
                return False
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # gunicorn reaps it
            status = -1
        self._child = None
        if status != 0:
            log_once(
                "metrics.master_export",
                "gunicorn-django-wide-events: the master's metrics could not be exported "
                "(is the collector reachable?); further failures are not logged",
            )
        return True
