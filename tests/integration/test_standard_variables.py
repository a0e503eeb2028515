"""The standard OTEL_* variables shape the events: resource, sampler, excluded URLs."""

from __future__ import annotations

import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.events import barrier, send, server_spans_of, the_event
from tests.integration.otlp_receiver import OtlpReceiver


@pytest.fixture(scope="module")
def server(module_gunicorn_server: StartGunicorn) -> GunicornServer:
    return module_gunicorn_server(
        protocol="http/protobuf",
        env={
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,team=checkout",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_PYTHON_DJANGO_EXCLUDED_URLS": "/status/2.*",
        },
    )


def test_resource_attributes_reach_every_event(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """OTEL_RESOURCE_ATTRIBUTES and the service name describe the process of each event."""
    event = the_event(server, receiver, send(server, "/ok/"))

    assert event.resource["deployment.environment.name"] == "test"
    assert event.resource["team"] == "checkout"
    assert event.resource["service.name"] == "djangoapp-tests"


def test_excluded_urls_get_no_event(server: GunicornServer, receiver: OtlpReceiver) -> None:
    """A URL matching OTEL_PYTHON_DJANGO_EXCLUDED_URLS is served but not recorded."""
    excluded = send(server, "/status/204/")
    kept = send(server, "/status/404/")
    barrier(server, receiver)

    assert excluded.status == 204
    assert server_spans_of(receiver, excluded.trace_id) == []
    assert len(server_spans_of(receiver, kept.trace_id)) == 1


def test_parent_based_sampler_follows_the_caller(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """With a parent-based sampler, a caller's 'not sampled' flag means no event."""
    unsampled_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    status, _, _ = server.request(
        "GET", "/ok/", headers={"traceparent": f"00-{unsampled_trace}-00f067aa0ba902b7-00"}
    )
    barrier(server, receiver)

    assert status == 200
    assert server_spans_of(receiver, unsampled_trace) == []
