"""The worker side of gunicorn's hooks: what a worker builds after fork and tears down at exit.

After fork: its board slot, its resource, its own exporters and its metric instruments
(``post_fork``); then, once gunicorn has loaded the app, the watchdog and the request path
around the app (``post_worker_init``): the WSGI path, or the ASGI path for a worker serving an
ASGI app (``_worker/asgi_worker.py`` says which). At exit: the watchdog stops and the last spans
and metric points are exported within a bounded time (``worker_exit``).
"""

from __future__ import annotations

import os
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider

from .. import __about__
from .._board import Board, slot_of
from .._config import Config
from .._export.handover import ForkSafeExport
from .._export.resource import worker_resource
from .._guard import forget_reports
from . import asgi, wsgi
from .asgi import WideEventsAsgiMiddleware, no_loop_attachment
from .asgi_rejected import RejectedAsgiRequests, patch_asgi_protocol
from .asgi_worker import abort_in_main_thread, asgi_app_attribute, is_gunicorn_asgi_worker
from .event import RequestEvent
from .greenlets import GreenletRequestEvent, adapt_to_gevent_patches, serves_greenlets
from .http import HttpAttributes
from .loop_watchdog import EventLoopWatch, loop_watchdog_for
from .metrics import NoRequestMetrics, RequestMetrics, no_request_metrics, request_metrics_for
from .rejected import RejectedRequests
from .slot import NoSlot, WorkerSlot, no_slot
from .span import server_span_starter
from .watchdog import EXIT_FLUSH_S, NoWatchdog, Watchdog, no_watchdog, watchdog_for
from .wsgi import WideEventsMiddleware

TRACER_NAME: Final = "gunicorn_django_wide_events"
# A timeout event's urgent export must end before gunicorn's SIGKILL, a margin after the deadline.
MIN_URGENT_EXPORT_S: Final = 0.2
URGENT_SHARE_OF_MARGIN: Final = 0.8
# What a stopping worker leaves gunicorn's graceful timeout to reap it, at least.
REAP_ALLOWANCE_S: Final = 1.0
MIN_SHUTDOWN_S: Final = 0.5


class WorkerSide:
    """One worker's part; built in the master, used only after fork."""

    def __init__(self, config: Config, export: ForkSafeExport) -> None:
        self.config = config
        self.export = export
        self.http = HttpAttributes(config)  # built before fork: its patterns are compiled once
        self.slot: WorkerSlot | NoSlot = no_slot
        self.watchdog: Watchdog | NoWatchdog = no_watchdog
        self.metrics: RequestMetrics | NoRequestMetrics = no_request_metrics

    def post_fork(self, server: Any, worker: Any, board: Board | None) -> None:
        forget_reports()
        slot = slot_of(worker)
        spool = None
        if slot is not None and board is not None:
            self.slot = WorkerSlot(board, slot)
            spool = self.slot.spool  # what the last worker's thread held goes back to the exporter
            if spool is not None:
                spool.adopt()
        # The logs and metrics pipelines too: the app's log records and every metric point
        # (each worker its own series) say which worker made them.
        providers = (
            trace.get_tracer_provider(),
            get_logger_provider(),
            metrics.get_meter_provider(),
        )
        updates = [
            update
            for provider in providers
            if (update := getattr(provider, "_update_resource", None)) is not None
        ]
        if updates:
            spawned_at = self.slot.spawned_at if isinstance(self.slot, WorkerSlot) else 0.0
            resource = worker_resource(server, worker, slot, os.getpid(), spawned_at)
            for update_resource in updates:
                update_resource(resource)
        margin_s = self.config.timeout_margin_s
        self.export.start_in_worker(
            urgent_timeout_s=max(MIN_URGENT_EXPORT_S, URGENT_SHARE_OF_MARGIN * margin_s),
            spool=spool,
        )
        # Instruments once per worker, on the meter provider whose readers were just built.
        self.metrics = request_metrics_for(self.export.metrics_exported())

    def post_worker_init(self, worker: Any) -> None:
        app_attribute = asgi_app_attribute(worker)
        if app_attribute is not None:
            self._serve_asgi(worker, app_attribute)
            return
        self.watchdog = watchdog_for(
            worker,
            self.config,
            self.export.span_processor,
            trim_through=(wsgi.__file__,),
            flush_before_exit=self.export.flush_before_exit,
        )
        event_class = RequestEvent
        if serves_greenlets(worker):
            adapt_to_gevent_patches()
            event_class = GreenletRequestEvent
        spans = server_span_starter(TRACER_NAME, __about__.__version__)
        sql_max_length = self.config.sql_max_length
        worker.wsgi = WideEventsMiddleware(
            worker.wsgi,
            spans,
            http=self.http,
            sql_max_length=sql_max_length,
            slot=self.slot,
            watchdog=self.watchdog,
            event_class=event_class,
            metrics=self.metrics,
        )
        worker.handle_error = RejectedRequests(
            worker.handle_error, spans, self.http, sql_max_length, self.slot, metrics=self.metrics
        )

    def _serve_asgi(self, worker: Any, app_attribute: str) -> None:
        """The ASGI path around the app in ``worker.<app_attribute>``, watched by a loop
        watchdog. The answers to malformed requests are written by the worker's protocol, not
        ``handle_error``: gunicorn's own asgi worker lets them be seen (``asgi_rejected.py``)."""
        spans = server_span_starter(TRACER_NAME, __about__.__version__)
        sql_max_length = self.config.sql_max_length
        loop = EventLoopWatch()
        self.watchdog = loop_watchdog_for(
            worker,
            self.config,
            self.export.span_processor,
            loop,
            trim_through=(asgi.__file__,),
            flush_before_exit=self.export.flush_before_exit,
        )
        setattr(
            worker,
            app_attribute,
            WideEventsAsgiMiddleware(
                getattr(worker, app_attribute),
                spans,
                http=self.http,
                sql_max_length=sql_max_length,
                slot=self.slot,
                watchdog=self.watchdog,
                # Nothing watches the loop without a watchdog (--timeout 0): no tick, no tasks.
                loop=loop if self.watchdog is not no_watchdog else no_loop_attachment,
                metrics=self.metrics,
            ),
        )
        if is_gunicorn_asgi_worker(worker):
            patch_asgi_protocol(
                RejectedAsgiRequests(
                    spans, self.http, sql_max_length, self.slot, metrics=self.metrics
                )
            )
        abort_in_main_thread(worker)

    def worker_abort(self) -> None:
        """gunicorn's SIGABRT came before a deadline (margin too small): send the events now,
        then, side by side and briefly (gunicorn's SIGKILL follows), the spans and metric points
        still held: the exit's own shutdown gets to the metrics only after the spans."""
        self.watchdog.fire_all()
        self.export.flush_before_exit(EXIT_FLUSH_S)

    def worker_exit(self, server: Any) -> None:
        self.watchdog.stop()
        graceful_s = float(getattr(server.cfg, "graceful_timeout", 30))
        self.export.shutdown_within(
            min(self.config.shutdown_timeout_s, max(graceful_s - REAP_ALLOWANCE_S, MIN_SHUTDOWN_S))
        )
