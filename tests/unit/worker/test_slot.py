"""WorkerSlot: what a worker writes to its slot on the board, and the attributes it reads back."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, set_span_in_context
from opentelemetry.util.types import AttributeValue

from gunicorn_django_wide_events import _attributes as attr
from gunicorn_django_wide_events._board import Board, RequestState, ServerSample
from gunicorn_django_wide_events._worker.slot import WorkerSlot
from tests.unit.boards import SERVER_AT, entry_at, put_request, server_sample, worker_sample

pytestmark = pytest.mark.usefixtures("fresh_reports")


BASE_WORKER_ATTRIBUTES = {
    attr.GUNICORN_WORKER_ID,
    attr.GUNICORN_WORKER_ACTIVE_REQUESTS,
    attr.GUNICORN_WORKER_AGE,
    attr.GUNICORN_WORKER_REQUESTS,
    attr.GUNICORN_WORKERS_TOTAL,
    attr.GUNICORN_WORKERS_BUSY,
    attr.GUNICORN_WORKERS_IDLE,
    attr.GUNICORN_WORKERS_UTILIZATION,
}


@pytest.fixture
def span() -> Iterator[Span]:
    """A real SDK SERVER span from a local TracerProvider (not installed globally)."""
    provider = TracerProvider()
    span = provider.get_tracer("test_board").start_span("GET", kind=SpanKind.SERVER)
    yield span
    span.end()
    provider.shutdown()


# -- layout ------------------------------------------------------------------------------------


# -- WorkerSlot --------------------------------------------------------------------------------


def test_new_worker_slot_writes_an_idle_request() -> None:
    """WorkerSlot(board, slot) records its pid and spawn time, no request, not busy."""
    board = Board(4)
    slot = board.assign_slot()
    assert slot is not None
    before = time.time()
    worker = WorkerSlot(board, slot)
    request = board.read_request(slot)
    assert request.pid == os.getpid()
    assert before <= request.spawned_at == worker.spawned_at <= time.time()
    assert (request.requests, request.started_at, request.path) == (0, 0.0, "")
    assert board.count_in_use_and_busy()[1] == 0


def test_request_started_writes_ids_and_marks_busy(span: Span) -> None:
    """request_started writes trace and span ids as bytes, method, path, start time, busy."""
    board = Board(4)
    board.assign_slot()
    slot = board.assign_slot()
    assert slot == 1
    worker = WorkerSlot(board, slot)
    before = time.time()
    worker.request_started(span, "POST", "/orders/7/")
    context = span.get_span_context()
    request = board.read_request(slot)
    assert request.trace_id == context.trace_id.to_bytes(16, "big")
    assert request.span_id == context.span_id.to_bytes(8, "big")
    assert request.trace_id != bytes(16)
    assert (request.method, request.path, request.requests) == ("POST", "/orders/7/", 1)
    assert before <= request.started_at <= time.time()
    assert request.pid == os.getpid()
    assert board.count_in_use_and_busy()[1] == 1


def test_request_started_writes_the_parent_span_id() -> None:
    """A span with a parent puts the parent's span id on the board; a root span puts zeros."""
    provider = TracerProvider()
    tracer = provider.get_tracer("test_board")
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    parent = tracer.start_span("proxy")
    child = tracer.start_span("GET", context=set_span_in_context(parent), kind=SpanKind.SERVER)
    try:
        entry = worker.request_started(child, "GET", "/")
        request = board.read_request(0)
        assert request.parent_span_id == parent.get_span_context().span_id.to_bytes(8, "big")
        assert request.trace_id == parent.get_span_context().trace_id.to_bytes(16, "big")
        entry.finished()
        worker.request_started(parent, "GET", "/")
        assert board.read_request(0).parent_span_id == bytes(8)
    finally:
        child.end()
        parent.end()
        provider.shutdown()


