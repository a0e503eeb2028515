"""A bad standard ``OTEL_*`` value stops start-up with one line, like a bad ``WIDE_EVENTS_*`` one.

Left to the SDK, such a value makes its configuration raise inside ``opentelemetry-instrument``'s
``sitecustomize``: a traceback, no instrumentor loaded, and a gunicorn that serves without a
single event.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import (
    GunicornServer,
    StartGunicorn,
    run_gunicorn_until_it_exits,
)
from tests.integration.events import send, the_event
from tests.integration.otlp_receiver import OtlpReceiver

BAD_VALUES = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": ("bogus", "expected grpc or http/protobuf"),
    "OTEL_TRACES_EXPORTER": ("bogus", "expected none or comma-separated names of installed"),
    "OTEL_EXPORTER_OTLP_TIMEOUT": ("abc", "expected a number of seconds greater than 0"),
    "OTEL_EXPORTER_OTLP_COMPRESSION": ("none", "expected gzip, the one value of the gRPC"),
    "OTEL_TRACES_SAMPLER": ("always-on", "expected one of always_off, always_on,"),
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": ("lots", "expected a whole number, 0 or more"),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ("5000", "expected a whole number from 1 to"),
    "OTEL_PROPAGATORS": ("w3c", "expected none or comma-separated names of installed"),
}


def assert_stopped_with_one_line(result: subprocess.CompletedProcess[str], line: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert line in output
    assert output.count("gunicorn-django-wide-events:") == 1
    assert "Traceback" not in output
    assert "Booting worker" not in output


@pytest.mark.parametrize(
    ("variable", "launcher"),
    [
        (variable, launcher)
        for variable in sorted(BAD_VALUES)
        for launcher in ("instrument", "config")
        # opentelemetry-instrument fails on this one itself: see the test below.
        if (variable, launcher) != ("OTEL_PROPAGATORS", "instrument")
    ],
)
def test_a_bad_otel_value_stops_start_up_with_one_clear_line(
    otlp_receiver: OtlpReceiver, tmp_path: Path, launcher: str, variable: str
) -> None:
    """Named: the variable, its value, what is accepted; gunicorn never serves."""
    value, accepted = BAD_VALUES[variable]
    result = run_gunicorn_until_it_exits(otlp_receiver, tmp_path, launcher, {variable: value})

    assert_stopped_with_one_line(
        result, f"gunicorn-django-wide-events: {variable}={value!r} is not valid: {accepted}"
    )


def test_opentelemetry_instrument_itself_stops_on_an_unknown_propagator(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """It loads the propagators while it imports, before anything of this package runs: its
    traceback, not our line, but gunicorn does not serve without events either."""
    result = run_gunicorn_until_it_exits(
        otlp_receiver, tmp_path, "instrument", {"OTEL_PROPAGATORS": "w3c"}
    )

    assert result.returncode != 0
    assert "Propagator w3c not found" in result.stderr
    assert "Booting worker" not in result.stdout + result.stderr


def test_a_bad_value_given_as_a_flag_of_opentelemetry_instrument_stops_it_too(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    result = run_gunicorn_until_it_exits(
        otlp_receiver,
        tmp_path,
        "instrument",
        {},
        instrument_flags=("--exporter_otlp_protocol", "bogus"),
    )

    assert_stopped_with_one_line(
        result, "OTEL_EXPORTER_OTLP_PROTOCOL='bogus' is not valid: expected grpc or http/protobuf"
    )


@pytest.fixture
def valid_values_server(gunicorn_server: StartGunicorn) -> GunicornServer:
    return gunicorn_server(
        env={
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "1",
            "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "2000",
            "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
            "OTEL_PROPAGATORS": "tracecontext, baggage",
        }
    )


def test_valid_values_are_not_refused(
    valid_values_server: GunicornServer, receiver: OtlpReceiver
) -> None:
    event = the_event(valid_values_server, receiver, send(valid_values_server, "/ok/"))

    assert event.attributes["wide_event.type"] == "request"
