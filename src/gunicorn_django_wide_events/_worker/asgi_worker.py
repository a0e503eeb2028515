"""The ASGI worker classes: where each holds the app it serves, and who handles gunicorn's abort.

- gunicorn's own ``asgi`` worker (``gunicorn.workers.gasgi.ASGIWorker``, gunicorn 24+) loads the
  app into ``worker.asgi``; its protocol reads it there for each connection.
- uvicorn-worker's ``UvicornWorker`` (and uvicorn's own, deprecated, ``uvicorn.workers``) keeps
  it in gunicorn's ``worker.wsgi`` and hands that to uvicorn's config when the worker runs.
- Any other worker class whose loaded ``wsgi`` is an ASGI application (a coroutine function, or
  an object whose ``__call__`` is one, as Django's ``ASGIHandler``) is taken for an ASGI worker
  too: what decides is the app, not the class's name.

gunicorn SIGABRTs a worker when its heartbeat is older than ``--timeout``: for an event-loop
worker, when its loop is blocked. Neither class can then run gunicorn's ``worker_abort``:
gunicorn's waits for the loop to run its handler (``loop.add_signal_handler``), and
uvicorn-worker resets SIGABRT to its default action, a core dump (gunicorn #3403,
uvicorn-worker #32). ``abort_in_main_thread`` puts gunicorn's own ``Worker.handle_abort`` back,
which runs in the main thread between two bytecodes of whatever blocks the loop: the timeout
events go out (``worker_abort``), the worker exits with code 1 and ``worker_exit`` runs. The
watchdog sends them before that anyway (``_worker/loop_watchdog.py``); this is for the C code
that holds the GIL but lets signals through (``re``), and for the user's own ``worker_abort``.
"""

from __future__ import annotations

import inspect
import signal
from typing import Any, Final

from .._guard import never_raise

try:  # gunicorn 24+
    from gunicorn.workers.gasgi import ASGIWorker
except ImportError:  # pragma: no cover - older gunicorn has no ASGI worker
    ASGIWorker = None

_abort_guard: Final = never_raise("asgi_worker.abort_handler")


def is_asgi_app(app: Any) -> bool:
    """An ASGI 3 application: called with (scope, receive, send), it returns a coroutine."""
    if inspect.isclass(app):
        return False
    call = type(app).__call__ if callable(app) else None
    return inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call)


def is_gunicorn_asgi_worker(worker: Any) -> bool:
    """gunicorn's own ``asgi`` worker (or a subclass)."""
    return ASGIWorker is not None and isinstance(worker, ASGIWorker)


def asgi_app_attribute(worker: Any) -> str | None:
    """The worker's attribute holding the ASGI app it serves; None for a WSGI worker."""
    if is_gunicorn_asgi_worker(worker):
        return "asgi"
    if is_asgi_app(getattr(worker, "wsgi", None)):
        return "wsgi"
    return None


def abort_in_main_thread(worker: Any) -> None:
    """Handle gunicorn's SIGABRT with its ``Worker.handle_abort``, not in the (blocked) loop."""
    with _abort_guard:
        handle_abort = getattr(worker, "handle_abort", None)
        if handle_abort is None:
            return
        loop = getattr(worker, "loop", None)  # gunicorn's asgi worker registered it there
        if loop is not None and not loop.is_closed():
            loop.remove_signal_handler(signal.SIGABRT)
        signal.signal(signal.SIGABRT, handle_abort)
