"""``async def`` views: what a wide event has to capture when Django serves them from a loop.

Under the ASGI workers many of them run at once in one thread; under the WSGI ones Django runs
each in a loop of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from opentelemetry import trace

from gunicorn_django_wide_events import add_fields

STREAM_CHUNKS = 5
STREAM_CHUNK = b"async chunk\n"


async def async_ok(request: HttpRequest) -> HttpResponse:
    """The plainest successful ``async def`` view."""
    return HttpResponse("async ok", content_type="text/plain")


async def async_attrs(request: HttpRequest) -> HttpResponse:
    """Fields set through the plain OpenTelemetry API and ``add_fields``, from a coroutine."""
    trace.get_current_span().set_attribute("app.async_cart_size", 5)
    add_fields({"app.async_plan": "team"})
    return HttpResponse("async attrs", content_type="text/plain")


def _count_rows(count: int) -> int:
    with connection.cursor() as cursor:
        for index in range(count):
            cursor.execute("SELECT %s", [index])
            cursor.fetchall()
    return count


async def async_log(request: HttpRequest) -> HttpResponse:
    """A warning and an error logged from a coroutine, the error's argument being data."""
    logger = logging.getLogger("djangoapp.async")
    logger.warning("the async provider is slow")
    await asyncio.sleep(0)
    logger.error("async payment declined for card %s", "4242-4242-4242-4242")
    return HttpResponse("logged", content_type="text/plain")


def queries_for(n: int) -> int:
    return 1 + n % 5


async def async_mixed(request: HttpRequest) -> HttpResponse:
    """``?n=N``: yields to the loop, puts N on its event, runs ``queries_for(N)`` queries in a
    thread; many at once must each keep their own fields, timings and SQL."""
    n = int(request.GET.get("n", "1"))
    await asyncio.sleep(0.05)
    trace.get_current_span().set_attribute("app.n", n)
    await sync_to_async(_count_rows)(queries_for(n))
    await asyncio.sleep(0.01)
    return HttpResponse(str(n), content_type="text/plain")


async def async_raise(request: HttpRequest) -> HttpResponse:
    """An unhandled exception in a coroutine, which Django turns into a 500."""
    await asyncio.sleep(0)
    raise RuntimeError("async boom")


async def _async_chunks() -> AsyncIterator[bytes]:
    for index in range(STREAM_CHUNKS):
        if index:
            await asyncio.sleep(0.05)
        yield STREAM_CHUNK


async def async_stream(request: HttpRequest) -> StreamingHttpResponse:
    """A body streamed from an async iterator: the event ends after its last chunk."""
    return StreamingHttpResponse(_async_chunks(), content_type="text/plain")


async def async_sleep(request: HttpRequest) -> HttpResponse:
    """Awaits ``?seconds=``: slow, and cooperative (the loop serves others meanwhile)."""
    await asyncio.sleep(float(request.GET.get("seconds", "1")))
    return HttpResponse("slept", content_type="text/plain")


def spin(seconds: float) -> int:
    """A pure-Python CPU loop that never yields to the event loop."""
    turns = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        turns += 1
    return turns


async def async_cpu(request: HttpRequest) -> HttpResponse:
    """Blocks the event loop with pure-Python work for ``?seconds=``."""
    spin(float(request.GET.get("seconds", "1")))
    return HttpResponse("spun", content_type="text/plain")


async def async_blocking_sleep(request: HttpRequest) -> HttpResponse:
    """Blocks the event loop with a blocking call inside ``async def`` (a classic mistake)."""
    time.sleep(float(request.GET.get("seconds", "1")))
    return HttpResponse("blocked", content_type="text/plain")


async def async_regex_storm(request: HttpRequest) -> HttpResponse:
    """Catastrophic backtracking on the loop's thread: re's C code holds the GIL (the watchdog
    cannot run) but checks for signals, so gunicorn's SIGABRT gets through to a handler."""
    import re

    re.match(r"(a+)+$", "a" * 30 + "b")
    return HttpResponse("matched", content_type="text/plain")
