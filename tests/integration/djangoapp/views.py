"""Views that each exercise one behaviour a wide event has to capture."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator

from django.db import connection
from django.http import (
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.csrf import csrf_exempt
from opentelemetry import trace

from gunicorn_django_wide_events import add_fields

STREAM_CHUNKS = 5
STREAM_CHUNK = b"chunk\n"


def ok(request: HttpRequest) -> HttpResponse:
    """The plainest successful request."""
    return HttpResponse("ok", content_type="text/plain")


def item_detail(request: HttpRequest, item_id: int) -> JsonResponse:
    """A parametrised route: the event must carry the template, not the id."""
    return JsonResponse({"id": item_id})


def raise_error(request: HttpRequest) -> HttpResponse:
    """An unhandled exception, which Django turns into a 500."""
    raise RuntimeError("boom")


SLOW_COUNT = (
    "WITH RECURSIVE counter(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM counter WHERE n < %s) "
    "SELECT count(*) FROM counter"
)


def sql(request: HttpRequest) -> HttpResponse:
    """Four queries: one run twice, and one clearly slowest (sqlite counting to 300000)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, name TEXT)")
        cursor.execute("SELECT name FROM item WHERE id = %s", [1])
        cursor.fetchall()
        cursor.execute("SELECT name FROM item WHERE id = %s", [2])
        cursor.fetchall()
        cursor.execute(SLOW_COUNT, [300000])
        cursor.fetchall()
    return HttpResponse("sql", content_type="text/plain")


def slow(request: HttpRequest) -> HttpResponse:
    """Takes ``?seconds=`` to answer: durations, timeouts, graceful shutdown."""
    time.sleep(float(request.GET.get("seconds", "1")))
    return HttpResponse("slow", content_type="text/plain")


def _chunks() -> Iterator[bytes]:
    for index in range(STREAM_CHUNKS):
        if index:
            time.sleep(0.05)
        yield STREAM_CHUNK


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """A streamed body: the event must end when the body is done, not before."""
    return StreamingHttpResponse(_chunks(), content_type="text/plain")


LARGE_STREAM_CHUNK = bytes(256 * 1024)
LARGE_STREAM_CHUNKS = 256  # 64 MiB: far more than any socket buffer holds


def stream_large(request: HttpRequest) -> StreamingHttpResponse:
    """More than the sockets can buffer: the worker is still writing when a client that reads
    only the start goes away, whatever the timing."""
    return StreamingHttpResponse(
        (LARGE_STREAM_CHUNK for _ in range(LARGE_STREAM_CHUNKS)), content_type="text/plain"
    )


def _chunks_then_error() -> Iterator[bytes]:
    yield STREAM_CHUNK
    raise RuntimeError("mid-stream")


def _error_before_the_first_chunk() -> Iterator[bytes]:
    raise RuntimeError("before the first chunk")
    yield b"never"  # a generator, failing when gunicorn asks for its first chunk


def stream_raise_at_once(request: HttpRequest) -> StreamingHttpResponse:
    """Fails before anything was sent: gunicorn answers the 500 itself (``handle_error``)."""
    return StreamingHttpResponse(_error_before_the_first_chunk(), content_type="text/plain")


def stream_raise(request: HttpRequest) -> StreamingHttpResponse:
    """Fails after the status line was sent, so the 200 is a lie."""
    return StreamingHttpResponse(_chunks_then_error(), content_type="text/plain")


def attrs(request: HttpRequest) -> HttpResponse:
    """Application code enriching the event: plain OpenTelemetry API and ``add_fields``.

    ``?many=N`` adds N more fields, to go past the SDK's default limit of 128 attributes.
    """
    trace.get_current_span().set_attribute("app.cart_size", 3)
    add_fields({"app.plan": "pro"})
    many = int(request.GET.get("many", "0"))
    add_fields({f"app.field_{index:03d}": index for index in range(many)})
    return HttpResponse("attrs", content_type="text/plain")


def status(request: HttpRequest, code: int) -> HttpResponse:
    """An arbitrary status code chosen by the test."""
    return HttpResponse(status=code)


@csrf_exempt
def echo(request: HttpRequest) -> HttpResponse:
    """Reads the request body, so body sizes can be checked."""
    return HttpResponse(str(len(request.body)), content_type="text/plain")


SLOW_C_QUERY = (
    "WITH RECURSIVE counter(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM counter WHERE n < %s) "
    "SELECT count(*) FROM counter WHERE n %% 7 = %s"
)


def slow_sql(request: HttpRequest) -> HttpResponse:
    """A query that runs for minutes inside sqlite's C code, with the GIL released."""
    with connection.cursor() as cursor:
        cursor.execute(SLOW_C_QUERY, [10**10, 3])
    return HttpResponse("done", content_type="text/plain")


def hold_gil(request: HttpRequest) -> HttpResponse:
    """C code that holds the GIL, with signals blocked, far longer than any timeout: neither
    the watchdog nor a signal handler can run before gunicorn's SIGKILL ends the worker."""
    import ctypes
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT, signal.SIGTERM, signal.SIGINT})
    libc = ctypes.PyDLL(None)  # a PyDLL call keeps the GIL for its whole duration
    libc.sleep(60)
    return HttpResponse("held", content_type="text/plain")


def regex_storm(request: HttpRequest) -> HttpResponse:
    """Catastrophic backtracking in re's C code: the GIL is held (the watchdog cannot run),
    but re checks for signals, so gunicorn's SIGABRT gets through to worker_abort."""
    import re

    re.match(r"(a+)+$", "a" * 30 + "b")
    return HttpResponse("matched", content_type="text/plain")


