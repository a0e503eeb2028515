"""Every setting the environment can change, read once in the gunicorn master before the first fork.

Nothing else in the package reads ``os.environ`` for its own settings: the request path gets a
frozen ``Config`` and never parses a string. A bad value stops start-up with one message naming
the variable, the value and what is accepted, instead of failing on every request.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

ENV_PREFIX: Final = "WIDE_EVENTS_"

WIDE_EVENTS_CAPTURE_USER_ID: Final = "WIDE_EVENTS_CAPTURE_USER_ID"
"""Put the authenticated Django user's primary key on the event as ``user.id``."""

WIDE_EVENTS_REDACT_QUERY_KEYS: Final = "WIDE_EVENTS_REDACT_QUERY_KEYS"
"""Extra query-string key fragments (comma-separated) whose values become ``REDACTED``."""

WIDE_EVENTS_SQL_MAX_LENGTH: Final = "WIDE_EVENTS_SQL_MAX_LENGTH"
"""Longest SQL statement text kept on an event, in characters."""

WIDE_EVENTS_SHUTDOWN_TIMEOUT: Final = "WIDE_EVENTS_SHUTDOWN_TIMEOUT"
"""Seconds a stopping worker waits for its last spans to be exported."""

WIDE_EVENTS_TIMEOUT_MARGIN: Final = "WIDE_EVENTS_TIMEOUT_MARGIN"
"""Seconds before gunicorn's worker timeout at which the watchdog sends the timeout event."""

WIDE_EVENTS_REQUEST_TIMEOUT: Final = "WIDE_EVENTS_REQUEST_TIMEOUT"
"""Seconds a request may run before its timeout event; 0 means gunicorn's timeout minus margin."""

WIDE_EVENTS_MONITOR_INTERVAL: Final = "WIDE_EVENTS_MONITOR_INTERVAL"
"""Seconds between two samples of the workers by the master's monitor thread."""

WIDE_EVENTS_BOARD_SLOTS: Final = "WIDE_EVENTS_BOARD_SLOTS"
"""Worker slots on the shared-memory board; 0 sizes it to 4 x the configured workers (min 32)."""

WIDE_EVENTS_CONSOLE_FORMAT: Final = "WIDE_EVENTS_CONSOLE_FORMAT"
"""Line format of the ``wide_events_console`` exporter: ``logfmt`` or ``json``."""

WIDE_EVENTS_SPOOL_SIZE: Final = "WIDE_EVENTS_SPOOL_SIZE"
"""Bytes of shared memory per worker slot for its finished spans until the collector took them
(default 2 MiB; 0: no spool, spans batch in the worker's memory only, and are lost with it)."""

WIDE_EVENTS_EXIT_FLUSH_TIMEOUT: Final = "WIDE_EVENTS_EXIT_FLUSH_TIMEOUT"
"""Seconds the master's exporting processes have, once gunicorn exits, to send what the workers
left (their spools, the requests killed in flight); gunicorn itself does not wait."""

WIDE_EVENTS_LIVE_VIEW: Final = "WIDE_EVENTS_LIVE_VIEW"
"""Let ``wide-events top`` and ``status`` read the board (owner-only; ``false`` on a locked-down
host makes the board anonymous memory that no other process can open)."""

WIDE_EVENTS_WIRE_ENCODER: Final = "WIDE_EVENTS_WIRE_ENCODER"
"""Encode spans for the OTLP exporters with the package's own protobuf writer (``false``: the
exporters' stock encoder, several times slower for wide events)."""

WIDE_EVENTS_GC_FREEZE: Final = "WIDE_EVENTS_GC_FREEZE"
"""Move what the master holds into the garbage collector's permanent generation before each fork
(``gc.freeze()``): the workers' collections never walk it, and never copy its pages."""

# Standard OpenTelemetry variables this package honours for the request event.
OTEL_CAPTURE_REQUEST_HEADERS: Final = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"
OTEL_CAPTURE_RESPONSE_HEADERS: Final = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE"
OTEL_SANITIZE_HEADER_FIELDS: Final = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
OTEL_EXCLUDED_URLS: Final = "OTEL_PYTHON_EXCLUDED_URLS"
OTEL_DJANGO_EXCLUDED_URLS: Final = "OTEL_PYTHON_DJANGO_EXCLUDED_URLS"

