"""The watchdog of a worker that serves its requests from an event loop (the ASGI workers).

A request there runs out of time in one of two ways:

- **It awaits** (``asyncio.sleep``, an async driver, a slow upstream, a sync view in Django's
  ``sync_to_async`` thread): the loop goes on serving the others and on writing gunicorn's
  heartbeat, so gunicorn never kills the worker. Each request has its own deadline, as in a
  gthread worker (``WIDE_EVENTS_REQUEST_TIMEOUT``): its timeout event carries the stack of where
  it waits, the request goes on, and its later end adds no second event.
- **It blocks the loop** (a pure-Python CPU loop, ``time.sleep`` inside ``async def``): nothing
  else runs, gunicorn's heartbeat stops and gunicorn SIGABRTs the worker ``--timeout`` seconds
  after the last one (under uvicorn-worker, whose SIGABRT is the default action, that is a core
  dump, with neither ``worker_abort`` nor ``worker_exit``). A margin before that, this watchdog
  (a real OS thread) sends the timeout event of every request in flight, the blocking one with
  the stack of the loop's thread, and exits the worker with code 1, as a sync worker's does.

A loop is blocked when it has run no callback for a while: it stamps a tick every
``TICK_S``, so an idle loop (waiting in ``select``) or a busy one is never taken for a blocked
one, whatever the worker class's heartbeat cadence (uvicorn-worker writes it only every half
``--timeout``).

Where a request waits is found among its tasks (Django runs the view in tasks of its own): on
Python 3.12+ a task's context says whose it is; before, the loop's task factory notes the tasks
started in a request's context. Its sync code runs in threads that ``asgiref`` enters the
request's context in; the deepest place wins.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Sequence
from contextvars import Context
from types import FrameType
from typing import Any, Final

import asgiref.sync

from .._config import Config
from .._export.processor import WorkerSpanProcessor
from .._guard import logger, never_raise
from .asgi import AsgiRequestEvent, LoopAttachment
from .event import current_event
from .watchdog import (
    Deadlines,
    FlushBeforeExit,
    Heartbeat,
    NoWatchdog,
    Watchdog,
    Watched,
    deadlines_for,
    exit_worker,
    log_timeout,
    no_watchdog,
    thread_stack,
    timeout_and_margin,
)

TICK_S: Final = 0.2
BLOCKED_AFTER_S: Final = 0.5
"""A loop that ran no callback for this long (two and a half ticks) is blocked."""
RECHECK_S: Final = 0.1
MAX_AWAIT_DEPTH: Final = 256
# Python 3.12+: Task.get_context(); before, the loop's task factory notes a request's tasks.
TASKS_KNOW_THEIR_CONTEXT: Final = hasattr(asyncio.Task, "get_context")
# Frames above the app's on the loop's thread and in asgiref's threads: the same every time.
LOOP_MACHINERY: Final = (asyncio.events.__file__, asgiref.sync.__file__)
ASGIREF_SYNC: Final = asgiref.sync.__file__
ENTERS_CONTEXT: Final = ("run_child", "func", "thread_handler")  # asgiref's, in its threads
_factory_guard: Final = never_raise("loop.task_factory")

TaskFactory = Callable[..., "asyncio.Future[Any]"]


def recording_task_factory(previous: TaskFactory | None) -> TaskFactory:
    """A task factory that notes each task started in a request's context on its event."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        if previous is not None:
            task = previous(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        with _factory_guard:
            event = current_event.get()
            if isinstance(event, AsgiRequestEvent) and isinstance(task, asyncio.Task):
                if event.tasks is None:
                    event.tasks = []
                event.tasks.append(task)
        return task

    return factory


def coroutine_frames(awaitable: Any) -> list[FrameType]:
    """The frames of a suspended coroutine and of what it awaits, outermost first."""
    frames: list[FrameType] = []
    while awaitable is not None and len(frames) < MAX_AWAIT_DEPTH:
        frame = (
            getattr(awaitable, "cr_frame", None)
            or getattr(awaitable, "gi_frame", None)
            or getattr(awaitable, "ag_frame", None)
        )
        if frame is None:
            break
        frames.append(frame)
        awaitable = (
            getattr(awaitable, "cr_await", None)
            or getattr(awaitable, "gi_yieldfrom", None)
            or getattr(awaitable, "ag_await", None)
        )
    return frames


def format_frames(frames: Sequence[FrameType], trim_through: Collection[str]) -> str:
    """A coroutine chain as a stack, below the server's and the package's frames.

    As ``thread_stack`` trims through the last frame from a file in ``trim_through``, except
    that what the innermost frames await there (asgiref's ``sync_to_async``) stays.
    """
    outside = [i for i, frame in enumerate(frames) if frame.f_code.co_filename not in trim_through]
    if outside:
        entries = [i for i in range(outside[-1]) if frames[i].f_code.co_filename in trim_through]
        if entries:
            frames = frames[entries[-1] + 1 :]
    summary = traceback.StackSummary.extract((frame, frame.f_lineno) for frame in frames)
    return "".join(summary.format())


def holds_context_of(frame: FrameType, event: AsgiRequestEvent) -> bool:
    """True if ``frame`` (asgiref's, running sync code) entered ``event``'s request context."""
    for value in frame.f_locals.values():
        ctx = value if isinstance(value, Context) else getattr(value, "__self__", None)
        if isinstance(ctx, Context) and ctx.get(current_event) is event:
            return True
    return False


def thread_running_sync_code_of(event: AsgiRequestEvent, skip: Collection[int]) -> int | None:
    """The thread running the request's sync code (a sync view, a sync middleware), if any.

    asgiref runs it in a context it entered in its own frames (``thread_handler``, ``func``,
    ``run_child``). A thread whose innermost asgiref frame is ``AsyncToSync.__call__`` only
    waits for the loop to run the rest of the request: where it waits is on the loop.
    """
    for thread_id, top in sys._current_frames().items():
        if thread_id in skip:
            continue
        innermost_asgiref: FrameType | None = None
        frame: FrameType | None = top
        while frame is not None:
            if frame.f_code.co_filename == ASGIREF_SYNC:
                if innermost_asgiref is None:
                    innermost_asgiref = frame
                if frame.f_code.co_name in ENTERS_CONTEXT and holds_context_of(frame, event):
                    if innermost_asgiref.f_code.co_name == "__call__":
                        break  # in async_to_sync: waiting for the loop
                    return thread_id
            frame = frame.f_back
    return None


class EventLoopWatch(LoopAttachment):
    """The event loop the worker serves from, as the watchdog's thread sees it."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id = 0
        self.ticked_at = time.monotonic()

    # -- in the loop ------------------------------------------------------------------------

    def attach(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is self.loop:
            return
        self.loop = loop
        self.thread_id = threading.get_ident()
        self._tick(loop)
        if not TASKS_KNOW_THEIR_CONTEXT:
            loop.set_task_factory(recording_task_factory(loop.get_task_factory()))

    def request_started(self, event: AsgiRequestEvent) -> None:
        if not TASKS_KNOW_THEIR_CONTEXT:
            task = asyncio.current_task()
            event.tasks = [task] if task is not None else []

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is self.loop:
            self.ticked_at = time.monotonic()
            loop.call_later(TICK_S, self._tick, loop)

    # -- from the watchdog's thread ---------------------------------------------------------

    def is_blocked(self, now: float) -> bool:
        return self.loop is not None and now - self.ticked_at > BLOCKED_AFTER_S

    def tasks_of(self, event: AsgiRequestEvent) -> list[asyncio.Task[Any]]:
        """The request's tasks that have not ended."""
        if not TASKS_KNOW_THEIR_CONTEXT:
            return [task for task in event.tasks or () if not task.done()]
        if self.loop is None:
            return []
        return [
            task
            for task in asyncio.all_tasks(self.loop)
            if task.get_context().get(current_event) is event  # type: ignore[attr-defined]
        ]

    def runs_now(self, event: AsgiRequestEvent) -> bool:
        """True if the loop's thread is running one of the request's tasks at this moment."""
        running = asyncio.current_task(self.loop) if self.loop is not None else None
        return running is not None and any(task is running for task in self.tasks_of(event))

    def stack_of(self, event: AsgiRequestEvent, trim_through: Collection[str]) -> str | None:
        """Where the request is: on the loop's thread if it blocks it; in the thread running
        its sync code; in what the view's task awaits; or, before Django resolved the URL (or
        after the view), in the deepest chain of awaits of its tasks."""
        tasks = self.tasks_of(event)
        running = asyncio.current_task(self.loop) if self.loop is not None else None
        if running is not None and any(task is running for task in tasks):
            return thread_stack(self.thread_id, trim_through)
        thread_id = thread_running_sync_code_of(event, skip=(self.thread_id, threading.get_ident()))
        if thread_id is not None:
            return thread_stack(thread_id, trim_through)
        view_task = event.view_task
        if view_task is not None and not view_task.done():
            chain = coroutine_frames(view_task.get_coro())
        else:
            chain = max((coroutine_frames(task.get_coro()) for task in tasks), key=len, default=[])
        return format_frames(chain, trim_through) if chain else None


class LoopWatchdog(Watchdog):
    """The watchdog of an event-loop worker: deadlines per request, and the blocked loop."""

    def __init__(
        self,
        processor: WorkerSpanProcessor | None,
        *,
        deadlines: Deadlines,
        loop: EventLoopWatch,
        heartbeat: Heartbeat | None,
        kill_budget_s: float,
        trim_through: Collection[str] = (),
        flush_before_exit: FlushBeforeExit | None = None,
    ) -> None:
        super().__init__(
            processor, deadlines=deadlines, trim_through=(*trim_through, *LOOP_MACHINERY)
        )
        self._flush_before_exit = flush_before_exit
        self._loop = loop
        self._heartbeat = heartbeat
        self._kill_budget_s = kill_budget_s

    def watch(self, request: Watched) -> None:
        super().watch(request)
        # An idle watchdog sleeps for a request budget: wake it for an earlier kill.
        if self._blocked_loop_due() < self._next_wakeup:
            self._wakeup.set()

    def _blocked_loop_due(self) -> float:
        """When the watchdog must act if the loop has been blocked since the last heartbeat."""
        heartbeat = self._heartbeat
        return heartbeat.last + self._kill_budget_s if heartbeat is not None else float("inf")

    def _check_worker(self, now: float) -> float:
        due = self._blocked_loop_due()
        if due > now:
            return due
        if self._loop.is_blocked(now):
            self._time_out_blocked_worker(due, now)
        return now + RECHECK_S  # the heartbeat is late, the loop is not: it comes soon

    def _stack_of(self, request: Watched) -> str | None:
        if isinstance(request, AsgiRequestEvent):
            return self._loop.stack_of(request, self._trim_through)
        return super()._stack_of(request)

    def _time_out_blocked_worker(self, due: float, now: float) -> None:
        """gunicorn is about to kill the worker: every request in flight gets its timeout
        event now, then the worker exits on its own terms."""
        with self._firing, never_raise("watchdog.blocked_loop"):
            requests = list(self._in_flight.values())
            blocking = [
                request.describe()
                for request in requests
                if isinstance(request, AsgiRequestEvent) and self._loop.runs_now(request)
            ]
            timed_out = []
            for request in requests:
                if self._in_flight.pop(id(request), None) is None:
                    continue
                request.due = min(request.due, due)  # the worker's deadline is the request's
                if self._time_out(request):
                    timed_out.append(request)
            for request in timed_out:
                log_timeout(request, self._processor)
            logger.error(
                "gunicorn-django-wide-events: the event loop has run nothing for %.1fs "
                "(blocked by %s) and gunicorn's timeout is near: the worker exits",
                now - self._loop.ticked_at,
                ", ".join(blocking) or "code outside the requests in flight",
            )
            # The timeouts' duration points go out with their child spans, before the exit.
            exit_worker(self._processor, self._flush_before_exit)


def loop_watchdog_for(
    worker: Any,
    config: Config,
    processor: WorkerSpanProcessor | None,
    loop: EventLoopWatch,
    *,
    trim_through: Collection[str] = (),
    flush_before_exit: FlushBeforeExit | None = None,
) -> LoopWatchdog | NoWatchdog:
    """The watchdog an event-loop worker gets, started; ``no_watchdog`` with nothing to watch."""
    timeout, margin = timeout_and_margin(worker, config)
    if not timeout and not config.request_timeout_s:
        return no_watchdog  # --timeout 0 and no request timeout: nothing to watch
    watchdog = LoopWatchdog(
        processor,
        deadlines=deadlines_for(worker, timeout, margin, config.request_timeout_s),
        loop=loop,
        # gunicorn kills an event-loop worker only for a stale heartbeat, never for a request.
        heartbeat=Heartbeat(worker.tmp) if timeout else None,
        kill_budget_s=timeout - margin,
        trim_through=trim_through,
        flush_before_exit=flush_before_exit,
    )
    watchdog.start()
    return watchdog
