"""The master's metrics: why a worker ended, what is observed of an in-process board, and how
the master tells its exporting child's fate (the fork itself is the integration tests')."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, ConsoleMetricExporter
from opentelemetry.sdk.resources import Resource

from gunicorn_django_wide_events._board import Board, ServerSample, WorkerRequest, WorkerSample
from gunicorn_django_wide_events._export.handover import MetricExport
from gunicorn_django_wide_events._master.fallback import ExitStatuses
from gunicorn_django_wide_events._master.metrics import ExitReason, MasterMetrics, exit_reason

pytestmark = pytest.mark.usefixtures("fresh_reports")

EXITED_0 = 0
EXITED_1 = 1 << 8  # wait statuses, as waitpid gives them
KILLED = signal.SIGKILL.value
TERMINATED = signal.SIGTERM.value
SEGFAULT = signal.SIGSEGV.value


def reason(status: int | None, **known: Any) -> str:
    facts = {"timed_out": False, "stopping": False, "reloaded": False, "served": 0}
    return exit_reason(status, max_requests=known.pop("max_requests", 0), **{**facts, **known})


@pytest.mark.parametrize(
    ("status", "known", "expected"),
    [
        (EXITED_1, {"timed_out": True}, "timeout"),  # the watchdog's exit after its event
        (KILLED, {"timed_out": True, "stopping": True}, "timeout"),  # gunicorn's own kill
        (KILLED, {}, "crash"),  # the OOM killer
        (SEGFAULT, {}, "crash"),
        (EXITED_1, {}, "crash"),
        (None, {}, "crash"),  # nobody saw how it ended
        (EXITED_0, {"served": 100, "max_requests": 100}, "max_requests"),
        (EXITED_0, {"served": 3, "max_requests": 100}, "shutdown"),  # asked to go (TTOU)
        (EXITED_0, {"stopping": True}, "shutdown"),
        (KILLED, {"stopping": True}, "shutdown"),  # still there after the graceful timeout
        (TERMINATED, {"stopping": True}, "shutdown"),  # stopped while still booting
        (SEGFAULT, {"stopping": True}, "crash"),  # a crash on the way out is a crash
        (EXITED_0, {"reloaded": True}, "reload"),
        (TERMINATED, {"reloaded": True}, "reload"),
        (EXITED_0, {"reloaded": True, "stopping": True}, "shutdown"),
        (KILLED, {"reloaded": True}, "crash"),
    ],
)
def test_exit_reason(status: int | None, known: dict[str, Any], expected: str) -> None:
    assert reason(status, **known) == expected


def test_every_reason_is_a_documented_value() -> None:
    assert set(ExitReason.ALL) == {"timeout", "crash", "max_requests", "shutdown", "reload"}


# --- what is observed ---------------------------------------------------------------------


def export_of(temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) -> Any:
    kinds = (Counter, ObservableCounter, Histogram)
    return MetricExport(ConsoleMetricExporter, dict.fromkeys(kinds, temporality), {}, 60.0, 5.0)


@pytest.fixture
def board() -> Iterator[Board]:
    board = Board(8)
    yield board
    board.buffer.close()


def make_metrics(board: Board, workers: dict[int, int], **kwargs: Any) -> MasterMetrics:
    return MasterMetrics(
        board,
        kwargs.pop("exports", [export_of()]),
        Resource({"service.name": "master-test", "process.pid": 7}),
        lambda: dict(workers),
        **kwargs,
    )


def observed(metrics: MasterMetrics) -> dict[str, dict[frozenset[tuple[str, Any]], Any]]:
    """Metric name -> attributes -> value, from one collection."""
    ((_, data),) = metrics.collect()
    found: dict[str, dict[frozenset[tuple[str, Any]], Any]] = {}
    (resource_metrics,) = data.resource_metrics
    assert resource_metrics.resource.attributes["service.name"] == "master-test"
    for scope_metrics in resource_metrics.scope_metrics:
        for metric in scope_metrics.metrics:
            found[metric.name] = {
                frozenset(point.attributes.items()): point.value
                for point in metric.data.data_points
            }
    return found


def state(name: str) -> frozenset[tuple[str, Any]]:
    return frozenset({("gunicorn.worker.state", name)})


def worker_id(slot: int) -> frozenset[tuple[str, Any]]:
    return frozenset({("gunicorn.worker.id", slot)})


def test_workers_by_state_from_the_request_flags(board: Board) -> None:
    """Three workers hold a slot, one of them serving: 1 busy, 2 idle."""
    slots = [board.assign_slot() for _ in range(3)]
    board.buffer[board.busy_offset(slots[1] or 0)] = 1
    metrics = make_metrics(board, {0: 100, 1: 101, 2: 102})
    assert observed(metrics)["gunicorn.workers"] == {state("busy"): 1, state("idle"): 2}


def test_cpu_memory_and_backlog_from_the_monitor_samples(board: Board) -> None:
    """Per worker id, CPU as a share of one core; a worker with one reading has no CPU yet."""
    for _ in range(2):
        board.assign_slot()
    now = time.time()
    board.write_monitor(0, WorkerSample(now, 150.0, 50_000_000, 3, 12))
    board.write_monitor(1, WorkerSample(now, -1.0, 40_000_000, 1, 10))
    board.write_server(ServerSample(now, 0.5, 4, 60_000_000, 150.0, 90_000_000))
    found = observed(make_metrics(board, {0: 100, 1: 101}))
    assert found["gunicorn.worker.cpu.utilization"] == {worker_id(0): 1.5}
    assert found["gunicorn.worker.memory.rss"] == {
        worker_id(0): 50_000_000,
        worker_id(1): 40_000_000,
    }
    assert found["gunicorn.listen.backlog"] == {frozenset(): 4}


def test_no_sample_yet_means_no_point(board: Board) -> None:
    """Before the monitor's first pass there is nothing to say, not a zero."""
    board.assign_slot()
    found = observed(make_metrics(board, {0: 100}))
    assert "gunicorn.listen.backlog" not in found
    assert "gunicorn.worker.memory.rss" not in found