# Query-string keys containing one of these (case-insensitively) never leave the process.
DEFAULT_REDACT_QUERY_KEYS: Final = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "session",
    "csrf",
    "signature",
    "sig",
    "credential",
    "jwt",
    "otp",
    "code",
)

_Number = TypeVar("_Number", int, float)

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """An environment variable holds a value this package cannot use."""

    def __init__(self, name: str, raw: str, accepted: str) -> None:
        super().__init__(f"{name}={raw!r} is not valid: expected {accepted}")
        self.name = name


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(name, raw, "one of true/false, yes/no, on/off, 1/0")


def _number(
    name: str,
    raw: str,
    convert: Callable[[str], _Number],
    valid: Callable[[_Number], bool],
    accepted: str,
) -> _Number:
    """``raw`` read by ``convert`` and checked by ``valid`` (NaN fails every comparison)."""
    try:
        value = convert(raw.strip())
    except ValueError:
        raise ConfigError(name, raw, accepted) from None
    if not valid(value):
        raise ConfigError(name, raw, accepted)
    return value


def parse_positive_int(name: str, raw: str) -> int:
    return _number(name, raw, int, lambda value: value > 0, "a whole number greater than 0")


def parse_positive_seconds(name: str, raw: str) -> float:
    return _number(
        name,
        raw,
        float,
        lambda value: 0 < value < float("inf"),
        "a number of seconds greater than 0, such as 2 or 0.5",
    )


def parse_non_negative_seconds(name: str, raw: str) -> float:
    return _number(
        name,
        raw,
        float,
        lambda value: 0 <= value < float("inf"),
        "a number of seconds, 0 or more, such as 0 or 2.5",
    )


def parse_key_list(name: str, raw: str) -> tuple[str, ...]:
    keys = tuple(key.strip().lower() for key in raw.split(",") if key.strip())
    if any(not key.replace("_", "").replace("-", "").isalnum() for key in keys):
        raise ConfigError(name, raw, "comma-separated words made of letters, digits, - and _")
    return keys


def parse_board_slots(name: str, raw: str) -> int:
    return _number(
        name,
        raw,
        int,
        lambda value: 0 <= value <= 4096,
        "a whole number from 0 (sized from the workers) to 4096",
    )


MIN_SPOOL_BYTES: Final = 8192
DEFAULT_SPOOL_BYTES: Final = 2 * 2**20
MAX_SPOOL_BYTES: Final = 64 * 2**20


def parse_spool_size(name: str, raw: str) -> int:
    return _number(
        name,
        raw,
        int,
        lambda value: value == 0 or MIN_SPOOL_BYTES <= value <= MAX_SPOOL_BYTES,
        f"0, or a number of bytes from {MIN_SPOOL_BYTES} to {MAX_SPOOL_BYTES}",
    )


