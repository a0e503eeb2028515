"""The master side of gunicorn's hooks: the board, its monitor, the dead workers' events and
gunicorn's own metrics.

Before any fork (``setup``, at start and on every HUP): the board is created and export handed
over to the workers. Then: a slot for each worker about to be forked (``pre_fork``), the
monitor and the master's metrics started once gunicorn is ready, the monitor resumed and the
metrics exported when due after each turn of gunicorn's loop (``workers_managed``), and, when
gunicorn reaps a worker, its exit counted by reason and, if it died mid-request, the fallback
event (``child_exit``).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from .._attributes import EventType
from .._board import SLOT_ATTRIBUTE, Board, RequestState, WorkerRequest, slot_of
from .._config import Config
from .._export.exporters import spooled_exporter_index
from .._export.handover import ForkSafeExport
from .._export.log_routing import route_to_gunicorn
from .._export.processor import export_batch_size, schedule_delay_s
from .._export.resource import master_resource, worker_resource
from .._export.spooled import span_ids
from .._guard import log_once, never_raise
from .._spool import Spool
from .fallback import ExitStatuses, exit_reason, fallback_attributes, send_from_child
from .metrics import MasterMetrics
from .metrics import exit_reason as metric_exit_reason
from .monitor import Monitor, register_fork_handlers
from .spool_exporter import SpoolExporter

MIN_BOARD_SLOTS: Final = 32
# Room for the workers gunicorn may fork beyond --workers (TTIN, a slow reap during a reload).
BOARD_SLOTS_PER_WORKER: Final = 4
# Requests in flight a worker's slot describes one by one (more are counted, not described):
# a gevent worker's 1000 connections would make every slot 2 MiB.
MAX_BOARD_ENTRIES: Final = 64
# Set by ``setup`` on the workers alive when a HUP reloads gunicorn: those it replaces.
RELOADED_ATTRIBUTE: Final = "_wide_events_reloaded"


def requests_at_once(cfg: Any) -> int:
    """How many requests one worker of this configuration can serve at the same time."""
    worker_class = str(getattr(cfg, "worker_class_str", "") or "")
    if any(kind in worker_class.lower() for kind in ("gevent", "eventlet", "asgi", "uvicorn")):
        return int(getattr(cfg, "worker_connections", 1) or 1)
    return max(int(getattr(cfg, "threads", 1) or 1), 1)


class MasterSide:
    """The master's part; its state never crosses a fork (the board does, by design)."""

    def __init__(self, config: Config, export: ForkSafeExport) -> None:
        self.config = config
        self.export = export
        self.board: Board | None = None
        self.started_at = time.time()
        self.monitor: Monitor | None = None
        self.metrics: MasterMetrics | None = None
        self.spool_exporter: SpoolExporter | None = None
        # Replaces gunicorn.arbiter's os module (see _gunicorn.py): child_exit is not told how
        # a worker ended.
        self.exit_statuses = ExitStatuses(os)

    def setup(self, server: Any) -> None:
        """``Arbiter.setup`` (start and every HUP): before any fork, board and export ready."""
        route_to_gunicorn(server)
        register_fork_handlers()
        for worker in list(server.WORKERS.values()):  # empty at start; on HUP, the old ones
            setattr(worker, RELOADED_ATTRIBUTE, True)
        if self.board is None:
            slots = self.config.board_slots or max(
                MIN_BOARD_SLOTS, BOARD_SLOTS_PER_WORKER * int(server.cfg.workers)
            )
            entries = min(requests_at_once(server.cfg), MAX_BOARD_ENTRIES)
            self.board = Board(
                slots, entries, spool_bytes=self.config.spool_bytes, shared=self.config.live_view
            )
        cfg = server.cfg
        self.board.write_master(
            os.getpid(),
            self.started_at,
            int(cfg.timeout or 0),
            int(getattr(cfg, "max_requests", 0) or 0),
        )
        self.export.take_over(dict(os.environ))

    def workers_managed(self, server: Any) -> None:
        """After gunicorn managed its workers: the metrics if due (their child is forked while
        the monitor is still stopped), then the monitor a fork stopped."""
        if self.metrics is not None:
            with never_raise("metrics.export"):
                self.metrics.export_if_due(_listener_fds(server), self.exit_statuses)
        if self.spool_exporter is not None:
            with never_raise("spool_exporter.start"):
                self.spool_exporter.keep_running(_listener_fds(server), self.exit_statuses)
        if self.monitor is not None:
            self.monitor.resume()

    def when_ready(self, server: Any) -> None:
        if self.board is None or self.monitor is not None:
            return

        def workers() -> dict[int, int]:
            return {
                slot: pid
                for pid, worker in list(server.WORKERS.items())
                if (slot := slot_of(worker)) is not None
            }

        self.spool_exporter = self._spool_exporter(self.board)
        if self.spool_exporter is not None:  # forked before the monitor's thread starts
            with never_raise("spool_exporter.start"):
                self.spool_exporter.keep_running(_listener_fds(server), self.exit_statuses)
        self.monitor = Monitor(
            self.board,
            self.config.monitor_interval_s,
            workers=workers,
            listeners=lambda: list(server.LISTENERS),
        )
        self.monitor.start()
        with never_raise("metrics.setup"):
            self.metrics = self._master_metrics(server, self.board, workers)

    def _spool_exporter(self, board: Board) -> SpoolExporter | None:
        """The process that sends the spools, where there are spools and an OTLP exporter."""
        processor = self.export.span_processor
        if not board.spool_bytes or processor is None:
            return None
        index = spooled_exporter_index(processor.exporter_types)
        if index is None:
            return None
        return SpoolExporter(
            board,
            processor.exporter_types[index],
            export_batch_size(),
            schedule_delay_s(),
            self.config.exit_flush_timeout_s,
        )

    def _master_metrics(
        self, server: Any, board: Board, workers: Callable[[], dict[int, int]]
    ) -> MasterMetrics | None:
        """gunicorn's own metrics, where the SDK was configured with a metric exporter."""
        provider = metrics.get_meter_provider()
        if not self.export.metric_exports or not isinstance(provider, MeterProvider):
            return None
        sdk_config = provider._sdk_config
        return MasterMetrics(
            board,
            self.export.metric_exports,
            sdk_config.resource.merge(master_resource(server, self.started_at)),
            workers,
            views=sdk_config.views,
        )

    def pre_fork(self, worker: Any) -> None:
        if self.config.gc_freeze:
            # What the master holds (the SDK, the exporters, gRPC, Django with --preload) goes to
            # the permanent generation: without it each worker's first full collection walks all
            # of it, on a request (100 ms on a Wagtail site), and copies every page it touches.
            gc.freeze()
        slot = self._assign_slot()
        if slot is None:
            log_once(
                "board.full",
                "gunicorn-django-wide-events: all %s board slots are taken; new workers "
                "send events without worker and sibling data (raise WIDE_EVENTS_BOARD_SLOTS)",
                self.board.capacity if self.board is not None else 0,
            )
        setattr(worker, SLOT_ATTRIBUTE, slot)

    def _assign_slot(self) -> int | None:
        """A free slot whose spool still holds a dead worker's spans first: its new worker
        gives the exporter back what the dead one's thread held (``Spool.adopt``)."""
        board = self.board
        if board is None:
            return None
        for slot in board.free_slots():
            spool = board.spool(slot)
            if spool is not None and spool.pending_count():
                return board.assign_slot(slot)
        return board.assign_slot()

    def after_fork_in_worker(self) -> None:
        self.monitor = None  # the master's; its thread did not cross the fork
        self.metrics = None  # the master's; workers have their own

    def child_exit(self, server: Any, worker: Any) -> None:
        status = self.exit_statuses.pop(worker.pid)
        slot = slot_of(worker)
        in_flight: list[WorkerRequest] = []
        if slot is not None and self.board is not None:
            with never_raise("board.read_exit"):
                in_flight = self._requests_left(worker, slot)
        timed_out = bool(getattr(worker, "aborted", False)) or any(
            request.event_out for request in in_flight
        )
        if self.metrics is not None:
            with never_raise("metrics.count_exit"):
                self._count_exit_reason(server, worker, slot, status, timed_out)
        if slot is None or self.board is None:
            return
        if in_flight:  # a worker that ended mid-request: a timeout or a crash, for a live view
            with never_raise("board.count_exit"):
                self.board.count_exit(timeout=timed_out)
        with never_raise("fallback.send"):
            self._send_fallback_event(server, worker, slot, status)
        self.board.free_slot(slot)

    def _requests_left(self, worker: Any, slot: int) -> list[WorkerRequest]:
        """The requests ``worker`` was serving when it ended, as its slot shows them."""
        assert self.board is not None
        pid, _ = self.board.read_worker(slot)
        if pid != worker.pid:
            return []
        return [request for _, request in self.board.requests_in_flight(slot)]

    def _count_exit_reason(
        self, server: Any, worker: Any, slot: int | None, status: int | None, timed_out: bool
    ) -> None:
        assert self.metrics is not None
        served = 0
        if slot is not None and self.board is not None:
            served = self.board.requests_started(slot)
        reason = metric_exit_reason(
            status,
            timed_out=timed_out,
            # gunicorn's Arbiter.stop() drops its listeners before it stops the workers.
            stopping=not server.LISTENERS,
            reloaded=bool(getattr(worker, RELOADED_ATTRIBUTE, False)),
            served=served,
            max_requests=int(getattr(server.cfg, "max_requests", 0) or 0),
        )
        self.metrics.count_exit(reason)

    def _send_fallback_event(self, server: Any, worker: Any, slot: int, status: int | None) -> None:
        """The worker died mid-request with no event out: send one per request from the board."""
        assert self.board is not None
        board = self.board
        pid, spawned_at = board.read_worker(slot)
        if pid != worker.pid:
            return
        spool = board.spool(slot)
        unsent = [
            (entry, request)
            for entry, request in board.requests_in_flight(slot)
            if not request.event_out and not _in_spool(request, spool)
        ]
        processor = self.export.span_processor
        provider = trace.get_tracer_provider()
        if processor is None or not isinstance(provider, TracerProvider):
            return
        event_type, error_type = exit_reason(status, bool(getattr(worker, "aborted", False)))
        resource = provider.resource.merge(
            worker_resource(server, worker, slot, worker.pid, spawned_at)
        )
        now = time.time()
        events = []
        for entry, request in unsent:
            board.mark_event_out(slot, entry)
            attributes = fallback_attributes(request, slot, event_type, error_type, now)
            events.append((request, attributes, resource))
            if self.metrics is not None:
                self.metrics.record_request(request, error_type, now)
        if events:  # the spool's spans are the exporting process's to send
            send_from_child(events, processor.exporter_types, _listener_fds(server))

    def on_exit(self, server: Any) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        with never_raise("board.drain"):
            self._drain(server)
        if self.spool_exporter is not None:
            with never_raise("spool_exporter.finish"):
                self.spool_exporter.finish(_listener_fds(server), self.exit_statuses)
        if self.metrics is not None:
            # Its workers' exits included; gunicorn does not wait for the child.
            self.metrics.export_now(_listener_fds(server), self.config.exit_flush_timeout_s)

    def _drain(self, server: Any) -> None:
        """gunicorn exits: the requests its killed workers left in flight become ``crash``
        events (error ``shutdown``), sent from one exporting child bounded by
        ``WIDE_EVENTS_EXIT_FLUSH_TIMEOUT``; gunicorn does not wait for it. The spools are the
        exporting process's (``finish``)."""
        board = self.board
        processor = self.export.span_processor
        provider = trace.get_tracer_provider()
        if board is None or processor is None or not isinstance(provider, TracerProvider):
            return
        now = time.time()
        events = []
        workers = {slot_of(worker): worker for worker in list(server.WORKERS.values())}
        for slot in range(board.capacity):
            spool = board.spool(slot)
            if not board.in_flight(slot):
                continue
            pid, spawned_at = board.read_worker(slot)
            worker = workers.get(slot)
            resource = provider.resource.merge(
                worker_resource(server, worker, slot, pid, spawned_at)
                if worker is not None
                else Resource({"process.pid": pid})
            )
            for entry, request in board.requests_in_flight(slot):
                if request.event_out or _in_spool(request, spool):
                    continue
                board.mark_event_out(slot, entry)
                attributes = fallback_attributes(request, slot, EventType.CRASH, "shutdown", now)
                events.append((request, attributes, resource))
                if self.metrics is not None:
                    self.metrics.record_request(request, "shutdown", now)
        if events:
            send_from_child(
                events, processor.exporter_types, timeout_s=self.config.exit_flush_timeout_s
            )


def _in_spool(request: WorkerRequest, spool: Spool | None) -> bool:
    """A request killed while its span ended: its event is in the spool, not to be sent twice."""
    span_id = int.from_bytes(request.span_id, "big")
    return (
        request.state == RequestState.ENDING
        and spool is not None
        and any(span_id in span_ids(record) for record in spool.records())
    )


def _listener_fds(server: Any) -> list[int]:
    """gunicorn's listening sockets, which an exporting child closes first."""
    return [fd for listener in server.LISTENERS if (fd := _fileno(listener)) is not None]


def _fileno(listener: Any) -> int | None:
    try:
        return int(listener.fileno())
    except (AttributeError, OSError, ValueError):
        return None