def test_event_out_marks_only_that_flag(span: Span) -> None:
    """WorkerSlot.event_out sets event_out on the board; the rest of the request is unchanged."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    entry = worker.request_started(span, "GET", "/slow/")
    before = board.read_request(0)
    (seq,) = struct.unpack_from("=I", board.buffer, entry_at(2, 0))
    assert before.event_out is False
    entry.event_out()
    after = board.read_request(0)
    assert after.event_out is True
    assert after.state == RequestState.ABORTING
    assert replace(after, event_out=False, state=before.state) == before
    assert struct.unpack_from("=I", board.buffer, entry_at(2, 0)) == (seq + 2,)
    assert board.count_in_use_and_busy()[1] == 1
    entry.finished()
    assert board.read_request(0).event_out is False


def test_add_attributes_without_monitor_data(span: Span) -> None:
    """add_attributes gives the worker and sibling counts; no monitor data, no monitor fields."""
    board = Board(8)
    slots = [board.assign_slot() for _ in range(4)]
    put_request(board, 0, pid=1, spawned_at=1.0, requests=3, started_at=5.0)  # a busy sibling
    worker = WorkerSlot(board, 2)
    worker.request_started(span, "GET", "/")
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert slots == [0, 1, 2, 3]
    assert set(attributes) == BASE_WORKER_ATTRIBUTES
    assert attributes[attr.GUNICORN_WORKER_ID] == 2
    assert attributes[attr.GUNICORN_WORKER_REQUESTS] == 1
    assert 0 <= attributes[attr.GUNICORN_WORKER_AGE] < 5  # type: ignore[operator]
    assert attributes[attr.GUNICORN_WORKERS_TOTAL] == 4
    assert attributes[attr.GUNICORN_WORKERS_BUSY] == 2
    assert attributes[attr.GUNICORN_WORKERS_IDLE] == 2
    assert attributes[attr.GUNICORN_WORKERS_UTILIZATION] == 0.5


def test_add_attributes_with_monitor_and_server_samples(span: Span) -> None:
    """Once the monitor wrote its samples, add_attributes adds the worker and server data."""
    board = Board(4)
    for _ in range(3):
        board.assign_slot()
    worker = WorkerSlot(board, 1)
    worker.request_started(span, "GET", "/")
    own = worker_sample(4)
    board.write_monitor(1, own)
    board.write_monitor(0, worker_sample(9))  # a sibling's sample must not be picked up
    sampled_at = time.time() - 0.25
    server = ServerSample(sampled_at, 1.25, 3, 50_000_000, 7.5, 300_000_000)
    board.write_server(server)
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)

    assert attributes[attr.GUNICORN_WORKER_CPU_PERCENT] == own.cpu_percent
    assert attributes[attr.GUNICORN_WORKER_MEMORY_RSS] == own.rss
    assert attributes[attr.GUNICORN_WORKER_THREADS] == own.threads
    assert attributes[attr.GUNICORN_WORKER_OPEN_FDS] == own.fds
    assert attributes[attr.GUNICORN_WORKERS_CPU_PERCENT] == 7.5
    assert attributes[attr.GUNICORN_WORKERS_MEMORY_RSS] == 300_000_000
    assert attributes[attr.GUNICORN_MASTER_MEMORY_RSS] == 50_000_000
    assert attributes[attr.GUNICORN_HOST_LOAD_1M] == 1.25
    assert attributes[attr.GUNICORN_LISTEN_BACKLOG] == 3
    assert 250 <= attributes[attr.GUNICORN_MONITOR_SAMPLE_AGE_MS] < 5_000  # type: ignore[operator]
    assert attributes[attr.GUNICORN_WORKERS_TOTAL] == 3
    assert attributes[attr.GUNICORN_WORKERS_BUSY] == 1


def test_add_attributes_leaves_out_an_unknown_backlog(span: Span) -> None:
    """A server sample with backlog -1 (unknown) adds no gunicorn.listen.backlog."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    board.write_server(ServerSample(time.time(), 0.5, -1, 1, 1.0, 1))
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert attr.GUNICORN_HOST_LOAD_1M in attributes
    assert attr.GUNICORN_LISTEN_BACKLOG not in attributes


