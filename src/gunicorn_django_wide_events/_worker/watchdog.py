"""The watchdog: one thread per worker that turns a request past its deadline into a timeout event.

gunicorn's master SIGABRTs a sync worker whose heartbeat is older than ``--timeout``, and
SIGKILLs it about a second later; the request's own event would never be sent. So each request
gets a deadline a margin before that moment. When it passes, the watchdog ends the request's span
as a ``timeout`` event carrying the stack of the stuck thread and the SQL in flight, exports it
at once with a bounded wait, and, for a sync worker, answers the client and exits the worker on
its own terms. gthread workers are never killed for a slow request, so there the deadline is the
configured request timeout and the worker carries on; the request's later end adds nothing.
gevent workers get both kinds of deadline, from a subclass (``greenlets.py``).

The watchdog sees a request through the small ``Watched`` protocol (``RequestEvent`` is one):
its deadline, its thread, whether anything was sent, and how to end it as a timeout.

The thread sleeps until the earliest deadline; registering a request is a dict assignment and
wakes it only when the new deadline is earlier than the planned wake-up, which a fixed timeout
never is. It is a real OS thread, with real locks, also where gevent patched ``threading``
(``_os_threads.py``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final, Protocol

from gunicorn.workers.sync import SyncWorker

from .._config import Config
from .._export.processor import WorkerSpanProcessor
from .._guard import log_once, logger, never_raise
from .._os_threads import Wakeup, allocate_lock, run_for_at_most, start_thread

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
# eventlet's workers (gunicorn before 26): no watchdog is built for their green threads.
UNWATCHABLE_WORKER_MODULES: Final = ("gunicorn.workers.geventlet",)
# gevent's workers (and their subclasses): requests are greenlets, the watchdog a real thread.
GREENLET_WORKER_MODULES: Final = ("gunicorn.workers.ggevent",)
_fire_guard: Final = never_raise("watchdog.fire")
# What a worker exiting after its timeout event gives its last spans and metric points.
EXIT_FLUSH_S: Final = 0.5

FlushBeforeExit = Callable[[float], object]
"""Exports what the worker still holds, waiting at most so many seconds."""


class Watched(Protocol):
    """What the watchdog needs of a request in flight."""

    due: float  # monotonic seconds; set by ``Watchdog.watch``
    started: float
    thread_id: int
    headers_sent: bool
    client: Any  # gunicorn's socket to the client, if any

    @property
    def span_id(self) -> int: ...

    def time_out(self, stack: str | None, answered: bool) -> bool: ...

    def describe(self) -> str: ...


def thread_stack(thread_id: int, trim_through: Collection[str] = ()) -> str | None:
    """The stack of another thread, below the last frame from a file in ``trim_through``."""
    return frame_stack(sys._current_frames().get(thread_id), trim_through)


def frame_stack(frame: FrameType | None, trim_through: Collection[str] = ()) -> str | None:
    """The stack ending in ``frame``, below the last frame from a file in ``trim_through``.

    The frames above the request path's entry (gunicorn's arbiter, worker loop and request
    handling) are the same for every request and left out.
    """
    if frame is None:
        return None
    frames = traceback.extract_stack(frame)
    entries = [i for i, entry in enumerate(frames) if entry.filename in trim_through]
    if entries:
        frames = traceback.StackSummary.from_list(frames[entries[-1] + 1 :])
    return "".join(frames.format())


class Watchdog:
    """Tracks the deadlines of the requests in flight; fires the ones that pass."""

    def __init__(
        self,
        processor: WorkerSpanProcessor | None,
        *,
        deadlines: Deadlines,
        trim_through: Collection[str] = (),
        flush_before_exit: FlushBeforeExit | None = None,
    ) -> None:
        self.due = deadlines.due
        self._answers_timeouts = deadlines.sync
        self._after_timeout = (
            abort_sync_worker(processor, flush_before_exit)
            if deadlines.sync
            else log_timeout_of(processor)
        )
        # No request registered during an idle wait this long can be due before it ends.
        self._idle_wait_s = max(deadlines.budget_s, 0.05)
        self._processor = processor
        self._trim_through = frozenset(trim_through)
        self._in_flight: dict[int, Watched] = {}
        self._wakeup = Wakeup()
        # Held while a deadline fires: gunicorn's abort handler waits for it, so that a
        # timeout event the watchdog started is finished, not raced by the request's unwinding.
        self._firing = allocate_lock()
        self._next_wakeup = 0.0
        self._stopped = False

    def start(self) -> None:
        start_thread(self._run)

    def stop(self) -> None:
        self._stopped = True
        self._wakeup.set()

    def watch(self, request: Watched) -> None:
        request.due = due = self.due(request.started)
        self._in_flight[id(request)] = request
        if due < self._next_wakeup:
            self._wakeup.set()

    def release(self, request: Watched) -> None:
        self._in_flight.pop(id(request), None)

    def fire_all(self) -> None:
        """Send the timeout events of every request in flight now (gunicorn's abort is here)."""
        with self._firing:
            for request in list(self._in_flight.values()):
                self._in_flight.pop(id(request), None)
                self._time_out(request)

    def _run(self) -> None:
        while not self._stopped:
            self._wakeup.clear()
            now = time.monotonic()
            next_wakeup = now + self._idle_wait_s
            if self._in_flight:
                next_wakeup = min(next_wakeup, self._check_worker(now))
            for request in list(self._in_flight.values()):
                if request.due <= now:
                    with self._firing, _fire_guard:
                        if self._in_flight.pop(id(request), None) is not None and (
                            self._time_out(request)
                        ):
                            self._after_timeout(request)
                else:
                    next_wakeup = min(next_wakeup, request.due)
            self._next_wakeup = next_wakeup
            self._wakeup.wait(max(next_wakeup - time.monotonic(), 0.0))

    def _check_worker(self, now: float) -> float:
        """What the worker as a whole may need besides its requests' deadlines, checked while
        requests are in flight; when to look again (monotonic). A thread per request has
        nothing of the kind; a gevent worker's watchdog looks for a held hub
        (``greenlets.py``), an event-loop worker's for a blocked loop (``loop_watchdog.py``).
        """
        return float("inf")

    def _stack_of(self, request: Watched) -> str | None:
        """Where ``request`` is stuck: its thread's stack."""
        return thread_stack(request.thread_id, self._trim_through)

    def _time_out(self, request: Watched) -> bool:
        """End ``request``'s event as a timeout, exported now; False if it had ended."""
        stack = self._stack_of(request)
        processor = self._processor
        span_id = request.span_id
        if processor is not None:
            processor.mark_urgent(span_id)
        if request.time_out(stack, answered=self._answers_timeouts):
            return True
        if processor is not None:
            processor.unmark_urgent(span_id)
        return False


class NoWatchdog:
    """Stands in where timeouts cannot be watched (eventlet, or no timeout at all)."""

    def watch(self, request: Watched) -> None:
        return None

    def release(self, request: Watched) -> None:
        return None

    def fire_all(self) -> None:
        return None

    def stop(self) -> None:
        return None


no_watchdog: Final = NoWatchdog()


def log_timeout(request: Watched, processor: WorkerSpanProcessor | None, note: str = "") -> None:
    """One line, saying what really happened to the event: sent, or kept to be sent later."""
    delivered = processor.urgent_delivered.pop(request.span_id, None) if processor else None
    outcome = (
        "timeout event sent"
        if delivered is not False
        else "timeout event not delivered yet (collector unreachable), kept to be sent later"
    )
    logger.error(
        "gunicorn-django-wide-events: %s ran past its %.1fs deadline%s; %s",
        request.describe(),
        request.due - request.started,
        note,
        outcome,
    )


def log_timeout_of(processor: WorkerSpanProcessor | None) -> Callable[[Watched], None]:
    return lambda request: log_timeout(request, processor)


def exit_worker(
    processor: WorkerSpanProcessor | None, flush_before_exit: FlushBeforeExit | None = None
) -> None:
    """Leave on the watchdog's terms, before gunicorn's kill: code 1, as its abort path does."""
    # The requests' child spans are still queued, and the worker's metric points (the
    # timeouts' own among them) wait for the next export: flush them, briefly, before
    # gunicorn's SIGKILL could come (force_flush has no deadline on a dead collector).
    if flush_before_exit is not None:
        flush_before_exit(EXIT_FLUSH_S)
    elif processor is not None:
        run_for_at_most(processor.force_flush, EXIT_FLUSH_S)
    logging.shutdown()
    os._exit(TIMEOUT_EXIT_CODE)


def abort_sync_worker(
    processor: WorkerSpanProcessor | None, flush_before_exit: FlushBeforeExit | None = None
) -> Callable[[Watched], None]:
    """What a sync worker does after a timeout event: answer, log one line, flush, exit."""

    def abort(request: Watched) -> None:
        if not request.headers_sent and request.client is not None:
            with never_raise("watchdog.answer"):
                request.client.settimeout(1.0)
                request.client.sendall(TIMEOUT_RESPONSE)
        log_timeout(request, processor)
        exit_worker(processor, flush_before_exit)

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


def timeout_and_margin(worker: Any, config: Config) -> tuple[float, float]:
    """gunicorn's ``--timeout`` and the margin before it, kept below it (logged once)."""
    timeout = float(worker.cfg.timeout or 0)
    margin = config.timeout_margin_s
    if timeout and margin >= timeout:
        margin = timeout / 2
        log_once(
            "watchdog.margin",
            "gunicorn-django-wide-events: WIDE_EVENTS_TIMEOUT_MARGIN is not below gunicorn's "
            "timeout of %ss; using %ss",
            timeout,
            margin,
        )
    return timeout, margin


def is_worker_of(worker: Any, modules: tuple[str, ...]) -> bool:
    """Whether ``worker``'s class, or a class it derives from, comes from one of ``modules``."""
    return any(cls.__module__.startswith(modules) for cls in type(worker).__mro__)


def watchdog_for(
    worker: Any,
    config: Config,
    processor: WorkerSpanProcessor | None,
    trim_through: Collection[str] = (),
    flush_before_exit: FlushBeforeExit | None = None,
) -> Watchdog | NoWatchdog:
    """The watchdog a gunicorn worker gets, started; ``no_watchdog`` where none can work."""
    if is_worker_of(worker, UNWATCHABLE_WORKER_MODULES):
        log_once(
            "watchdog.eventlet",
            "gunicorn-django-wide-events: %s workers have no watchdog: a request that blocks "
            "the worker until gunicorn kills it for its timeout gets its timeout event from the "
            "master, with what the board holds and no stack; WIDE_EVENTS_REQUEST_TIMEOUT does "
            "not apply",
            type(worker).__name__,
        )
        return no_watchdog
    timeout, margin = timeout_and_margin(worker, config)
    if not timeout and not config.request_timeout_s:
        return no_watchdog  # --timeout 0 and no request timeout: nothing to watch
    deadlines = deadlines_for(worker, timeout, margin, config.request_timeout_s)
    watchdog: Watchdog
    if is_worker_of(worker, GREENLET_WORKER_MODULES):
        # Imported here: greenlets.py builds on this module.
        from .greenlets import GreenletWatchdog  # noqa: PLC0415

        greenlet_watchdog = GreenletWatchdog(
            processor,
            deadlines=deadlines,
            heartbeat=Heartbeat(worker.tmp) if timeout else None,
            kill_budget_s=timeout - margin,
            trim_through=trim_through,
        )
        logger.info(greenlet_watchdog.describe(type(worker).__name__))
        watchdog = greenlet_watchdog
    else:
        watchdog = Watchdog(
            processor,
            deadlines=deadlines,
            trim_through=trim_through,
            flush_before_exit=flush_before_exit,
        )
    watchdog.start()
    return watchdog
