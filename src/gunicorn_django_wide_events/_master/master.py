"""The master side of gunicorn's hooks: the board, its monitor, and the dead workers' events.

Before any fork (``setup``, at start and on every HUP): the board is created and export handed
over to the workers. Then: a slot for each worker about to be forked (``pre_fork``), the
monitor started once gunicorn is ready and resumed after each round of forks, and, when
gunicorn reaps a worker that died mid-request, the fallback event (``child_exit``).
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from .._board import SLOT_ATTRIBUTE, Board, slot_of
from .._config import Config
from .._export.handover import ForkSafeExport
from .._export.log_routing import route_to_gunicorn
from .._export.resource import worker_resource
from .._guard import log_once, never_raise
from .fallback import ExitStatuses, exit_reason, fallback_attributes, send_from_child
from .monitor import Monitor, register_fork_handlers

MIN_BOARD_SLOTS: Final = 32
# Room for the workers gunicorn may fork beyond --workers (TTIN, a slow reap during a reload).
BOARD_SLOTS_PER_WORKER: Final = 4


class MasterSide:
    """The master's part; its state never crosses a fork (the board does, by design)."""

    def __init__(self, config: Config, export: ForkSafeExport) -> None:
        self.config = config
        self.export = export
        self.board: Board | None = None
        self.monitor: Monitor | None = None
        # Replaces gunicorn.arbiter's os module (see _gunicorn.py): child_exit is not told how
        # a worker ended.
        self.exit_statuses = ExitStatuses(os)

    def setup(self, server: Any) -> None:
        """``Arbiter.setup`` (start and every HUP): before any fork, board and export ready."""
        route_to_gunicorn(server)
        register_fork_handlers()
        if self.board is None:
            slots = self.config.board_slots or max(
                MIN_BOARD_SLOTS, BOARD_SLOTS_PER_WORKER * int(server.cfg.workers)
            )
            self.board = Board(slots)
        self.export.take_over(dict(os.environ))

    def resume_monitor(self) -> None:
        """After gunicorn managed its workers: resume the monitor a fork stopped."""
        if self.monitor is not None:
            self.monitor.resume()

    def when_ready(self, server: Any) -> None:
        if self.board is None or self.monitor is not None:
            return
        self.monitor = Monitor(
            self.board,
            self.config.monitor_interval_s,
            workers=lambda: {
                slot: pid
                for pid, worker in list(server.WORKERS.items())
                if (slot := slot_of(worker)) is not None
            },
            listeners=lambda: list(server.LISTENERS),
        )
        self.monitor.start()

    def pre_fork(self, worker: Any) -> None:
        slot = self.board.assign_slot() if self.board is not None else None
        if slot is None:
            log_once(
                "board.full",
                "gunicorn-django-wide-events: all %s board slots are taken; new workers "
                "send events without worker and sibling data (raise WIDE_EVENTS_BOARD_SLOTS)",
                self.board.capacity if self.board is not None else 0,
            )
        setattr(worker, SLOT_ATTRIBUTE, slot)

    def after_fork_in_worker(self) -> None:
        self.monitor = None  # the master's; its thread did not cross the fork

    def child_exit(self, server: Any, worker: Any) -> None:
        status = self.exit_statuses.pop(worker.pid)
        slot = slot_of(worker)
        if slot is None or self.board is None:
            return
        with never_raise("fallback.send"):
            self._send_fallback_event(server, worker, slot, status)
        self.board.free_slot(slot)

    def _send_fallback_event(self, server: Any, worker: Any, slot: int, status: int | None) -> None:
        """The worker died mid-request with no event out: send it from the board."""
        assert self.board is not None
        request = self.board.read_request(slot)
        if not request.started_at or request.event_out or request.pid != worker.pid:
            return
        processor = self.export.span_processor
        provider = trace.get_tracer_provider()
        if processor is None or not isinstance(provider, TracerProvider):
            return
        self.board.mark_event_out(slot)
        event_type, error_type = exit_reason(status, bool(getattr(worker, "aborted", False)))
        attributes = fallback_attributes(request, slot, event_type, error_type, time.time())
        resource = provider.resource.merge(
            worker_resource(server, worker, slot, worker.pid, request.spawned_at)
        )
        send_from_child(request, attributes, resource, processor.exporter_types)

    def on_exit(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