def parse_console_format(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("logfmt", "json"):
        raise ConfigError(name, raw, "logfmt or json")
    return value


def parse_pattern_list(name: str, raw: str) -> tuple[str, ...]:
    patterns = tuple(part.strip() for part in raw.split(",") if part.strip())
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error:
            raise ConfigError(
                name, raw, f"comma-separated names or regular expressions ({pattern!r} is neither)"
            ) from None
    return patterns


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: where it goes in ``Config`` and how its text is read."""

    env: str
    field: str
    parse: Callable[[str, str], Any]


SETTINGS: Final = (
    Setting(WIDE_EVENTS_CAPTURE_USER_ID, "capture_user_id", parse_bool),
    Setting(WIDE_EVENTS_REDACT_QUERY_KEYS, "extra_redact_query_keys", parse_key_list),
    Setting(WIDE_EVENTS_SQL_MAX_LENGTH, "sql_max_length", parse_positive_int),
    Setting(WIDE_EVENTS_SHUTDOWN_TIMEOUT, "shutdown_timeout_s", parse_positive_seconds),
    Setting(WIDE_EVENTS_TIMEOUT_MARGIN, "timeout_margin_s", parse_positive_seconds),
    Setting(WIDE_EVENTS_REQUEST_TIMEOUT, "request_timeout_s", parse_non_negative_seconds),
    Setting(WIDE_EVENTS_MONITOR_INTERVAL, "monitor_interval_s", parse_positive_seconds),
    Setting(WIDE_EVENTS_BOARD_SLOTS, "board_slots", parse_board_slots),
    Setting(WIDE_EVENTS_CONSOLE_FORMAT, "console_format", parse_console_format),
    Setting(WIDE_EVENTS_WIRE_ENCODER, "wire_encoder", parse_bool),
    Setting(WIDE_EVENTS_LIVE_VIEW, "live_view", parse_bool),
    Setting(WIDE_EVENTS_SPOOL_SIZE, "spool_bytes", parse_spool_size),
    Setting(WIDE_EVENTS_EXIT_FLUSH_TIMEOUT, "exit_flush_timeout_s", parse_positive_seconds),
    Setting(WIDE_EVENTS_GC_FREEZE, "gc_freeze", parse_bool),
    Setting(OTEL_CAPTURE_REQUEST_HEADERS, "capture_request_headers", parse_pattern_list),
    Setting(OTEL_CAPTURE_RESPONSE_HEADERS, "capture_response_headers", parse_pattern_list),
    Setting(OTEL_SANITIZE_HEADER_FIELDS, "sanitize_header_fields", parse_pattern_list),
    # The Django-specific list wins over the generic one, as in opentelemetry-util-http.
    Setting(OTEL_EXCLUDED_URLS, "excluded_urls", parse_pattern_list),
    Setting(OTEL_DJANGO_EXCLUDED_URLS, "excluded_urls", parse_pattern_list),
)


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting the environment can change, read once in the master before the first fork."""

    capture_user_id: bool = False
    extra_redact_query_keys: tuple[str, ...] = ()
    sql_max_length: int = 2048
    shutdown_timeout_s: float = 5.0
    timeout_margin_s: float = 1.0
    request_timeout_s: float = 0.0
    monitor_interval_s: float = 1.0
    board_slots: int = 0
    console_format: str = "logfmt"
    wire_encoder: bool = True
    live_view: bool = True
    # Opt-in while it costs the request path more (docs/durability.md); 2 MiB is the size to
    # take: about 1,000 wide events, the room of the SDK batch processor's queue.
    spool_bytes: int = DEFAULT_SPOOL_BYTES
    exit_flush_timeout_s: float = 5.0
    gc_freeze: bool = True
    capture_request_headers: tuple[str, ...] = ()
    capture_response_headers: tuple[str, ...] = ()
    sanitize_header_fields: tuple[str, ...] = ()
    excluded_urls: tuple[str, ...] = ()

    @property
    def redact_query_keys(self) -> tuple[str, ...]:
        return DEFAULT_REDACT_QUERY_KEYS + self.extra_redact_query_keys

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Config:
        """Read the ``WIDE_EVENTS_*`` variables.

        Raises:
            ConfigError: a variable is set to a value outside what it accepts.
        """
        values = {
            setting.field: setting.parse(setting.env, environ[setting.env])
            for setting in SETTINGS
            if setting.env in environ
        }
        return cls(**values)


def config_from_environ_or_exit() -> Config:
    """Read the configuration; a bad value stops start-up with one line, not a traceback."""
    try:
        return Config.from_environ(os.environ)
    except ConfigError as error:
        print(f"gunicorn-django-wide-events: {error}", file=sys.stderr, flush=True)  # noqa: T201
        # Not SystemExit: this runs inside sitecustomize, where SystemExit becomes
        # "Fatal Python error: init_import_site" and a page of traceback.
        os._exit(2)


def default_of(setting: Setting) -> Any:
    """The value a setting has when its variable is not set (the README table shows it)."""
    (field,) = (field for field in dataclasses.fields(Config) if field.name == setting.field)
    return field.default