def test_exits_by_reason_every_reason_from_zero(board: Board) -> None:
    metrics = make_metrics(board, {})
    metrics.count_exit("timeout")
    metrics.count_exit("crash")
    metrics.count_exit("crash")
    exits = observed(metrics)["gunicorn.worker.exits"]
    by_reason = {dict(key)["gunicorn.worker.exit_reason"]: value for key, value in exits.items()}
    assert by_reason == {"timeout": 1, "crash": 2, "max_requests": 0, "shutdown": 0, "reload": 0}


def test_each_exporter_gets_its_own_temporality(board: Board) -> None:
    """With a delta exporter, an exit counts once, in the collection after it."""
    metrics = make_metrics(board, {}, exports=[export_of(AggregationTemporality.DELTA)])
    metrics.count_exit("crash")

    def crashes() -> Any:
        ((_, data),) = metrics.collect()
        (resource_metrics,) = data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == "gunicorn.worker.exits":
                    assert metric.data.aggregation_temporality is AggregationTemporality.DELTA
                    return {
                        point.attributes["gunicorn.worker.exit_reason"]: point.value
                        for point in metric.data.data_points
                    }["crash"]
        return None

    assert crashes() == 1
    assert crashes() == 0


# --- the exporting child ------------------------------------------------------------------


def finished_child(code: int) -> tuple[int, int]:
    """A real child process that exited with ``code``, reaped: its pid and wait status."""
    child = subprocess.Popen(["sh", "-c", f"exit {code}"])
    pid, status = os.waitpid(child.pid, 0)
    child.returncode = code  # reaped here, not by Popen
    return pid, status


def test_a_finished_child_lets_the_next_export_go(board: Board) -> None:
    metrics = make_metrics(board, {})
    statuses = ExitStatuses(os)
    pid, status = finished_child(0)
    statuses._statuses[pid] = status
    metrics._child = (pid, time.monotonic())
    assert metrics._child_done(time.monotonic(), statuses) is True
    assert metrics._child is None


def test_a_failed_export_is_reported_once(board: Board, caplog: pytest.LogCaptureFixture) -> None:
    metrics = make_metrics(board, {})
    statuses = ExitStatuses(os)
    with caplog.at_level(logging.WARNING, "gunicorn_django_wide_events"):
        for _ in range(2):
            pid, status = finished_child(2)
            statuses._statuses[pid] = status
            metrics._child = (pid, time.monotonic())
            assert metrics._child_done(time.monotonic(), statuses) is True
    assert [r.message for r in caplog.records if "could not be exported" in r.message] != []
    assert len([r for r in caplog.records if "could not be exported" in r.message]) == 1


def test_a_child_still_exporting_holds_the_next_export_until_it_is_stuck(board: Board) -> None:
    """Not two children at once; one stuck past its timeout is killed."""
    metrics = make_metrics(board, {})
    statuses = ExitStatuses(os)
    child = subprocess.Popen(["sleep", "60"])
    try:
        metrics._child = (child.pid, time.monotonic())
        assert metrics._child_done(time.monotonic(), statuses) is False
        metrics._child = (child.pid, time.monotonic() - 3600)
        assert metrics._child_done(time.monotonic(), statuses) is True
        assert child.wait(30) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


def test_export_waits_for_its_interval(board: Board) -> None:
    """Before the interval is over nothing is collected, let alone forked."""
    metrics = make_metrics(board, {})
    collected: list[int] = []
    metrics.collect = lambda: collected.append(1) or []  # type: ignore[method-assign]
    metrics.export_if_due([], ExitStatuses(os))
    assert collected == []
    metrics._next_export_at = time.monotonic() - 1
    metrics.export_if_due([], ExitStatuses(os))
    assert collected == [1]
    assert metrics._next_export_at > time.monotonic() + 30


def test_a_dead_workers_request_is_a_duration_point_of_what_the_board_knows(
    board: Board,
) -> None:
    """Method (the board's "HTTP" is _OTHER), route, error; its time so far."""
    metrics = make_metrics(board, {})
    now = time.time()
    for method, route in (("GET", "slow/"), ("HTTP", "")):
        request = WorkerRequest(
            pid=1, spawned_at=now, requests=1, started_at=now - 2.5, trace_id=bytes(16),
            span_id=bytes(8), parent_span_id=bytes(8), event_out=False, state=1, method=method,
            path="/", query="", route=route, view="", db_query_count=0, db_duration_ns=0, sql="",
        )  # fmt: skip
        metrics.record_request(request, "timeout", now)
    ((_, data),) = metrics.collect()
    (resource_metrics,) = data.resource_metrics
    (duration,) = [
        metric
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == "http.server.request.duration"
    ]
    points = {frozenset(p.attributes.items()): p for p in duration.data.data_points}
    slow = points[
        frozenset(
            {("http.request.method", "GET"), ("http.route", "slow/"), ("error.type", "timeout")}
        )
    ]
    assert slow.count == 1
    assert slow.sum == pytest.approx(2.5)
    assert frozenset({("http.request.method", "_OTHER"), ("error.type", "timeout")}) in points
