"""Logs and the event: the event's ids on gunicorn's access log line and on the app's log
records, and what the request logged counted on its event.

gunicorn runs with an ``--access-logformat`` that prints the environ's ``wide_events.*`` ids,
the test app formats its own records with the ``otel*`` fields (``djangoapp/settings.py``), and
both land in the gunicorn log the launcher writes, which the tests read.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.djangoapp.views import LOGGED_CARD_NUMBER, LOGGED_ERROR_TEMPLATE
from tests.integration.events import (
    Exchange,
    barrier,
    event_from_port,
    send,
    send_raw,
    server_spans_of,
    the_event,
    wait_for_trace,
)
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedLogRecord, ReceivedSpan
from tests.waiting import wait_until

HEX32 = "[0-9a-f]{32}"
HEX16 = "[0-9a-f]{16}"
ACCESS_LOG_FORMAT = (
    'access-line "%(r)s" %(s)s client_port=%({remote_port}e)s '
    "trace_id=%({wide_events.trace_id}e)s span_id=%({wide_events.span_id}e)s"
)
LOG_FIELDS = (
    "wide_event.log.warning_count",
    "wide_event.log.error_count",
    "wide_event.log.first_error",
)
LOG_TIMEOUT = 30.0
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_access_log_formats() -> list[str]:
    """The ``--access-logformat`` values of the README's "Logs and the event" examples."""
    section = README.read_text(encoding="utf-8").split("## Logs and the event", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"--access-logformat(?: \\\n)?\s+'([^']+)'", section)


def access_lines(server: GunicornServer) -> list[dict[str, str]]:
    """Every access log line so far, as its fields."""
    pattern = re.compile(
        r'^access-line "(?P<request>[^"]*)" (?P<status>\d+) client_port=(?P<client_port>\S+) '
        r"trace_id=(?P<trace_id>\S+) span_id=(?P<span_id>\S+)$",
        re.MULTILINE,
    )
    return [match.groupdict() for match in pattern.finditer(server.log_text())]


def wait_for_log(server: GunicornServer, condition: Callable[[], bool], what: str) -> None:
    """``wait_until`` on the gunicorn log, which the failure shows as it is by then."""
    try:
        wait_until(condition, timeout=LOG_TIMEOUT, what=what)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}\n--- log ---\n{server.log_text()}") from None


def wait_for_access_lines(
    server: GunicornServer, request_line: str, count: int = 1
) -> list[dict[str, str]]:
    """The access log lines of ``request_line``, once there are ``count`` of them."""

    def lines() -> list[dict[str, str]]:
        return [line for line in access_lines(server) if line["request"] == request_line]

    wait_for_log(
        server, lambda: len(lines()) >= count, f"{count} access line(s) of {request_line!r}"
    )
    return lines()


def log_fields_of(event: ReceivedSpan) -> dict[str, object]:
    return {
        key: value for key, value in event.attributes.items() if key.startswith("wide_event.log.")
    }


@pytest.fixture(scope="module", params=["sync", "gthread", "gevent"])
def server(request: pytest.FixtureRequest, module_gunicorn_server: StartGunicorn) -> GunicornServer:
    worker_class = request.param
    return module_gunicorn_server(
        worker_class=worker_class,
        threads=4 if worker_class == "gthread" else 1,
        extra_args=("--access-logformat", ACCESS_LOG_FORMAT),
    )


# -- gunicorn's access log ----------------------------------------------------------------


def test_access_log_line_carries_the_ids_of_its_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """``%({wide_events.trace_id}e)s`` and ``span_id``: exactly the event's, in lowercase hex."""
    path = f"/ok/?probe={time.monotonic_ns()}"
    exchange = send(server, path)
    event = the_event(server, receiver, exchange)

    (line,) = wait_for_access_lines(server, f"GET {path} HTTP/1.1")
    assert re.fullmatch(HEX32, line["trace_id"])
    assert re.fullmatch(HEX16, line["span_id"])
    assert (line["trace_id"], line["span_id"]) == (event.trace_id, event.span_id)
    assert event.trace_id == exchange.trace_id  # the caller's trace, the event's own span


