"""Our side of gunicorn's server hooks: each method is named and shaped like its hook.

They run chained with the user's own hooks of the same name (see ``server.py``), so a gunicorn
config file keeps working unchanged. Master hooks keep the board (slots, monitor); worker hooks
build the worker's export, slot and request path.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from .__about__ import __version__
from ._board import Board
from ._config import Config
from ._export.handover import EXPORTER_LOGGERS, ForkSafeExport
from ._export.resource import worker_resource
from ._guard import LOGGER_NAME, forget_reports, log_once, never_raise
from ._master.fallback import ExitStatuses, exit_reason, fallback_attributes, send_from_child
from ._master.monitor import Monitor, register_fork_handlers
from ._worker.http import HttpAttributes
from ._worker.rejected import RejectedRequests
from ._worker.slot import NoSlot, WorkerSlot, no_slot
from ._worker.span import server_span_starter
from ._worker.watchdog import NoWatchdog, Watchdog, deadlines_for, no_watchdog
from ._worker.wsgi import WideEventsMiddleware

TRACER_NAME: Final = "gunicorn_django_wide_events"
SLOT_ATTRIBUTE: Final = "wide_events_slot"  # set on gunicorn's Worker object by pre_fork
MIN_BOARD_SLOTS: Final = 32
# Workers whose threads are greenlets: a watchdog there could not preempt a stuck request.
UNWATCHABLE_WORKER_MODULES: Final = ("gunicorn.workers.ggevent", "gunicorn.workers.geventlet")


def slot_of(worker: Any) -> int | None:
    slot = getattr(worker, SLOT_ATTRIBUTE, None)
    return slot if isinstance(slot, int) else None


def log_to_gunicorn(server: Any) -> None:
    """Our messages, and the exporters' once-per-worker failures, go to gunicorn's error log.

    Where users look; and a root logger taken over by a logging instrumentation would otherwise
    ship "the collector is unreachable" to that very collector. Redone on HUP, which rebuilds
    gunicorn's handlers.
    """
    error_log = getattr(server.log, "error_log", None)
    if not isinstance(error_log, logging.Logger):
        return
    for name in (LOGGER_NAME, *EXPORTER_LOGGERS):
        target = logging.getLogger(name)
        target.handlers = list(error_log.handlers)
        target.propagate = False
    logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)


class GunicornHooks:
    """Everything the package does in gunicorn's master and workers, hook by hook."""

    # Hooks where ours runs before the user's: the user's code may rely on what ours sets up.
    RUN_FIRST = ("pre_fork", "post_fork", "worker_abort")
    # Hooks where ours runs after the user's: wrap the final app, flush the last spans.
    RUN_LAST = ("when_ready", "post_worker_init", "child_exit", "worker_exit", "on_exit")

    def __init__(self, config: Config, export: ForkSafeExport) -> None:
        self.config = config
        self.export = export
        self.http = HttpAttributes(config)
        self.board: Board | None = None
        self.monitor: Monitor | None = None
        self.slot: WorkerSlot | NoSlot = no_slot
        self.watchdog: Watchdog | NoWatchdog = no_watchdog
        self.exit_statuses = ExitStatuses(os)

    # -- master ----------------------------------------------------------------------------

    def arbiter_setup(self, server: Any) -> None:
        """Arbiter.setup (start and every HUP): before any fork, board and export ready."""
        log_to_gunicorn(server)
        register_fork_handlers()
        if self.board is None:
            slots = self.config.board_slots or max(MIN_BOARD_SLOTS, 4 * int(server.cfg.workers))
            self.board = Board(slots)
        self.export.take_over(dict(os.environ))

    def arbiter_tick(self, server: Any) -> None:
        """After gunicorn managed its workers (at start, then once per turn of its main loop):
        resume the monitor a fork stopped."""
        if self.monitor is not None:
            self.monitor.resume()

    def when_ready(self, server: Any) -> None:
        with never_raise("hooks.when_ready"):
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

    def pre_fork(self, server: Any, worker: Any) -> None:
        with never_raise("hooks.pre_fork"):
            slot = self.board.assign_slot() if self.board is not None else None
            if slot is None:
                log_once(
                    "board.full",
                    "gunicorn-django-wide-events: all %s board slots are taken; new workers "
                    "send events without worker and sibling data (raise WIDE_EVENTS_BOARD_SLOTS)",
                    self.board.capacity if self.board is not None else 0,
                )
            setattr(worker, SLOT_ATTRIBUTE, slot)

    def child_exit(self, server: Any, worker: Any) -> None:
        with never_raise("hooks.child_exit"):
            status = self.exit_statuses.pop(worker.pid)
            slot = slot_of(worker)
            if slot is None or self.board is None:
                return
            with never_raise("fallback.send"):
                self._send_fallback_event(server, worker, slot, status)
            self.board.free_slot(slot)

    def _send_fallback_event(self, server: Any, worker: Any, slot: int, status: int | None) -> None:
        """The worker died mid-request with no event out: the master sends it (fallback.py)."""
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

    def on_exit(self, server: Any) -> None:
        with never_raise("hooks.on_exit"):
            if self.monitor is not None:
                self.monitor.stop()

    # -- worker ----------------------------------------------------------------------------

    def post_fork(self, server: Any, worker: Any) -> None:
        with never_raise("hooks.post_fork"):
            forget_reports()
            self.monitor = None  # the master's; its thread did not cross the fork
            slot = slot_of(worker)
            if slot is not None and self.board is not None:
                self.slot = WorkerSlot(self.board, slot)
            provider = trace.get_tracer_provider()
            update_resource = getattr(provider, "_update_resource", None)
            if update_resource is not None:
                spawned_at = self.slot.spawned_at if isinstance(self.slot, WorkerSlot) else 0.0
                update_resource(worker_resource(server, worker, slot, os.getpid(), spawned_at))
            self.export.start_in_worker(
                urgent_timeout_s=max(0.2, 0.8 * self.config.timeout_margin_s)
            )

    def post_worker_init(self, worker: Any) -> None:
        with never_raise("hooks.post_worker_init"):
            self.watchdog = self._start_watchdog(worker)
            spans = server_span_starter(TRACER_NAME, __version__)
            sql_max_length = self.config.sql_max_length
            worker.wsgi = WideEventsMiddleware(
                worker.wsgi,
                spans,
                http=self.http,
                sql_max_length=sql_max_length,
                slot=self.slot,
                watchdog=self.watchdog,
            )
            worker.handle_error = RejectedRequests(
                worker.handle_error, spans, self.http, sql_max_length, self.slot
            )

    def worker_abort(self, worker: Any) -> None:
        """gunicorn's SIGABRT came before a deadline (margin too small): send the events now."""
        with never_raise("hooks.worker_abort"):
            self.watchdog.fire_all()

    def worker_exit(self, server: Any, worker: Any) -> None:
        with never_raise("hooks.worker_exit"):
            self.watchdog.stop()
            # Leave gunicorn's graceful timeout a second of its own to reap us.
            graceful_s = float(getattr(server.cfg, "graceful_timeout", 30))
            self.export.shutdown_within(
                min(self.config.shutdown_timeout_s, max(graceful_s - 1, 0.5))
            )

    def _start_watchdog(self, worker: Any) -> Watchdog | NoWatchdog:
        if type(worker).__module__.startswith(UNWATCHABLE_WORKER_MODULES):
            log_once(
                "watchdog.gevent",
                "gunicorn-django-wide-events: %s workers get no timeout events (the watchdog "
                "needs a real thread); request events work as usual",
                type(worker).__name__,
            )
            return no_watchdog
        timeout = float(worker.cfg.timeout or 0)
        margin = self.config.timeout_margin_s
        if timeout and margin >= timeout:
            margin = timeout / 2
            log_once(
                "watchdog.margin",
                "gunicorn-django-wide-events: WIDE_EVENTS_TIMEOUT_MARGIN is not below gunicorn's "
                "timeout of %ss; using %ss",
                timeout,
                margin,
            )
        if not timeout and not self.config.request_timeout_s:
            return no_watchdog  # --timeout 0 and no request timeout: nothing to watch
        watchdog = Watchdog(
            self.export.span_processor,
            slot=self.slot,
            sql_max_length=self.config.sql_max_length,
            deadlines=deadlines_for(worker, timeout, margin, self.config.request_timeout_s),
        )
        watchdog.start()
        return watchdog
