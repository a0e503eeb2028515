"""The standard ``OTEL_*`` variables, checked before the OpenTelemetry SDK reads them.

A bad value there (``OTEL_EXPORTER_OTLP_PROTOCOL=bogus``, ``OTEL_TRACES_EXPORTER=bogus``,
``OTEL_EXPORTER_OTLP_TIMEOUT=abc``) makes the SDK's configuration raise inside
``opentelemetry-instrument``'s ``sitecustomize``, which logs a traceback and lets the program run
on: no instrumentor is loaded (this package's neither), and gunicorn serves without a single
event. So the values are checked first, by the same rules as the SDK and the OTLP exporters of
the tested releases apply, and a bad one stops start-up with one line, as a bad ``WIDE_EVENTS_*``
value does. Only values that would lose events are checked: where the SDK itself would fail, or
silently fall back on something else than what was asked (a sampler it does not know).

Who checks: ``auto.py`` before it configures the SDK, and for ``opentelemetry-instrument``
``_launch_check.py``, which that command loads before it runs gunicorn.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from ._config import ConfigError

SIGNALS: Final = ("traces", "metrics", "logs")
OTLP_PROTOCOLS: Final = ("grpc", "http/protobuf")
RATIO_SAMPLERS: Final = ("traceidratio", "parentbased_traceidratio")
# Read by the SDK's SpanLimits: whole numbers, 0 or more ("" counts as unset).
SPAN_LIMITS: Final = (
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)
# The SDK's batch processors' defaults, for the check that a batch fits the queue.
DEFAULT_MAX_QUEUE_SIZE: Final = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE: Final = 512

EntryPointNames = Callable[[str], frozenset[str]]


def installed_entry_points(group: str) -> frozenset[str]:
    """Names in an entry-point group, as the SDK looks components up."""
    from opentelemetry.util._importlib_metadata import entry_points  # noqa: PLC0415

    return frozenset(entry_point.name for entry_point in entry_points(group=group))


def check_otel_environ(
    environ: Mapping[str, str], entry_point_names: EntryPointNames = installed_entry_points
) -> None:
    """Raise ``ConfigError`` for the first ``OTEL_*`` value that would cost the events.

    ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER`` default to ``otlp``, as opentelemetry-distro sets
    them (the package depends on it).
    """
    for signal in SIGNALS:
        for exporter in _exporters(environ, signal, entry_point_names):
            _check_otlp_exporter(environ, signal, exporter)
    for name in SPAN_LIMITS:
        _check_whole_number(environ, name, minimum=0, allow_empty=True)
    for prefix in ("OTEL_BSP_", "OTEL_BLRP_"):
        _check_batch_processor(environ, prefix)
    _check_sampler(environ, entry_point_names)
    _check_components(
        environ, "OTEL_PROPAGATORS", "opentelemetry_propagator", entry_point_names, "none"
    )
    _check_components(
        environ, "OTEL_PYTHON_ID_GENERATOR", "opentelemetry_id_generator", entry_point_names
    )


def _exporters(
    environ: Mapping[str, str], signal: str, entry_point_names: EntryPointNames
) -> list[str]:
    name = f"OTEL_{signal.upper()}_EXPORTER"
    raw = environ.get(name)
    if raw is None:
        return ["otlp"]
    if not raw or raw.strip().lower() == "none":
        return []
    return _check_components(
        environ, name, f"opentelemetry_{signal}_exporter", entry_point_names, "none"
    )


def _check_components(
    environ: Mapping[str, str],
    name: str,
    group: str,
    entry_point_names: EntryPointNames,
    alone: str | None = None,
) -> list[str]:
    """A comma-separated list of installed component names (``alone``: or that word alone)."""
    raw = environ.get(name)
    if not raw:
        return []
    wanted = [part.strip() for part in raw.split(",")]
    if alone is not None and alone in (part.lower() for part in wanted):
        return []
    installed = entry_point_names(group)
    if any(part not in installed for part in wanted):
        choices = ", ".join(sorted(installed)) or "none installed"
        accepted = f"comma-separated names of installed components ({choices})"
        raise ConfigError(name, raw, f"{alone} or {accepted}" if alone else accepted)
    return wanted


def _check_otlp_exporter(environ: Mapping[str, str], signal: str, exporter: str) -> None:
    """The protocol, timeout and compression variables the signal's OTLP exporter reads."""
    if exporter not in ("otlp", "otlp_proto_grpc", "otlp_proto_http"):
        return
    general = "OTEL_EXPORTER_OTLP_"
    specific = f"OTEL_EXPORTER_OTLP_{signal.upper()}_"
    protocol = "grpc" if exporter == "otlp_proto_grpc" else "http/protobuf"
    if exporter == "otlp":
        name = specific + "PROTOCOL" if environ.get(specific + "PROTOCOL") else general + "PROTOCOL"
        raw = environ.get(name, "")
        protocol = raw.strip() or "grpc"
        if protocol not in OTLP_PROTOCOLS:
            raise ConfigError(name, raw, "grpc or http/protobuf")
    for name in (specific + "TIMEOUT", general + "TIMEOUT"):
        _check_seconds(environ, name)
    if protocol == "grpc":
        # The gRPC exporter takes gzip or nothing: "none" and "" make it raise.
        name = specific + "COMPRESSION"
        if name not in environ:
            name = general + "COMPRESSION"
        compression = environ.get(name)
        if compression is not None and compression.strip().lower() != "gzip":
            raise ConfigError(
                name,
                compression,
                "gzip, the one value of the gRPC exporter (unset: no compression)",
            )
        return
    for name in (specific + "COMPRESSION", general + "COMPRESSION"):
        compression = environ.get(name)
        if compression and compression.strip().lower() not in ("gzip", "deflate", "none"):
            raise ConfigError(name, compression, "gzip, deflate or none")


