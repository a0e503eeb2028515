"""The event loop seen from the watchdog's thread: blocked or not, and where a request is."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan

from gunicorn_django_wide_events._worker import asgi
from gunicorn_django_wide_events._worker.asgi import AsgiRequestEvent
from gunicorn_django_wide_events._worker.event import current_event
from gunicorn_django_wide_events._worker.loop_watchdog import (
    BLOCKED_AFTER_S,
    LOOP_MACHINERY,
    EventLoopWatch,
    coroutine_frames,
    format_frames,
)
from tests.waiting import wait_until

TRIM = (asgi.__file__, *LOOP_MACHINERY)


def new_event() -> AsgiRequestEvent:
    return AsgiRequestEvent(NonRecordingSpan(INVALID_SPAN_CONTEXT), "GET")


class LoopInThread:
    """An event loop running in a thread of its own, as a worker's main thread runs it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.watch = EventLoopWatch()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self._attach())

    async def _attach(self) -> None:
        self.watch.attach()

    async def _cancel_the_rest(self) -> None:
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        """Cancel the requests a test left waiting, then stop: a pending task collected with
        its closed loop would say so on stderr ("Task was destroyed but it is pending!")."""
        with contextlib.suppress(concurrent.futures.TimeoutError):
            self.run(self._cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[LoopInThread]:
    running = LoopInThread()
    yield running
    running.close()


def in_request(
    event: AsgiRequestEvent, body: Callable[[], Coroutine[Any, Any, Any]], watch: EventLoopWatch
) -> Coroutine[Any, Any, Any]:
    """What the ASGI middleware does: the event current in the request's task, then the app."""

    async def request() -> Any:
        current_event.set(event)
        watch.request_started(event)
        return await body()

    return request()


async def inner_wait(done: asyncio.Event) -> None:
    await done.wait()


async def outer_wait(done: asyncio.Event) -> None:
    await inner_wait(done)


def test_the_frames_of_a_suspended_coroutine_follow_what_it_awaits() -> None:
    async def main() -> list[str]:
        done = asyncio.Event()
        task = asyncio.create_task(outer_wait(done))
        await asyncio.sleep(0)
        names = [frame.f_code.co_name for frame in coroutine_frames(task.get_coro())]
        done.set()
        await task
        return names

    assert asyncio.run(main())[:3] == ["outer_wait", "inner_wait", "wait"]


SERVER_FILE = "/server/protocol.py"
_server_code: dict[str, Any] = {"outer_wait": outer_wait}
exec(  # a coroutine of "the server", which calls the app  # noqa: S102
    compile("async def serve(done):\n    await outer_wait(done)\n", SERVER_FILE, "exec"),
    _server_code,
)


def test_a_chain_is_shown_below_the_servers_frames_but_keeps_what_it_awaits() -> None:
    """Leading frames from the trimmed files go; what the app awaits there stays."""

    async def main() -> str:
        done = asyncio.Event()
        task = asyncio.create_task(_server_code["serve"](done))
        await asyncio.sleep(0)
        frames = coroutine_frames(task.get_coro())
        stack = format_frames(frames, {SERVER_FILE, asyncio.locks.__file__})
        done.set()
        await task
        return stack

    stack = asyncio.run(main())
    assert SERVER_FILE not in stack
    assert "outer_wait" in stack
    assert "inner_wait" in stack
    assert "locks.py" in stack


def test_an_idle_loop_is_not_blocked_and_a_loop_stuck_in_one_call_is(
    loop: LoopInThread,
) -> None:
    assert not loop.watch.is_blocked(time.monotonic() + BLOCKED_AFTER_S / 2)
    time.sleep(BLOCKED_AFTER_S * 2)  # the loop idles, ticking
    assert not loop.watch.is_blocked(time.monotonic())

    release = threading.Event()
    loop.loop.call_soon_threadsafe(release.wait, 30)  # blocks the loop's thread
    try:
        wait_until(lambda: loop.watch.is_blocked(time.monotonic()), what="a blocked loop")
    finally:
        release.set()
    wait_until(lambda: not loop.watch.is_blocked(time.monotonic()), what="the loop again")


def test_the_tasks_a_request_starts_are_its_own(loop: LoopInThread) -> None:
    event, other = new_event(), new_event()
    done = asyncio.Event()

    async def body() -> None:
        child = asyncio.create_task(inner_wait(done))
        await done.wait()
        await child

    async def setup() -> None:
        loop.start(in_request(event, body, loop.watch))
        loop.start(in_request(other, done.wait, loop.watch))

    loop.run(setup())
    wait_until(lambda: len(loop.watch.tasks_of(event)) == 2, what="the request's two tasks")

    assert len(loop.watch.tasks_of(other)) == 1
    loop.loop.call_soon_threadsafe(done.set)
    wait_until(lambda: not loop.watch.tasks_of(event), what="the tasks' end")


def test_a_request_awaiting_in_its_view_task_is_shown_there(loop: LoopInThread) -> None:
    """The task Django resolved the URL in runs the view: its chain is the stack."""
    event = new_event()

    async def view() -> None:
        await asyncio.sleep(30)

    async def body() -> None:
        async def resolve_then_view() -> None:
            event.set_route("slow/", "app.views.view")
            await view()

        await asyncio.create_task(resolve_then_view())

    future = loop.start(in_request(event, body, loop.watch))
    wait_until(lambda: event.view_task is not None, what="the view's task")
    time.sleep(0.05)
    stack = loop.watch.stack_of(event, TRIM)
    future.cancel()

    assert stack is not None
    assert "in view" in stack
    assert "asyncio.sleep(30)" in stack


def test_a_request_blocking_the_loop_is_shown_on_the_loops_thread(loop: LoopInThread) -> None:
    event = new_event()
    release = threading.Event()

    async def body() -> None:
        release.wait(30)  # a blocking call inside async def

    loop.start(in_request(event, body, loop.watch))
    wait_until(lambda: loop.watch.is_blocked(time.monotonic()), what="a blocked loop")
    try:
        running = loop.watch.runs_now(event)
        stack = loop.watch.stack_of(event, TRIM)
    finally:
        release.set()

    assert running
    assert stack is not None
    assert "release.wait(30)" in stack
    assert "base_events.py" not in stack  # the loop's own frames are left out


def test_a_request_running_sync_code_is_shown_in_its_thread(loop: LoopInThread) -> None:
    """A sync view run by asgiref's sync_to_async: the thread that entered its context."""
    event = new_event()
    release = threading.Event()

    def sync_view() -> None:
        release.wait(30)

    async def body() -> None:
        await sync_to_async(sync_view)()

    loop.start(in_request(event, body, loop.watch))
    time.sleep(0.2)
    try:
        stack = loop.watch.stack_of(event, TRIM)
    finally:
        release.set()

    assert stack is not None
    assert "in sync_view" in stack
    assert "thread_handler" not in stack  # asgiref's frames are left out
