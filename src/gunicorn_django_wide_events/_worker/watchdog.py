"""The watchdog: one thread per worker that turns a request past its deadline into a timeout event.

gunicorn's master SIGABRTs a sync worker whose heartbeat is older than ``--timeout``, and
SIGKILLs it about a second later; the request's own event would never be sent. So each request
gets a deadline a margin before that moment. When it passes, the watchdog ends the request's span
as a ``timeout`` event carrying the stack of the stuck thread and the SQL in flight, exports it
at once with a bounded wait, and, for a sync worker, answers the client and exits the worker on
its own terms. gthread workers are never killed for a slow request, so there the deadline is the
configured request timeout and the worker carries on; the request's later end adds nothing.

The thread sleeps until the earliest deadline; registering a request is a dict assignment and
wakes it only when the new deadline is earlier than the planned wake-up, which a fixed timeout
never is.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gunicorn.workers.sync import SyncWorker
from opentelemetry.semconv.attributes.code_attributes import CODE_STACKTRACE
from opentelemetry.semconv.attributes.db_attributes import DB_QUERY_TEXT
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.semconv.attributes.url_attributes import URL_PATH

from .. import _attributes as attr
from .._attributes import EventType
from .._export.handover import WorkerSpanProcessor
from .._guard import logger, never_raise
from .slot import NoSlot, WorkerSlot

if TYPE_CHECKING:
    from .wsgi import RequestScope


# How a sync worker leaves after its timeout event: not gunicorn's 3 (boot error) or 4 (app load
# error), which stop the whole server, but the 1 of gunicorn's own abort path.
TIMEOUT_EXIT_CODE: Final = 1
TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 500 Internal Server Error\r\n"
    b"Connection: close\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 22\r\n"
    b"\r\n"
    b"Request took too long\n"
)
_fire_guard: Final = never_raise("watchdog.fire")
_WSGI_MODULE_FILE: Final = os.path.join(os.path.dirname(__file__), "wsgi.py")


def thread_cpu_ms(thread_id: int) -> float | None:
    """CPU time of another thread of this process, where the platform can tell."""
    try:
        clock = time.pthread_getcpuclockid(thread_id)
        return time.clock_gettime(clock) * 1e3
    except (AttributeError, OSError, ValueError):
        return None


def thread_stack(thread_id: int) -> str | None:
    """The stack of another thread, from the app's WSGI entry down to where it is stuck.

    The frames above our middleware (gunicorn's arbiter, worker loop and request handling) are
    the same for every request and left out.
    """
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return None
    frames = traceback.extract_stack(frame)
    entries = [i for i, entry in enumerate(frames) if entry.filename == _WSGI_MODULE_FILE]
    if entries:
        frames = traceback.StackSummary.from_list(frames[entries[-1] + 1 :])
    return "".join(frames.format())


class Watchdog:
    """Tracks the deadlines of the requests in flight; fires the ones that pass."""

    def __init__(
        self,
        processor: WorkerSpanProcessor | None,
        *,
        slot: WorkerSlot | NoSlot,
        sql_max_length: int,
        deadlines: Deadlines,
    ) -> None:
        self.due = deadlines.due
        self.answers_timeouts = deadlines.sync
        self.after_timeout = abort_sync_worker(processor) if deadlines.sync else log_timeout
        # No request registered during an idle wait this long can be due before it ends.
        self.idle_wait_s = max(deadlines.budget_s, 0.05)
        self.processor = processor
        self.slot = slot
        self.sql_max_length = sql_max_length
        self._in_flight: dict[int, RequestScope] = {}
        self._wakeup = threading.Event()
        # Held while a deadline fires: gunicorn's abort handler waits for it, so that a
        # timeout event the watchdog started is finished, not raced by the request's unwinding.
        self._firing = threading.Lock()
        self._next_wakeup = 0.0
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wide-events-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._wakeup.set()

    def watch(self, scope: RequestScope) -> None:
        self._in_flight[id(scope)] = scope
        if scope.due < self._next_wakeup:
            self._wakeup.set()

    def release(self, scope: RequestScope) -> None:
        self._in_flight.pop(id(scope), None)

    def fire_all(self) -> None:
        """Send the timeout events of every request in flight now (gunicorn's abort is here)."""
        with self._firing:
            for scope in list(self._in_flight.values()):
                self._in_flight.pop(id(scope), None)
                self.time_out(scope)

    def _run(self) -> None:
        while not self._stopped:
            self._wakeup.clear()
            now = time.monotonic()
            next_wakeup = now + self.idle_wait_s
            for scope in list(self._in_flight.values()):
                if scope.due <= now:
                    with self._firing, _fire_guard:
                        if self._in_flight.pop(id(scope), None) is not None and self.time_out(
                            scope
                        ):
                            self.after_timeout(scope)
                else:
                    next_wakeup = min(next_wakeup, scope.due)
            self._next_wakeup = next_wakeup
            self._wakeup.wait(max(next_wakeup - time.monotonic(), 0.0))

    def time_out(self, scope: RequestScope) -> bool:
        """Finish ``scope``'s event as a timeout and export it now; False if already finished."""
        event = scope.event
        if event.finished:
            return False
        attributes = event.attributes
        now = time.monotonic()
        attributes[attr.WIDE_EVENT_ELAPSED_MS] = round((now - scope.started) * 1e3, 3)
        attributes[attr.WIDE_EVENT_DEADLINE_MS] = round((scope.due - scope.started) * 1e3, 3)
        stack = thread_stack(scope.thread_id)
        if stack is not None:
            attributes[CODE_STACKTRACE] = stack
        if event.sql_in_flight is not None:
            attributes[DB_QUERY_TEXT] = str(event.sql_in_flight)[: self.sql_max_length]
        cpu_ms = thread_cpu_ms(scope.thread_id)
        if cpu_ms is not None:
            attributes[attr.WIDE_EVENT_CPU_TIME_MS] = round(cpu_ms - scope.cpu_start_ns / 1e6, 3)
        if self.answers_timeouts and not scope.headers_sent:
            attributes[HTTP_RESPONSE_STATUS_CODE] = 500
        self.slot.add_attributes(attributes)
        span_id = event.span.get_span_context().span_id
        if self.processor is not None:
            self.processor.mark_urgent(span_id)
        if not event.finish(EventType.TIMEOUT, self.sql_max_length):
            if self.processor is not None:
                self.processor.unmark_urgent(span_id)
            return False
        self.slot.event_out()
        return True


class NoWatchdog:
    """Stands in where timeouts cannot be watched (gevent, or no gunicorn timeout)."""

    answers_timeouts = False

    @staticmethod
    def due(now: float) -> float:
        return float("inf")

    def watch(self, scope: RequestScope) -> None:
        return None

    def release(self, scope: RequestScope) -> None:
        return None

    def fire_all(self) -> None:
        return None

    def stop(self) -> None:
        return None


no_watchdog: Final = NoWatchdog()


def log_timeout(scope: RequestScope) -> None:
    event = scope.event
    logger.error(
        "gunicorn-django-wide-events: %s %s ran past its %.1fs deadline; timeout event sent "
        "(trace_id %032x)",
        event.method,
        (getattr(event.span, "attributes", None) or {}).get(URL_PATH, ""),
        scope.due - scope.started,
        event.span.get_span_context().trace_id,
    )


def abort_sync_worker(processor: WorkerSpanProcessor | None) -> Callable[[RequestScope], None]:
    """What a sync worker does after a timeout event: answer, log one line, exit."""

    def abort(scope: RequestScope) -> None:
        if not scope.headers_sent and scope.client is not None:
            with never_raise("watchdog.answer"):
                scope.client.settimeout(1.0)
                scope.client.sendall(TIMEOUT_RESPONSE)
        log_timeout(scope)
        if processor is not None:
            # The request's child spans are still queued; flush them, briefly (force_flush
            # itself has no deadline on a dead collector).
            flusher = threading.Thread(target=processor.force_flush, daemon=True)
            flusher.start()
            flusher.join(0.5)
        logging.shutdown()
        os._exit(TIMEOUT_EXIT_CODE)

    return abort


@dataclass(frozen=True, slots=True)
class Deadlines:
    """How a worker computes its requests' deadlines (monotonic seconds)."""

    due: Callable[[float], float]
    budget_s: float  # what a request gets from its start, at most
    sync: bool  # gunicorn kills this worker class for a slow request


class Heartbeat:
    """A sync worker's last heartbeat, kept in Python as gunicorn writes it.

    gunicorn's arbiter reads the heartbeat from the mtime of ``worker.tmp``; reading it back
    (``last_update``, an ``fstat``) on every request costs a system call, so ``notify`` is
    wrapped to remember the time too, stamped just before gunicorn's own (never later).
    """

    __slots__ = ("last",)

    def __init__(self, tmp: Any) -> None:
        self.last = float(tmp.last_update())
        notify = tmp.notify

        def notify_and_remember() -> None:
            self.last = time.monotonic()
            notify()

        tmp.notify = notify_and_remember


def deadlines_for(
    worker: Any, gunicorn_timeout: float, margin_s: float, request_timeout_s: float
) -> Deadlines:
    """A sync worker is killed ``timeout`` seconds after its last heartbeat (gunicorn writes the
    monotonic time into the mtime of ``worker.tmp``), which can be earlier than the request's
    start: its deadline is the earlier of that and the request timeout.
    """
    budget = request_timeout_s or max(gunicorn_timeout - margin_s, margin_s)
    if isinstance(worker, SyncWorker) and gunicorn_timeout > 0:
        heartbeat = Heartbeat(worker.tmp)
        kill_budget = gunicorn_timeout - margin_s

        def sync_due(now: float) -> float:
            return min(heartbeat.last + kill_budget, now + budget)

        return Deadlines(sync_due, min(budget, kill_budget), sync=True)
    return Deadlines(lambda now: now + budget, budget, sync=False)
