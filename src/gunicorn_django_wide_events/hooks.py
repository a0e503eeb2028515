"""Our side of gunicorn's server hooks: each method is named and shaped like its hook.

They run chained with the user's own hooks of the same name (see ``server.py``), so a
gunicorn config file keeps working unchanged.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from .__about__ import __version__
from .config import Config
from .export import ForkSafeExport
from .guard import forget_reports, never_raise
from .http_request import HttpAttributes
from .rejected import RejectedRequests
from .wsgi import WideEventsMiddleware

TRACER_NAME = "gunicorn_django_wide_events"


class GunicornHooks:
    """Worker set-up and tear-down; the master side is ``ForkSafeExport.take_over``."""

    # Hooks where ours runs before the user's: the user's code may already serve spans.
    RUN_FIRST = ("post_fork",)
    # Hooks where ours runs after the user's: wrap the final app, flush the last spans.
    RUN_LAST = ("post_worker_init", "worker_exit")

    def __init__(self, config: Config, export: ForkSafeExport) -> None:
        self.config = config
        self.export = export
        self.http = HttpAttributes(config)

    def post_fork(self, server: Any, worker: Any) -> None:
        with never_raise("hooks.post_fork"):
            forget_reports()
            self.export.start_in_worker()

    def post_worker_init(self, worker: Any) -> None:
        with never_raise("hooks.post_worker_init"):
            tracer = trace.get_tracer(TRACER_NAME, __version__)
            sql_max_length = self.config.sql_max_length
            worker.wsgi = WideEventsMiddleware(worker.wsgi, tracer, self.http, sql_max_length)
            worker.handle_error = RejectedRequests(
                worker.handle_error, tracer, self.http, sql_max_length
            )

    def worker_exit(self, server: Any, worker: Any) -> None:
        with never_raise("hooks.worker_exit"):
            processor = self.export.span_processor
            if processor is None:
                return
            # Leave gunicorn's graceful timeout a second of its own to reap us.
            graceful_s = float(getattr(server.cfg, "graceful_timeout", 30))
            processor.shutdown_within(min(self.config.shutdown_timeout_s, max(graceful_s - 1, 0.5)))