def test_add_attributes_on_a_torn_read_keeps_the_counts() -> None:
    """A torn server sample leaves out the monitor data; the counts are still there."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    board.write_monitor(0, worker_sample(1))
    board.write_server(server_sample(1))
    struct.pack_into("=I", board.buffer, SERVER_AT, 3)  # the master died mid-write
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert set(attributes) == BASE_WORKER_ATTRIBUTES


def test_add_attributes_follows_each_new_sample(span: Span) -> None:
    """Samples are read again after every monitor write, and only the newest is used."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    seen = []
    for n in (1, 2, 2, 3):
        if n != (seen[-1] if seen else None):
            board.write_monitor(0, worker_sample(n))
            board.write_server(server_sample(n))
        attributes: dict[str, AttributeValue] = {}
        worker.add_attributes(attributes)
        assert attributes[attr.GUNICORN_WORKER_MEMORY_RSS] == worker_sample(n).rss
        assert attributes[attr.GUNICORN_MASTER_MEMORY_RSS] == server_sample(n).master_rss
        seen.append(n)


def test_add_attributes_never_pairs_a_worker_sample_with_an_older_server_sample() -> None:
    """Mid-pass (this worker's sample written, the server's not yet) the last whole pass is
    kept; once the pass is done, both samples of it come together."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    board.write_monitor(0, worker_sample(1))
    board.write_server(server_sample(1))
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert attributes[attr.GUNICORN_WORKER_MEMORY_RSS] == worker_sample(1).rss

    board.write_monitor(0, worker_sample(2))
    worker.add_attributes(attributes)
    assert attributes[attr.GUNICORN_WORKER_MEMORY_RSS] == worker_sample(1).rss
    assert attributes[attr.GUNICORN_WORKERS_MEMORY_RSS] == server_sample(1).workers_rss

    board.write_server(server_sample(2))
    worker.add_attributes(attributes)
    assert attributes[attr.GUNICORN_WORKER_MEMORY_RSS] == worker_sample(2).rss
    assert attributes[attr.GUNICORN_WORKERS_MEMORY_RSS] == server_sample(2).workers_rss


def test_a_worker_sample_without_a_server_sample_is_not_used_alone() -> None:
    """The first pass is under way: nothing from the monitor yet, only the counts."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    board.write_monitor(0, worker_sample(1))
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert set(attributes) == BASE_WORKER_ATTRIBUTES


def test_add_attributes_after_a_torn_read_reads_again() -> None:
    """A torn read is not kept: once the sample is whole again, the next event carries it."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    board.write_server(server_sample(1))
    struct.pack_into("=I", board.buffer, SERVER_AT, 3)  # the master died mid-write
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert attr.GUNICORN_HOST_LOAD_1M not in attributes
    struct.pack_into("=I", board.buffer, SERVER_AT, 4)  # whole again, same sample
    worker.add_attributes(attributes)
    assert attributes[attr.GUNICORN_HOST_LOAD_1M] == server_sample(1).load1


def test_request_finished_clears_busy(span: Span) -> None:
    """request_finished marks the slot idle (started_at 0, busy 0); the count stays."""
    board = Board(2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    entry = worker.request_started(span, "GET", "/a/")
    entry.finished()
    entry = worker.request_started(span, "GET", "/b/")
    assert board.count_in_use_and_busy()[1] == 1
    entry.finished()
    request = board.read_request(0)
    assert board.count_in_use_and_busy()[1] == 0
    assert (request.started_at, request.event_out, request.requests) == (0.0, False, 2)
    attributes: dict[str, AttributeValue] = {}
    worker.add_attributes(attributes)
    assert attributes[attr.GUNICORN_WORKERS_BUSY] == 0
    assert attributes[attr.GUNICORN_WORKERS_UTILIZATION] == 0.0
