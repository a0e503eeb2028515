"""``gunicorn.monitor.sample_age_ms`` is best effort as a bound, but always true as an age.

The monitor thread runs late on a busy machine, so the README promises no bound; what it
promises is that the field says how old the figures are. Between two samples it must grow with
the clock, whatever the interval.
"""

from __future__ import annotations

import time

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.integration.test_monitor_and_board import event_of

AGE = "gunicorn.monitor.sample_age_ms"
INTERVAL_S = 4.0
APART_S = 1.5


def test_the_sample_age_grows_with_the_clock_between_two_samples(
    gunicorn_server: StartGunicorn, receiver: OtlpReceiver
) -> None:
    server = gunicorn_server(env={"WIDE_EVENTS_MONITOR_INTERVAL": str(INTERVAL_S)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        first = event_of(server, receiver)
        if AGE not in first.attributes or first.attributes[AGE] > 1000:
            continue  # no sample yet, or too late in this one: start with a fresh one
        second = later_event(server, receiver, first)
        if second.attributes[AGE] < first.attributes[AGE]:
            continue  # a new sample came in between: try again
        apart_ms = (second.end_time_unix_nano - first.end_time_unix_nano) / 1e6
        grown_ms = second.attributes[AGE] - first.attributes[AGE]
        assert abs(grown_ms - apart_ms) < 250, (grown_ms, apart_ms)
        return
    raise AssertionError("never got two events from one sample")


def later_event(
    server: GunicornServer, receiver: OtlpReceiver, first: ReceivedSpan
) -> ReceivedSpan:
    """An event that ended at least ``APART_S`` after ``first``."""
    while True:
        event = event_of(server, receiver)
        if event.end_time_unix_nano - first.end_time_unix_nano >= APART_S * 1e9:
            return event
        time.sleep(0.1)
