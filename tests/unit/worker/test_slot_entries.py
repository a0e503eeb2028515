"""A slot with several request entries: a worker serving requests at once (threads, greenlets)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind

from gunicorn_django_wide_events import _attributes as attr
from gunicorn_django_wide_events._board import MAX_ENTRIES_PER_SLOT, Board, RequestState
from gunicorn_django_wide_events._worker.event import RequestEvent
from gunicorn_django_wide_events._worker.slot import EntryOverflow, SlotEntry, WorkerSlot


@pytest.fixture
def spans() -> Iterator[list[Span]]:
    """Real SDK SERVER spans, each with its own ids, from a local provider."""
    provider = TracerProvider()
    tracer = provider.get_tracer("test_board_entries")
    made = [tracer.start_span("GET", kind=SpanKind.SERVER) for _ in range(8)]
    yield made
    for span in made:
        span.end()
    provider.shutdown()


def test_entries_per_slot_are_bounded() -> None:
    with pytest.raises(ValueError, match="entries per slot"):
        Board(2, 0)
    with pytest.raises(ValueError, match="entries per slot"):
        Board(2, MAX_ENTRIES_PER_SLOT + 1)
    assert Board(2, MAX_ENTRIES_PER_SLOT).entries_per_slot == MAX_ENTRIES_PER_SLOT


def test_each_request_in_flight_has_its_own_entry(spans: list[Span]) -> None:
    """Three requests at once: three entries, each with its own ids, path and route."""
    board = Board(2, 4)
    slot = board.assign_slot()
    assert slot is not None
    worker = WorkerSlot(board, slot)
    entries = [worker.request_started(spans[n], "GET", f"/r/{n}/", f"n={n}") for n in range(3)]
    entries[1].route_resolved("r/<int:n>/", "app.views.r")
    entries[2].sql_started("SELECT 2")
    entries[2].sql_finished(1, 2_000)

    in_flight = board.requests_in_flight(slot)
    assert [entry for entry, _ in in_flight] == [0, 1, 2]
    by_path = {request.path: request for _, request in in_flight}
    assert set(by_path) == {"/r/0/", "/r/1/", "/r/2/"}
    assert len({request.span_id for request in by_path.values()}) == 3
    assert by_path["/r/1/"].route == "r/<int:n>/"
    assert by_path["/r/1/"].view == "app.views.r"
    assert by_path["/r/0/"].route == ""
    assert by_path["/r/2/"].query == "n=2"
    assert (by_path["/r/2/"].db_query_count, by_path["/r/2/"].db_duration_ns) == (1, 2_000)
    assert all(request.state == RequestState.IN_APP for request in by_path.values())
    assert board.in_flight(slot) == 3
    assert board.count_in_use_and_busy() == (1, 1)

    entries[1].finished()
    assert [request.path for _, request in board.requests_in_flight(slot)] == ["/r/0/", "/r/2/"]
    assert board.in_flight(slot) == 2
    # The freed entry is taken again, its old route gone.
    again = worker.request_started(spans[3], "POST", "/again/")
    assert board.read_request(slot, 1).path == "/again/"
    assert board.read_request(slot, 1).route == ""
    for entry in (entries[0], entries[2], again):
        entry.finished()
    assert board.requests_in_flight(slot) == []
    assert board.count_in_use_and_busy() == (1, 0)


def test_requests_beyond_the_entries_are_counted_not_described(spans: list[Span]) -> None:
    board = Board(1, 2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    described = [worker.request_started(spans[n], "GET", "/") for n in range(2)]
    extra = worker.request_started(spans[2], "GET", "/extra/")

    assert all(isinstance(entry, SlotEntry) for entry in described)
    assert isinstance(extra, EntryOverflow)
    assert board.in_flight(0) == 3
    attributes: dict[str, object] = {}
    worker.add_attributes(attributes)  # type: ignore[arg-type]
    assert attributes[attr.GUNICORN_WORKER_ACTIVE_REQUESTS] == 3
    extra.finished()
    assert board.in_flight(0) == 2
    assert len(board.requests_in_flight(0)) == 2


def test_sending_and_aborting_states(spans: list[Span]) -> None:
    board = Board(1)
    board.assign_slot()
    entry = WorkerSlot(board, 0).request_started(spans[0], "GET", "/stream/")
    entry.sending()
    assert board.read_request(0).state == RequestState.SENDING
    entry.event_out()
    request = board.read_request(0)
    assert (request.state, request.event_out) == (RequestState.ABORTING, True)
    entry.finished()
    request = board.read_request(0)
    assert (request.state, request.event_out, request.started_at) == (RequestState.IDLE, False, 0.0)


def test_threads_starting_and_ending_requests_leave_the_counts_right(spans: list[Span]) -> None:
    """Many threads at once: every entry comes back, the in-flight count returns to 0."""
    board = Board(1, 8)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    start = threading.Barrier(8)

    def requests() -> None:
        start.wait()
        for _ in range(2_000):
            worker.request_started(spans[0], "GET", "/").finished()

    threads = [threading.Thread(target=requests) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert worker.requests == 16_000
    assert worker.in_flight == 0
    assert board.in_flight(0) == 0
    assert board.requests_in_flight(0) == []


def test_a_request_ended_twice_gives_its_entry_back_once(spans: list[Span]) -> None:
    """An exception's end, then the body's close: the count must not go below the truth."""
    board = Board(1, 2)
    board.assign_slot()
    worker = WorkerSlot(board, 0)
    other = worker.request_started(spans[1], "GET", "/other/")
    event = RequestEvent(spans[0], "GET", worker, worker.request_started(spans[0], "GET", "/"))
    event.end_response(ValueError("mid-stream"))
    event.end_response(incomplete=True)
    assert board.in_flight(0) == 1
    assert [request.path for _, request in board.requests_in_flight(0)] == ["/other/"]
    other.finished()
    assert board.in_flight(0) == 0