def _check_seconds(environ: Mapping[str, str], name: str) -> None:
    raw = environ.get(name)
    if raw is None:
        return
    accepted = "a number of seconds greater than 0, such as 10 or 2.5 (the Python exporters "
    accepted += "read seconds)"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, accepted) from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(name, raw, accepted)


def _check_whole_number(
    environ: Mapping[str, str], name: str, minimum: int, allow_empty: bool = False
) -> int | None:
    raw = environ.get(name)
    if raw is None or (allow_empty and not raw.strip()):
        return None
    accepted = f"a whole number, {minimum} or more"
    if not re.fullmatch(r"\s*[+-]?\d+\s*", raw):
        raise ConfigError(name, raw, accepted)
    value = int(raw)
    if value < minimum:
        raise ConfigError(name, raw, accepted)
    return value


def _check_batch_processor(environ: Mapping[str, str], prefix: str) -> None:
    """The batch processors' four integers, and that a batch fits the queue."""
    _check_whole_number(environ, prefix + "SCHEDULE_DELAY", minimum=1)
    _check_whole_number(environ, prefix + "EXPORT_TIMEOUT", minimum=0)
    queue = _check_whole_number(environ, prefix + "MAX_QUEUE_SIZE", minimum=1)
    batch = _check_whole_number(environ, prefix + "MAX_EXPORT_BATCH_SIZE", minimum=1)
    if batch is not None and batch > (queue or DEFAULT_MAX_QUEUE_SIZE):
        raise ConfigError(
            prefix + "MAX_EXPORT_BATCH_SIZE",
            environ[prefix + "MAX_EXPORT_BATCH_SIZE"],
            f"a whole number from 1 to {prefix}MAX_QUEUE_SIZE ({queue or DEFAULT_MAX_QUEUE_SIZE})",
        )
    if queue is not None and batch is None and queue < DEFAULT_MAX_EXPORT_BATCH_SIZE:
        raise ConfigError(
            prefix + "MAX_QUEUE_SIZE",
            environ[prefix + "MAX_QUEUE_SIZE"],
            f"a whole number of at least {DEFAULT_MAX_EXPORT_BATCH_SIZE} (the SDK's batch size), "
            f"or a smaller {prefix}MAX_EXPORT_BATCH_SIZE beside it",
        )


def _check_sampler(environ: Mapping[str, str], entry_point_names: EntryPointNames) -> None:
    """The SDK samples everything, with a warning, when it cannot build the sampler asked for."""
    raw = environ.get("OTEL_TRACES_SAMPLER")
    if not raw:
        return
    installed = entry_point_names("opentelemetry_traces_sampler")
    if raw.strip() not in installed:
        raise ConfigError(
            "OTEL_TRACES_SAMPLER", raw, f"one of {', '.join(sorted(installed)) or 'none installed'}"
        )
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG")
    if raw in RATIO_SAMPLERS and arg is not None:
        accepted = f"a sampling ratio from 0 to 1, such as 0.25, for {raw}"
        try:
            ratio = float(arg)
        except ValueError:
            raise ConfigError("OTEL_TRACES_SAMPLER_ARG", arg, accepted) from None
        if not 0 <= ratio <= 1:
            raise ConfigError("OTEL_TRACES_SAMPLER_ARG", arg, accepted)


def otel_environ_or_exit(environ: Mapping[str, str] = os.environ) -> None:
    """Check the ``OTEL_*`` variables; a bad value stops start-up with one line (exit code 2)."""
    try:
        check_otel_environ(environ)
    except ConfigError as error:
        print(f"gunicorn-django-wide-events: {error}", file=sys.stderr, flush=True)  # noqa: T201
        # Not SystemExit: this may run inside sitecustomize (see config_from_environ_or_exit).
        os._exit(2)


# Flags of opentelemetry-instrument for variables named OTEL_PYTHON_*: the flag drops PYTHON_.
_PYTHON_VARIABLES: Final = ("OTEL_PYTHON_ID_GENERATOR",)


def instrument_command_line(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """What ``opentelemetry-instrument`` will do: the variables its flags set (``--traces_exporter
    X`` sets ``OTEL_TRACES_EXPORTER``), and the command it runs. Every flag takes a value."""
    variables: dict[str, str] = {}
    args = list(argv[1:])
    while args and args[0].startswith("--") and args[0] != "--":
        flag, has_value, value = args.pop(0)[2:].partition("=")
        if not has_value:
            if not args:
                break
            value = args.pop(0)
        name = f"OTEL_{flag.upper()}"
        python_name = name.replace("OTEL_", "OTEL_PYTHON_", 1)
        variables[python_name if python_name in _PYTHON_VARIABLES else name] = value
    return variables, args


def runs_gunicorn(command: Sequence[str]) -> bool:
    if not command:
        return False
    program = os.path.basename(command[0])
    if program.startswith("gunicorn"):
        return True
    return program.startswith("python") and list(command[1:3]) == ["-m", "gunicorn"]


def check_launch(argv: Sequence[str]) -> None:
    """Under ``opentelemetry-instrument``, before it runs gunicorn: stop on a bad ``OTEL_*``."""
    try:
        variables, command = instrument_command_line(argv)
        if not runs_gunicorn(command):
            return  # another program: its OpenTelemetry set-up is none of this package's business
        environ = {**os.environ, **variables}
    except Exception:  # never break opentelemetry-instrument itself
        return
    otel_environ_or_exit(environ)
