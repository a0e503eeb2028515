"""A worker's own board slot: written as each request starts and ends, read for its events.

Writing costs two ``struct.pack_into`` calls per request and reading a few ``unpack_from``
calls (see ``bench/board.py``); the monitor data it reads is at most one interval old, while
the busy and total counts are live.
"""

from __future__ import annotations

import os
import time

from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from .. import _attributes as attr
from .._board import Board, TornRead
from .._guard import never_raise

_read_guard = never_raise("board.read")
_write_guard = never_raise("board.write")


class WorkerSlot:
    """The slot ``slot`` of ``board``, owned by this worker process."""

    __slots__ = (
        "_sample_attributes",
        "_sample_versions",
        "_sampled_at",
        "_sql_at",
        "_writer",
        "board",
        "pid",
        "requests",
        "slot",
        "spawned_at",
    )

    def __init__(self, board: Board, slot: int) -> None:
        self.board = board
        self.slot = slot
        self.pid = os.getpid()
        self.spawned_at = time.time()
        self.requests = 0
        # The monitor's samples change once per interval; read them again only then.
        self._sample_versions = (-1, -1)
        self._sample_attributes: dict[str, AttributeValue] = {}
        self._sampled_at = 0.0
        self._sql_at = board.sql_offset(slot)
        board.write_request(slot, pid=self.pid, spawned_at=self.spawned_at, requests=0)
        self._writer = board.request_writer(slot)

    def request_started(self, span: Span, method: str, path: str) -> None:
        try:
            self.requests += 1
            context = span.get_span_context()
            parent = getattr(span, "parent", None)
            ids = context.trace_id << 128 | context.span_id << 64
            if parent:
                ids |= parent.span_id
            self._writer.started(self.requests, time.time(), ids.to_bytes(32, "big"), method, path)
        except Exception:
            _write_guard.report()

    def sql_started(self, sql: str) -> None:
        try:
            self.board.write_sql(self._sql_at, sql)
        except Exception:
            _write_guard.report()

    def sql_finished(self) -> None:
        try:
            self.board.write_sql(self._sql_at, "")
        except Exception:
            _write_guard.report()

    def event_out(self) -> None:
        with _write_guard:
            self.board.mark_event_out(self.slot)

    def request_finished(self) -> None:
        try:
            self._writer.finished()
        except Exception:
            _write_guard.report()

    def add_attributes(self, attributes: dict[str, AttributeValue]) -> None:
        """The worker and its siblings, as the board shows them now."""
        try:
            board = self.board
            now = time.time()
            total, busy = board.count_in_use_and_busy()
            attributes[attr.GUNICORN_WORKER_ID] = self.slot
            attributes[attr.GUNICORN_WORKER_AGE] = round(now - self.spawned_at, 3)
            attributes[attr.GUNICORN_WORKER_REQUESTS] = self.requests
            attributes[attr.GUNICORN_WORKERS_TOTAL] = total
            attributes[attr.GUNICORN_WORKERS_BUSY] = busy
            attributes[attr.GUNICORN_WORKERS_IDLE] = max(total - busy, 0)
            if total:
                attributes[attr.GUNICORN_WORKERS_UTILIZATION] = round(busy / total, 4)
            versions = board.sample_versions(self.slot)
            if versions != self._sample_versions and self._read_samples():
                # The monitor wrote since the last read (once per interval) and it read whole.
                self._sample_versions = versions
            attributes.update(self._sample_attributes)
            if self._sampled_at:
                attributes[attr.GUNICORN_MONITOR_SAMPLE_AGE_MS] = round(
                    (now - self._sampled_at) * 1e3, 1
                )
        except Exception:
            _read_guard.report()

    def _read_samples(self) -> bool:
        """Keep the monitor's samples as attributes; False on a torn read or while the monitor
        is between this worker's sample and the server's (both kept as they were).

        The monitor writes every worker's sample, then the server's, each pass stamped alike:
        a server sample older than this worker's is the previous pass's, whose sums leave this
        worker's new figures out (the first pass after a fork sums no worker at all).
        """
        try:
            own = self.board.read_monitor(self.slot)
            server = self.board.read_server()
        except TornRead:
            return False
        if own is not None and (server is None or server.sampled_at < own.sampled_at):
            return False
        attributes: dict[str, AttributeValue] = {}
        if own is not None:
            attributes[attr.GUNICORN_WORKER_CPU_PERCENT] = own.cpu_percent
            attributes[attr.GUNICORN_WORKER_MEMORY_RSS] = own.rss
            attributes[attr.GUNICORN_WORKER_THREADS] = own.threads
            attributes[attr.GUNICORN_WORKER_OPEN_FDS] = own.fds
        self._sample_attributes = attributes
        self._sampled_at = 0.0
        if server is None:
            return True
        attributes[attr.GUNICORN_WORKERS_CPU_PERCENT] = server.workers_cpu_percent
        attributes[attr.GUNICORN_WORKERS_MEMORY_RSS] = server.workers_rss
        attributes[attr.GUNICORN_MASTER_MEMORY_RSS] = server.master_rss
        attributes[attr.GUNICORN_HOST_LOAD_1M] = server.load1
        if server.backlog >= 0:
            attributes[attr.GUNICORN_LISTEN_BACKLOG] = server.backlog
        self._sampled_at = server.sampled_at
        return True


class NoSlot:
    """Stands in for a worker that got no slot (board full): events simply lack board data."""

    __slots__ = ()

    def request_started(self, span: Span, method: str, path: str) -> None:
        return None

    def request_finished(self) -> None:
        return None

    def event_out(self) -> None:
        return None

    def sql_started(self, sql: str) -> None:
        return None

    def sql_finished(self) -> None:
        return None

    def add_attributes(self, attributes: dict[str, AttributeValue]) -> None:
        return None


no_slot = NoSlot()
