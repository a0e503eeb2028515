"""gevent workers: requests are greenlets on one hub, the watchdog a real thread beside it.

gunicorn's gevent worker serves every request of the process in greenlets of one OS thread,
switching between them whenever one waits on something gevent patched. What changes for the
wide event:

- Per-request state is per greenlet already: ``contextvars`` (the current span, the current
  event) are per greenlet since gevent 20.12, and ``threading.get_ident`` names the greenlet.
  Django's database connections are not, once the master imported Django before the worker
  patched ``threading`` (the package does): they get fresh storage after the patch.
- The OS thread's CPU clock runs for every greenlet at once: no figure of a request's own, so
  the event carries none (``GreenletRequestEvent``).
- Two ways a request runs out of time (``GreenletWatchdog``): it holds the hub (CPU-bound Python,
  a call gevent did not patch, C code releasing the GIL), so no greenlet runs, gunicorn's
  heartbeat neither, and gunicorn kills the worker ``--timeout`` after the last one; or it keeps
  yielding past its own deadline, and gunicorn never kills the worker for it.

This module imports ``greenlet`` only when a gevent worker builds its watchdog.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Collection
from typing import Any, Final

from asgiref.local import Local
from django.db import connections
from opentelemetry.util.types import AttributeValue

from .._export.processor import WorkerSpanProcessor
from .._guard import never_raise
from .._os_threads import get_ident, let_earlier_threads_end_quietly
from .event import RequestEvent
from .watchdog import (
    GREENLET_WORKER_MODULES,
    Deadlines,
    Heartbeat,
    Watchdog,
    Watched,
    frame_stack,
    is_worker_of,
    log_timeout,
)

_fire_guard: Final = never_raise("watchdog.fire_hub")
HUB_NOTE: Final = " holding the worker's hub (gunicorn's heartbeat stopped)"


def serves_greenlets(worker: Any) -> bool:
    """Whether ``worker`` is one of gunicorn's gevent workers, or a subclass of one."""
    return is_worker_of(worker, GREENLET_WORKER_MODULES)


def keep_database_connections_per_greenlet() -> None:
    """Give Django's connections storage made after gevent patched ``threading``.

    Django made it when the master imported ``django.db``, before the worker patched anything:
    a real thread-local, which every greenlet of the hub's thread shares. Concurrent requests
    would take each other's connection, which Django refuses ("DatabaseWrapper objects created
    in a thread can only be used in that same thread"). Made now, it is greenlet-local, as in a
    gevent worker that imports Django only once patched. A connection already open in the old
    one (by the master under ``--preload``, or while the app loaded) is closed, as Django's
    first request would close it in a sync worker.
    """
    handler: Any = connections
    inherited = handler.all(initialized_only=True)
    handler._connections = Local(handler.thread_critical)
    for connection in inherited:
        with contextlib.suppress(Exception):
            connection.inc_thread_sharing()  # made in another thread: the master's, or before
            connection.close()


def adapt_to_gevent_patches() -> None:
    """gevent patched ``threading`` after ``post_fork``: adapt what was made before it."""
    with never_raise("greenlets.threads"):
        let_earlier_threads_end_quietly()
    with never_raise("greenlets.database"):
        keep_database_connections_per_greenlet()


class GreenletRequestEvent(RequestEvent):
    """The event of a request served by a greenlet: no CPU time, its thread serves them all."""

    __slots__ = ()

    def _add_cpu_time(self, attributes: dict[str, AttributeValue]) -> None:
        return None

    def _add_cpu_time_so_far(self, attributes: dict[str, AttributeValue]) -> None:
        # Its thread id is the greenlet's: no OS thread's CPU clock to read either.
        return None


