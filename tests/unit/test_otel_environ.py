"""_otel_environ: the OTEL_* values the SDK would fail on, refused before it reads them."""

from __future__ import annotations

import pytest

from gunicorn_django_wide_events import _launch_check
from gunicorn_django_wide_events._config import ConfigError
from gunicorn_django_wide_events._otel_environ import (
    check_otel_environ,
    instrument_command_line,
    runs_gunicorn,
)

INSTALLED = {
    "opentelemetry_traces_exporter": frozenset({"otlp", "otlp_proto_grpc", "otlp_proto_http"}),
    "opentelemetry_metrics_exporter": frozenset({"otlp"}),
    "opentelemetry_logs_exporter": frozenset({"otlp"}),
    "opentelemetry_traces_sampler": frozenset({"always_on", "traceidratio"}),
    "opentelemetry_propagator": frozenset({"tracecontext", "baggage"}),
    "opentelemetry_id_generator": frozenset({"random"}),
}


def check(**environ: str) -> None:
    check_otel_environ(environ, INSTALLED.__getitem__)


def refused(**environ: str) -> str:
    with pytest.raises(ConfigError) as raised:
        check(**environ)
    return str(raised.value)


def test_defaults_and_valid_values_pass() -> None:
    check()
    check(
        OTEL_TRACES_EXPORTER="otlp, otlp_proto_http",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="",
        OTEL_EXPORTER_OTLP_PROTOCOL=" http/protobuf ",
        OTEL_EXPORTER_OTLP_COMPRESSION="deflate",
        OTEL_EXPORTER_OTLP_TIMEOUT="2.5",
        OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT="",
        OTEL_BSP_MAX_QUEUE_SIZE="100",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="100",
        OTEL_TRACES_SAMPLER="traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.1",
        OTEL_PROPAGATORS="tracecontext,none",
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "GRPC"}, "expected grpc or http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "TRACES_PROTOCOL='http/json'"),
        ({"OTEL_TRACES_EXPORTER": "OTLP"}, "otlp, otlp_proto_grpc, otlp_proto_http"),
        ({"OTEL_LOGS_EXPORTER": "otlp,bogus"}, "OTEL_LOGS_EXPORTER='otlp,bogus'"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "abc"}, "seconds greater than 0"),
        ({"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "-1"}, "METRICS_TIMEOUT='-1'"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "none"}, "gzip, the one value of the gRPC"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": ""}, "gzip, the one value of the gRPC"),
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_COMPRESSION": "br",
            },
            "expected gzip, deflate or none",
        ),
        ({"OTEL_SPAN_LINK_COUNT_LIMIT": "-3"}, "0 or more"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "0"}, "1 or more"),
        ({"OTEL_BLRP_EXPORT_TIMEOUT": "soon"}, "OTEL_BLRP_EXPORT_TIMEOUT"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "5000"}, "from 1 to OTEL_BSP_MAX_QUEUE_SIZE (2048)"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, "at least 512"),
        ({"OTEL_TRACES_SAMPLER": "always-on"}, "one of always_on, traceidratio"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "10%"},
            "a sampling ratio from 0 to 1",
        ),
        ({"OTEL_PROPAGATORS": "b3"}, "none or comma-separated names"),
        ({"OTEL_PYTHON_ID_GENERATOR": "xray"}, "(random)"),
    ],
)
def test_values_that_would_lose_the_events_are_refused(
    environ: dict[str, str], message: str
) -> None:
    assert message in refused(**environ)


def test_an_unused_exporter_s_variables_are_not_its_business() -> None:
    """With the gRPC exporter out of the way, its compression rule does not apply."""
    check(OTEL_TRACES_EXPORTER="otlp_proto_http", OTEL_METRICS_EXPORTER="none",
          OTEL_LOGS_EXPORTER="none", OTEL_EXPORTER_OTLP_COMPRESSION="none")  # fmt: skip


def test_the_command_line_of_opentelemetry_instrument() -> None:
    """Its flags become variables (--id_generator is OTEL_PYTHON_ID_GENERATOR); then the command."""
    variables, command = instrument_command_line(
        ["opentelemetry-instrument", "--traces_exporter", "console", "--id_generator=random",
         "gunicorn", "--timeout", "3", "app.wsgi"]
    )  # fmt: skip

    assert variables == {"OTEL_TRACES_EXPORTER": "console", "OTEL_PYTHON_ID_GENERATOR": "random"}
    assert command == ["gunicorn", "--timeout", "3", "app.wsgi"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["/venv/bin/gunicorn", "app.wsgi"], True),
        (["python3.12", "-m", "gunicorn", "app.wsgi"], True),
        (["python", "manage.py", "migrate"], False),
        ([], False),
    ],
)
def test_only_gunicorn_is_stopped(command: list[str], expected: bool) -> None:
    assert runs_gunicorn(command) is expected


def test_the_launch_check_adds_no_flag_to_opentelemetry_instrument() -> None:
    """opentelemetry-instrument makes a flag of every OTEL_* name in the module it loads."""
    assert not [name for name in dir(_launch_check) if name.startswith("OTEL_")]