def test_readme_access_log_formats_print_the_event_ids(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """The README's plain and JSON formats, run as they are: the event's ids, valid JSON."""
    plain, as_json = readme_access_log_formats()
    server = gunicorn_server(
        extra_args=("--access-logformat", f"plain-line {plain}\n{as_json}"),
    )
    event = the_event(server, receiver, send(server, "/items/7/"))

    ids = f"trace_id={event.trace_id} span_id={event.span_id}"
    wait_for_log(server, lambda: ids in server.log_text(), f"a line with {ids}")
    lines = server.log_text().splitlines()
    (plain_line,) = [line for line in lines if line.startswith("plain-line ") and ids in line]
    assert plain_line.endswith(f'"GET /items/7/ HTTP/1.1" 200 {ids}')
    (json_line,) = [
        json.loads(line)
        for line in lines
        if line.startswith('{"remote"') and event.trace_id in line
    ]
    assert json_line["trace_id"] == event.trace_id
    assert json_line["span_id"] == event.span_id
    assert (json_line["method"], json_line["status"]) == ("GET", 200)


def test_answer_gunicorn_writes_itself_carries_the_ids_of_its_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Headers gunicorn refuses (two Content-Lengths): its own access line, the event's ids."""
    answer, port = send_raw(
        server,
        b"GET /ok/?refused=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n",
    )
    event = event_from_port(receiver, port)
    barrier(server, receiver)

    assert answer.startswith(b"HTTP/1.1 400")
    assert event.attributes["error.type"] == "gunicorn.http.errors.InvalidHeader"
    (line,) = [line for line in access_lines(server) if line["client_port"] == str(port)]
    assert line["status"] == "400"
    assert (line["trace_id"], line["span_id"]) == (event.trace_id, event.span_id)
    # gunicorn's own "Invalid request" warning, from its error logger (which does not
    # propagate to the root logger), was logged while it answered this request (at WARNING
    # as gunicorn 27 logs it; older releases log it at DEBUG, which is not counted).
    assert event.attributes["wide_event.log.warning_count"] == 1


TOO_MANY_HEADERS = b"".join(b"X-Filler-%d: %d\r\n" % (index, index) for index in range(150))


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /ok/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + TOO_MANY_HEADERS + b"\r\n", b"431"),
    ],
    ids=["request-line", "header-limit"],
)
def test_request_gunicorn_cannot_parse_gets_no_access_line(
    server: GunicornServer, receiver: OtlpReceiver, raw: bytes, status: bytes
) -> None:
    """gunicorn writes no access line for a request it could not parse; the event is sent."""
    answer, port = send_raw(server, raw)
    event = event_from_port(receiver, port)
    barrier(server, receiver)

    assert answer.startswith(b"HTTP/1.1 " + status)
    assert re.fullmatch(HEX32, event.trace_id)
    assert not [line for line in access_lines(server) if line["client_port"] == str(port)]


def test_app_failure_gunicorn_answers_carries_the_ids_of_the_app_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A body failing before its first byte: both of gunicorn's lines name the app's event."""
    exchange = send(server, "/stream-raise-at-once/")
    event = the_event(server, receiver, exchange)

    assert exchange.status == 500
    assert event.attributes["exception.message"] == "before the first chunk"
    # The request's own line (its environ), then handle_error's line for the 500 it sends.
    lines = wait_for_access_lines(server, "GET /stream-raise-at-once/ HTTP/1.1", count=2)
    assert {(line["trace_id"], line["span_id"]) for line in lines} == {
        (event.trace_id, event.span_id)
    }


# -- what the request logged --------------------------------------------------------------


def test_warnings_and_errors_are_counted_with_the_template_not_the_argument(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Two warnings and an error with an argument: counts 2 and 1, the error's template."""
    event = the_event(server, receiver, send(server, "/log-levels/"))

    assert log_fields_of(event) == {
        "wide_event.log.warning_count": 2,
        "wide_event.log.error_count": 1,
        "wide_event.log.first_error": f"djangoapp.payments: {LOGGED_ERROR_TEMPLATE}",
    }
    assert LOGGED_CARD_NUMBER not in repr(sorted(event.attributes.items()))