class GreenletWatchdog(Watchdog):
    """The watchdog of a gevent worker: both kinds of deadline, from a real OS thread.

    - The hub held: a margin before gunicorn's kill (the last heartbeat plus ``--timeout``
      minus ``WIDE_EVENTS_TIMEOUT_MARGIN``, as for a sync worker), the request whose greenlet
      is running gets its timeout event, with the stack it is running (``sys._current_frames``
      of the hub's thread is the running greenlet's). The worker is left to gunicorn: if the
      request lets go of the hub in time, everything goes on; if not, gunicorn's SIGABRT finds
      the event sent, and the master reports the other requests in flight when it reaps the
      worker.
    - A request still yielding at its own deadline (``WIDE_EVENTS_REQUEST_TIMEOUT``, or
      gunicorn's timeout minus the margin): as under gthread, the event goes out then, with the
      greenlet's suspended stack (``gr_frame``), and the request goes on.
    """

    def __init__(
        self,
        processor: WorkerSpanProcessor | None,
        *,
        deadlines: Deadlines,
        heartbeat: Heartbeat | None,
        kill_budget_s: float,
        trim_through: Collection[str] = (),
    ) -> None:
        super().__init__(processor, deadlines=deadlines, trim_through=trim_through)
        self._budget_s = deadlines.budget_s
        self._current_greenlet: Callable[[], Any] = importlib.import_module("greenlet").getcurrent
        self._greenlets: dict[int, Any] = {}  # by id() of the request, like _in_flight
        # Built in post_worker_init, which runs in the hub's thread, the one serving requests.
        self._hub_thread_id = get_ident()
        self._heartbeat = heartbeat
        self._kill_budget_s = kill_budget_s
        self._hub_held_since: float | None = None  # the heartbeat last found stale

    def watch(self, request: Watched) -> None:
        key = id(request)
        self._greenlets[key] = self._current_greenlet()
        request.due = due = self.due(request.started)
        self._in_flight[key] = request
        if min(due, self._hub_due()) < self._next_wakeup:
            self._wakeup.set()

    def release(self, request: Watched) -> None:
        key = id(request)
        self._in_flight.pop(key, None)
        self._greenlets.pop(key, None)

    def fire_all(self) -> None:
        """gunicorn's SIGABRT came first: its handler runs in the greenlet holding the hub,
        whose request gets its event now; the abort ends the others, the master reports them."""
        current = self._current_greenlet()
        with self._firing:
            for request in list(self._in_flight.values()):
                key = id(request)
                if self._greenlets.get(key) is not current:
                    continue
                if self._in_flight.pop(key, None) is not None:
                    self._time_out(request)

    def _hub_due(self) -> float:
        heartbeat = self._heartbeat
        return float("inf") if heartbeat is None else heartbeat.last + self._kill_budget_s

    def _check_worker(self, now: float) -> float:
        """Send the event of the request holding the hub, once its heartbeat is too old."""
        if self._heartbeat is None or not self._in_flight:
            return float("inf")  # watch() wakes the thread for the next request
        last = self._heartbeat.last
        hub_due = last + self._kill_budget_s
        if now < hub_due:
            return hub_due
        if last != self._hub_held_since:
            self._hub_held_since = last
            self._time_out_hub_holder(hub_due)
        # A heartbeat still to come is no older than now: its deadline is this far at least.
        return now + self._kill_budget_s

    def _time_out_hub_holder(self, hub_due: float) -> None:
        for request in list(self._in_flight.values()):
            key = id(request)
            glet = self._greenlets.get(key)
            if glet is None or not _is_running(glet):
                continue
            with self._firing, _fire_guard:
                if self._in_flight.pop(key, None) is not None:
                    request.due = min(request.due, hub_due)
                    if self._time_out(request):
                        log_timeout(request, self._processor, HUB_NOTE)

    def _stack_of(self, request: Watched) -> str | None:
        glet = self._greenlets.get(id(request))
        if glet is None or glet.dead:
            return None
        frame = glet.gr_frame
        if frame is None:  # running: the hub's thread is in its frames right now
            frame = sys._current_frames().get(self._hub_thread_id)
            if glet.gr_frame is not None:
                frame = glet.gr_frame  # it switched out meanwhile: where it stopped
        return frame_stack(frame, self._trim_through)

    def describe(self, worker_name: str) -> str:
        """What the watchdog does for this worker, in one line for its start-up message."""
        if self._heartbeat is None:
            hub = "no heartbeat deadline with --timeout 0"
        else:
            hub = (
                f"a request holding the hub gets its timeout event {self._kill_budget_s:g}s "
                "after the worker's last heartbeat, with its stack"
            )
        return (
            f"gunicorn-django-wide-events: {worker_name} workers: {hub}; one still yielding "
            f"after {self._budget_s:g}s gets it then, with its stack, and goes on; C code "
            "holding the GIL is reported by the master after gunicorn kills the worker"
        )


def _is_running(glet: Any) -> bool:
    """Started, not dead, and not suspended: the greenlet its thread runs right now."""
    return bool(glet) and glet.gr_frame is None
