"""What a worker inherits from the master: frozen for the garbage collector, nothing unneeded.

Without ``gc.freeze()`` before fork, each worker's first full collection walks everything the
master imported (the SDK, gRPC, Django), on whichever request it lands, and writes to every page
it walks, which then stops being shared with the master.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn

HTTP_EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"  # and requests with it
MODULES = ("grpc", HTTP_EXPORTER)


def process_state(server: GunicornServer) -> dict[str, object]:
    query = "&".join(f"module={name}" for name in MODULES)
    status, _, body = server.get(f"/process/?{query}")
    assert status == 200
    state: dict[str, object] = json.loads(body)
    return state


@pytest.mark.parametrize(("setting", "frozen"), [(None, True), ("false", False)])
def test_the_master_freezes_what_it_holds_before_each_fork(
    gunicorn_server: StartGunicorn, setting: str | None, frozen: bool
) -> None:
    """WIDE_EVENTS_GC_FREEZE (on by default): the worker's collections skip the master's objects."""
    server = gunicorn_server(env={"WIDE_EVENTS_GC_FREEZE": setting})

    state = process_state(server)

    # Tens of thousands of objects: the SDK, the exporters, Django's handlers.
    assert (state["frozen"] > 10_000) is frozen  # type: ignore[operator]


@pytest.mark.parametrize(
    ("protocol", "loaded", "not_loaded"),
    [("grpc", "grpc", HTTP_EXPORTER), ("http/protobuf", HTTP_EXPORTER, "grpc")],
)
def test_a_worker_loads_only_the_transport_it_exports_with(
    gunicorn_server: StartGunicorn, protocol: str, loaded: str, not_loaded: str
) -> None:
    """The package's own exporters import the gRPC or the HTTP client, never both."""
    server = gunicorn_server(protocol=protocol)

    state = process_state(server)

    assert state["loaded"] == {loaded: True, not_loaded: False}