def crash(request: HttpRequest) -> HttpResponse:
    """The worker dies mid-request without a word (as after a segfault or the OOM killer)."""
    import os
    import signal

    os.kill(os.getpid(), getattr(signal, request.GET.get("signal", "SIGKILL")))
    time.sleep(10)
    return HttpResponse("unreachable", content_type="text/plain")


CRASH_QUERY = "SELECT wide_events_crash_now()"


def crash_in_sql(request: HttpRequest) -> HttpResponse:
    """The worker dies while a statement runs: sqlite calls back into Python mid-query, and
    that call SIGKILLs the process, as the OOM killer would."""
    import os
    import signal

    connection.ensure_connection()
    connection.connection.create_function(
        "wide_events_crash_now", 0, lambda: os.kill(os.getpid(), signal.SIGKILL)
    )
    with connection.cursor() as cursor:
        cursor.execute(CRASH_QUERY)
    return HttpResponse("unreachable", content_type="text/plain")


def stream_stall(request: HttpRequest) -> StreamingHttpResponse:
    """Sends one chunk, then stalls far past any timeout: the headers are already out."""

    def chunks() -> Iterator[bytes]:
        yield b"first chunk\n"
        time.sleep(60)
        yield b"never\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def log_warning(request: HttpRequest) -> HttpResponse:
    """Logs a warning through a logger that propagates to the root (unlike ``django.*``)."""
    logging.getLogger("djangoapp").warning("a warning from the worker")
    return HttpResponse("logged", content_type="text/plain")


def password_reset_confirm(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    """Like Django's ``PasswordResetConfirmView``: a live token in the path, then a redirect to a
    URL without it. ``?then=sleep`` gets stuck (a timeout), ``?then=crash`` kills the worker."""
    then = request.GET.get("then")
    if then == "sleep":
        time.sleep(60)
    elif then == "crash":
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    response = HttpResponse(status=302)
    response["Location"] = f"/reset/{uidb64}/set-password/"
    return response


def process_state(request: HttpRequest) -> JsonResponse:
    """What the worker inherited: the objects the master froze, which ``?module=`` are loaded."""
    import gc
    import sys

    modules = request.GET.getlist("module")
    return JsonResponse(
        {
            "frozen": gc.get_freeze_count(),
            "loaded": {name: name in sys.modules for name in modules},
        }
    )


LOGGED_ERROR_TEMPLATE = "payment declined for card %s"
LOGGED_CARD_NUMBER = "4242-4242-4242-4242"


def log_levels(request: HttpRequest) -> HttpResponse:
    """Two warnings and an error whose argument is data; an info and a debug, not counted."""
    logger = logging.getLogger("djangoapp.payments")
    logger.debug("debug records are not even made at this level")
    logger.info("asking the payment provider")
    logger.warning("the payment provider is slow")
    logger.warning("retrying the payment provider")
    logger.error(LOGGED_ERROR_TEMPLATE, LOGGED_CARD_NUMBER)
    return HttpResponse("logged", content_type="text/plain")


def log_in_threads(request: HttpRequest) -> HttpResponse:
    """Errors logged by two other threads (one running in a copy of the request's context),
    and one warning by the request's own thread."""
    logger = logging.getLogger("djangoapp")
    plain = threading.Thread(target=logger.error, args=("from a thread of the view",))
    copied = contextvars.copy_context()
    in_context = threading.Thread(
        target=copied.run, args=(logger.error, "from a thread in the request's context")
    )
    for thread in (plain, in_context):
        thread.start()
        thread.join()
    logger.warning("from the request's own thread")
    return HttpResponse("logged", content_type="text/plain")


def log_then_sleep(request: HttpRequest) -> HttpResponse:
    """Logs before its deadline, sleeps ``?seconds=`` past it, and logs again after."""
    logger = logging.getLogger("djangoapp")
    logger.warning("before the deadline")
    logger.error("before the deadline, for order %s", LOGGED_CARD_NUMBER)
    time.sleep(float(request.GET.get("seconds", "3")))
    logger.error("after the deadline")
    logger.warning("after the deadline")
    return HttpResponse("slept", content_type="text/plain")


def interleaved(request: HttpRequest) -> HttpResponse:
    """``?tag=N``: ``1 + N % 3`` statements naming N in their text, each after a short sleep
    (cooperative under gevent, so that concurrent requests interleave), and N on the event
    through the plain OpenTelemetry API: each event shows whether it kept to its own request."""
    tag = int(request.GET["tag"])
    trace.get_current_span().set_attribute("app.tag", tag)
    with connection.cursor() as cursor:
        for _ in range(1 + tag % 3):
            time.sleep(0.05)
            cursor.execute(f"SELECT {tag} AS tag_{tag}")  # an int: no injection
            cursor.fetchall()
    return HttpResponse(str(tag), content_type="text/plain")


def cpu_loop(request: HttpRequest) -> HttpResponse:
    """Pure-Python work for ``?seconds=``: it never yields, so under gevent it holds the hub
    (every other request and gunicorn's heartbeat wait), while the GIL still changes hands."""
    deadline = time.monotonic() + float(request.GET.get("seconds", "1"))
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
    return HttpResponse(str(spins), content_type="text/plain")


def blocking_sleep(request: HttpRequest) -> HttpResponse:
    """A blocking call gevent did not patch (the original ``time.sleep``), ``?seconds=`` long:
    under gevent it blocks the hub with the GIL released, as a C driver's call would."""
    sleep = time.sleep
    try:
        from gevent.monkey import get_original
    except ImportError:
        pass
    else:
        sleep = get_original("time", "sleep")
    sleep(float(request.GET.get("seconds", "1")))
    return HttpResponse("slept", content_type="text/plain")