def test_quiet_request_carries_no_log_fields(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """A request that logs nothing (worth counting) has none of the fields, not zeros."""
    event = the_event(server, receiver, send(server, "/ok/"))

    assert log_fields_of(event) == {}


def test_errors_of_a_logger_that_does_not_propagate_are_counted(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """``django.request`` logs the 500 through the ``django`` logger's own handler only."""
    event = the_event(server, receiver, send(server, "/raise/"))

    assert event.attributes["wide_event.log.error_count"] == 1
    assert event.attributes["wide_event.log.first_error"].startswith("django.request: ")
    assert "wide_event.log.warning_count" not in event.attributes


def test_records_of_other_threads_are_not_counted(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """Errors from threads of the view (one in a copy of the request's context) do not count."""
    event = the_event(server, receiver, send(server, "/log-in-threads/"))

    assert log_fields_of(event) == {"wide_event.log.warning_count": 1}


def test_records_carry_the_event_ids_for_formatters(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """``%(otelTraceID)s`` and friends in the app's log format: the event's ids."""
    event = the_event(server, receiver, send(server, "/log-levels/"))

    pattern = (
        rf"djangoapp-log (?P<level>[A-Z]+) trace_id={event.trace_id} span_id={event.span_id} "
        r"sampled=True service=djangoapp-tests (?P<message>.*)"
    )
    found = re.findall(pattern, server.log_text())
    assert found == [
        ("INFO", "asking the payment provider"),
        ("WARNING", "the payment provider is slow"),
        ("WARNING", "retrying the payment provider"),
        ("ERROR", LOGGED_ERROR_TEMPLATE % LOGGED_CARD_NUMBER),
    ]
    assert "--- Logging error ---" not in server.log_text()


def test_concurrent_requests_of_one_worker_count_only_their_own_records(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """gthread and gevent: a quiet request in flight while others log on the same worker (in
    other threads, or other greenlets of its thread) counts nothing."""
    if "sync" in server.command:
        pytest.skip("one request at a time in a sync worker")
    slow: list[Exchange] = []
    in_flight = threading.Thread(target=lambda: slow.append(send(server, "/slow/?seconds=1")))
    in_flight.start()
    try:
        loud = [send(server, "/log-levels/") for _ in range(3)]
    finally:
        in_flight.join(LOG_TIMEOUT)
    (quiet,) = slow

    for exchange in loud:
        loud_event = the_event(server, receiver, exchange)
        assert loud_event.attributes["wide_event.log.warning_count"] == 2
    assert log_fields_of(the_event(server, receiver, quiet)) == {}


# -- timeouts and exported log records ----------------------------------------------------


def test_timeout_event_carries_what_was_logged_before_the_deadline(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """gthread, a 1 s deadline: the records before it are on the event, none after."""
    server = gunicorn_server(
        worker_class="gthread", threads=2, env={"WIDE_EVENTS_REQUEST_TIMEOUT": "1"}
    )
    exchange = send(server, "/log-then-sleep/?seconds=3")
    assert exchange.status == 200  # gthread: the request goes on after its timeout event
    wait_for_trace(receiver, exchange.trace_id)
    barrier(server, receiver)
    (event,) = server_spans_of(receiver, exchange.trace_id)

    assert event.attributes["wide_event.type"] == "timeout"
    assert log_fields_of(event) == {
        "wide_event.log.warning_count": 1,
        "wide_event.log.error_count": 1,
        "wide_event.log.first_error": "djangoapp: before the deadline, for order %s",
    }


def test_exported_log_records_carry_the_trace_context_of_their_event_from_every_worker(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    """OTLP logs from the SDK's logging handler: the event's trace and span, in each worker."""
    server = gunicorn_server(
        workers=2,
        env={
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
            "OTEL_BLRP_SCHEDULE_DELAY": "50",
        },
    )
    server.wait_for_workers(2)
    # Two requests at once: two sync workers, so one each.
    exchanges: list[Exchange] = []
    senders = [
        threading.Thread(
            target=lambda: exchanges.append(send(server, "/log-then-sleep/?seconds=0.5"))
        )
        for _ in range(2)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(LOG_TIMEOUT)
    assert len(exchanges) == 2

    events = []
    for exchange in exchanges:
        wait_for_trace(receiver, exchange.trace_id)
        (event,) = server_spans_of(receiver, exchange.trace_id)
        events.append(event)
    assert len({event.resource["process.pid"] for event in events}) == 2

    def records_of(
        event: ReceivedSpan, records: list[ReceivedLogRecord]
    ) -> list[ReceivedLogRecord]:
        return [record for record in records if record.trace_id == event.trace_id]

    for event in events:
        records = records_of(
            event,
            receiver.wait_for_log_records(
                lambda records, event=event: len(records_of(event, records)) == 4,
                timeout=LOG_TIMEOUT,
            ),
        )
        assert {record.span_id for record in records} == {event.span_id}
        assert {record.attributes["otelSpanID"] for record in records} == {event.span_id}
        assert {record.resource["process.pid"] for record in records} == {
            event.resource["process.pid"]
        }
        assert sorted(record.severity_text for record in records) == [
            "ERROR",
            "ERROR",
            "WARN",
            "WARN",
        ]
