"""Export across fork, start-up and shutdown: the master hands export to its workers.

A missing or slow collector costs requests nothing and never hangs a stopping worker; the
package works with ``--preload``, from a gunicorn config file instead of
``opentelemetry-instrument``, and refuses to start on a bad setting.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (
    StartGunicorn,
    free_port,
    run_gunicorn_until_it_exits,
    the_spool_exporter_of,
)
from tests.integration.events import send, the_event
from tests.integration.otlp_receiver import OtlpReceiver

PROTOCOLS = ["grpc", "http/protobuf"]
FORK_WARNING = "is multi-threaded, use of fork()"
EXPORT_FAILURE = re.compile(r"(?i)(failed to export|transient error|exception while exporting)")


def export_failure_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if EXPORT_FAILURE.search(line)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dead_collector_costs_requests_nothing_and_is_logged_once(
    gunicorn_server: StartGunicorn, protocol: str
) -> None:
    """With nothing listening at the endpoint, requests succeed, one line per worker says so."""
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    server = gunicorn_server(
        protocol=protocol,
        workers=2,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": dead_endpoint,
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
            "WIDE_EVENTS_SHUTDOWN_TIMEOUT": "2",
        },
    )
    # Keep requests coming for a few export rounds (one round per 50 ms batch at most).
    statuses = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline or len(statuses) < 20:
        statuses.append(server.get("/ok/")[0])
    assert set(statuses) == {200}
    assert server.stop() == 0

    failures = export_failure_lines(server.log_text())
    assert 1 <= len(failures) <= 2, failures  # at most one per worker process


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stopping_worker_waits_for_a_slow_collector_only_so_long(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, protocol: str
) -> None:
    """Without a spool, a worker's last flush gives up after WIDE_EVENTS_SHUTDOWN_TIMEOUT, not
    the export timeout."""
    server = gunicorn_server(
        protocol=protocol,
        env={
            "WIDE_EVENTS_SHUTDOWN_TIMEOUT": "1",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "60",
            "WIDE_EVENTS_SPOOL_SIZE": "0",
        },
    )
    receiver.set_delay(60)
    assert server.get("/ok/")[0] == 200

    started = time.monotonic()
    assert server.stop(timeout=9) == 0  # gunicorn's graceful timeout is 10 s here
    assert time.monotonic() - started < 9
    assert "was dropped" in server.log_text()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_slow_collector_holds_up_neither_gunicorns_exit_nor_the_spools_exporter_long(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, protocol: str
) -> None:
    """With the spool, workers send no spans: they stop at once; gunicorn exits; the spools'
    exporter, stuck on the collector, ends within WIDE_EVENTS_EXIT_FLUSH_TIMEOUT."""
    server = gunicorn_server(
        protocol=protocol,
        env={"OTEL_EXPORTER_OTLP_TIMEOUT": "60", "WIDE_EVENTS_EXIT_FLUSH_TIMEOUT": "2"},
    )
    receiver.set_delay(60)
    server.wait_for_workers(1)
    exporter = the_spool_exporter_of(server.pid)
    assert server.get("/ok/")[0] == 200

    started = time.monotonic()
    assert server.stop(timeout=9) == 0
    assert time.monotonic() - started < 5
    exporter.wait(timeout=2 + 3)  # its bound, and a margin
    assert "was dropped" not in server.log_text()  # the worker had nothing to flush


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_preload_app(gunicorn_server: StartGunicorn, receiver: OtlpReceiver, protocol: str) -> None:
    """With --preload (Django loaded in the master) every request is still one event."""
    server = gunicorn_server(protocol=protocol, workers=2, extra_args=["--preload"])
    exchange = send(server, "/items/5/")
    event = receiver.wait_for_events("/items/5/")[0]

    assert exchange.status == 200
    assert event.attributes["http.route"] == "items/<int:item_id>/"
    assert FORK_WARNING not in server.log_text()


def test_gunicorn_config_file_instead_of_the_wrapper(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """One import line in gunicorn.conf.py sets everything up and keeps the user's own hooks."""
    config_source = (
        "import gunicorn_django_wide_events.auto  # noqa: F401\n"
        "\n"
        "def post_fork(server, worker):\n"
        "    server.log.info('user post_fork ran')\n"
        "\n"
        "def post_worker_init(worker):\n"
        "    worker.log.info('user post_worker_init ran')\n"
        "\n"
        "def worker_exit(server, worker):\n"
        "    server.log.info('user worker_exit ran')\n"
    )
    server = gunicorn_server(
        protocol="http/protobuf", launcher="config", config_source=config_source
    )
    exchange = send(server, "/items/6/")
    event = the_event(server, receiver, exchange)
    assert server.stop() == 0

    assert event.attributes["wide_event.type"] == "request"
    assert event.attributes["http.route"] == "items/<int:item_id>/"
    log = server.log_text()
    for hook in ("post_fork", "post_worker_init", "worker_exit"):
        assert f"user {hook} ran" in log


# The README's "Settings from code" example, with values a test can see on the event.
CONFIG_IN_CODE = """\
import dataclasses

import gunicorn_django_wide_events.auto  # noqa: F401
from gunicorn_django_wide_events import Config, WideEventsInstrumentor

WideEventsInstrumentor().instrument(
    config=dataclasses.replace(Config.from_environ(), sql_max_length=12, capture_user_id=True)
)
"""


@pytest.mark.parametrize("launcher", ["instrument", "config"])
def test_settings_given_in_code_win_over_the_environment(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver, launcher: str
) -> None:
    """instrument(config=...) in gunicorn.conf.py takes effect, opentelemetry-instrument or not."""
    server = gunicorn_server(
        launcher=launcher,
        config_source=CONFIG_IN_CODE,
        env={"WIDE_EVENTS_SQL_MAX_LENGTH": "4000", "WIDE_EVENTS_CAPTURE_USER_ID": "false"},
    )
    event = the_event(server, receiver, send(server, "/sql/", headers={"X-Test-User": "7"}))
    assert server.stop() == 0

    assert len(str(event.attributes["django.db.slowest_query"])) == 12
    assert event.attributes["user.id"] == "7"
    assert "Attempting to instrument while already instrumented" not in server.log_text()


@pytest.mark.parametrize("launcher", ["instrument", "config"])
def test_bad_setting_stops_start_up_with_one_clear_line(
    otlp_receiver: OtlpReceiver, tmp_path: Path, launcher: str
) -> None:
    """An invalid value stops gunicorn before it serves, naming variable, value and choices."""
    result = run_gunicorn_until_it_exits(
        otlp_receiver, tmp_path, launcher, {"WIDE_EVENTS_CAPTURE_USER_ID": "maybe"}
    )

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert (
        "gunicorn-django-wide-events: WIDE_EVENTS_CAPTURE_USER_ID='maybe' is not valid: "
        "expected one of true/false, yes/no, on/off, 1/0"
    ) in output
    assert "Traceback" not in output
    assert "Booting worker" not in output


def test_logs_are_exported_by_workers_and_no_thread_crosses_a_fork(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """With every signal exported (the distro's defaults) the master forks with no thread."""
    server = gunicorn_server(
        protocol="grpc",
        workers=2,
        env={
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
            "OTEL_BLRP_SCHEDULE_DELAY": "50",
        },
    )
    assert receiver.logs_requests == 0  # the master hands over an empty log queue
    # A log record made in a worker, exported by that worker.
    assert send(server, "/log/").status == 200
    receiver.wait_for_events("/log/")
    deadline = time.monotonic() + 30
    while receiver.logs_requests == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.logs_requests > 0
    assert FORK_WARNING not in server.log_text()
