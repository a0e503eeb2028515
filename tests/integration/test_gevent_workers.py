"""gevent workers: no watchdog, yet a request that blocks the worker into gunicorn's timeout gets
its ``timeout`` event, from the master, and the start-up message says just that."""

from __future__ import annotations

import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.otlp_receiver import OtlpReceiver
from tests.integration.test_timeout_events import GUNICORN_TIMEOUT, stuck_request, wait_for_log

pytest.importorskip("gevent")


@pytest.fixture
def server(gunicorn_server: StartGunicorn) -> GunicornServer:
    return gunicorn_server(worker_class="gevent", timeout=GUNICORN_TIMEOUT)


def test_the_start_up_message_says_what_is_reported(server: GunicornServer) -> None:
    line = wait_for_log(server, r"gunicorn-django-wide-events: GeventWorker workers .*").group(0)

    assert "have no watchdog" in line
    assert "gets its timeout event from the master" in line
    assert "get no timeout events" not in server.log_text()


def test_a_request_blocking_the_worker_gets_a_timeout_event_from_the_master(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """C code holding the GIL stops gevent's loop (and gunicorn's heartbeat): gunicorn kills the
    worker for its timeout, and the master sends the event from the board."""
    server.wait_for_workers(1)
    _, event = stuck_request(server, receiver, "/hold-gil/")

    assert event.attributes["wide_event.type"] == "timeout"
    assert event.attributes["wide_event.reported_by"] == "master"
    assert event.attributes["http.request.method"] == "GET"
    assert "code.stacktrace" not in event.attributes
