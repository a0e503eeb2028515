"""Where the package's and the exporters' log records go: once per process, to gunicorn's log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Final

from .._guard import LOGGER_NAME

# Exporters log every failed batch; a dead collector is worth one line per worker, not a stream.
EXPORTER_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
)


class FirstRecordOnly(logging.Filter):
    """Lets one record through per process, then one note saying the rest are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.seen += 1
        if self.seen == 1:
            record.msg = f"{record.msg} (further export errors of this process are not logged)"
        return self.seen == 1

    def reset(self) -> None:
        self.seen = 0


first_record_only: Final = FirstRecordOnly()


def quiet_exporter_loggers() -> None:
    for name in EXPORTER_LOGGERS:
        exporter_logger = logging.getLogger(name)
        if first_record_only not in exporter_logger.filters:
            exporter_logger.addFilter(first_record_only)


def route_to_gunicorn(server: Any) -> None:
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


# What the SDK logs when it is handed over: "already shut down", "not registered".
HANDOVER_LOGGERS: Final = (
    *EXPORTER_LOGGERS,
    "opentelemetry.sdk.metrics._internal",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk._shared_internal",
)


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def logging_silenced() -> Iterator[None]:
    """Mute the SDK's own loggers while the master hands its exporters over.

    Shutting down exporters first (so that no final export can block start-up on a dead
    collector) makes the SDK log "already shut down" and "not registered" warnings that are
    consequences of the hand-over, not news for the user.
    """
    drop_all = _DropAll()
    loggers = [logging.getLogger(name) for name in HANDOVER_LOGGERS]
    for sdk_logger in loggers:
        sdk_logger.addFilter(drop_all)
    try:
        yield
    finally:
        for sdk_logger in loggers:
            sdk_logger.removeFilter(drop_all)
