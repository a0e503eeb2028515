"""The one place that patches gunicorn; ``unpatch_gunicorn`` undoes all of it.

- ``Arbiter.setup`` runs in the master when gunicorn starts and again on every HUP reload, after
  the configuration (the user's hooks included) is loaded and before any worker is forked. That
  is where our hooks are chained with the user's, where the contrib Django instrumentation steps
  aside, and where the master hands export over to the workers.
- ``Arbiter.manage_workers`` forks the workers gunicorn is missing, once at start and once per
  turn of the master's loop: right after it, the master's metrics are exported when due and the
  monitor thread resumes (see ``_master/metrics.py`` and ``_master/monitor.py``).
- ``gunicorn.arbiter.os``: a proxy that notes each reaped child's wait status, which
  ``child_exit`` is not told (see ``_master/fallback.py``).
- ``gunicorn.util.write_error``: the one place gunicorn writes its own error answers; the
  rejected request's event takes the status (see ``_worker/rejected.py``).
- ``gunicorn.workers.base.default_environ``: the environ of the access log line that
  ``Worker.handle_error`` writes for its own answers; it gets the event's ids (same module).

Everything else is set through gunicorn's own hooks (``_hooks.py``), in the worker after fork:
the worker's app and ``handle_error`` (``_worker/worker.py``), and, under gunicorn's ``asgi``
worker, ``ASGIProtocol._send_error_response`` and the SIGABRT handler (``_worker/asgi_rejected.py``,
``_worker/asgi_worker.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import gunicorn.arbiter
import gunicorn.util
import gunicorn.workers.base
from gunicorn.arbiter import Arbiter

from ._guard import never_raise
from ._hooks import GunicornHooks
from ._worker.contrib_django import retire_contrib_django_spans
from ._worker.rejected import add_event_ids, note_error_status

_CHAINED: Final = "__wide_events_chained__"
_setup_guard: Final = never_raise("gunicorn.arbiter_setup")
_tick_guard: Final = never_raise("gunicorn.arbiter_tick")

# What the patches replaced, to put back; empty while gunicorn is not patched.
_originals: dict[str, Any] = {}


def chain(first: Callable[..., Any], then: Callable[..., Any]) -> Callable[..., Any]:
    def chained(*args: Any) -> None:
        first(*args)
        then(*args)

    setattr(chained, _CHAINED, True)
    return chained


def chain_hooks(cfg: Any, hooks: GunicornHooks) -> None:
    """Run our hooks together with the user's hooks of the same name."""
    for name in (*hooks.RUN_FIRST, *hooks.RUN_LAST):
        setting = cfg.settings[name]
        user_hook = setting.get()
        if getattr(user_hook, _CHAINED, False):
            continue
        ours = getattr(hooks, name)
        # Assigned directly: gunicorn's validator would want a plain function of fixed arity.
        if name in hooks.RUN_FIRST:
            setting.value = chain(ours, user_hook)
        else:
            setting.value = chain(user_hook, ours)


def patch_gunicorn(hooks: GunicornHooks) -> None:
    if _originals:
        return
    original_setup = _originals["setup"] = Arbiter.setup
    original_manage_workers = _originals["manage_workers"] = Arbiter.manage_workers
    original_write_error = _originals["write_error"] = gunicorn.util.write_error
    original_default_environ = _originals["default_environ"] = gunicorn.workers.base.default_environ
    _originals["os"] = gunicorn.arbiter.os

    def setup(arbiter: Arbiter, app: Any) -> None:
        # Before the original: with --preload it builds Django's middleware chain.
        with _setup_guard:
            retire_contrib_django_spans()
        original_setup(arbiter, app)
        with _setup_guard:
            chain_hooks(arbiter.cfg, hooks)
            hooks.setup(arbiter)

    def manage_workers(arbiter: Arbiter) -> None:
        original_manage_workers(arbiter)
        with _tick_guard:
            hooks.workers_managed(arbiter)

    def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
        note_error_status(status_int)
        original_write_error(sock, status_int, reason, mesg)

    def default_environ(req: Any, sock: Any, cfg: Any) -> dict[str, Any]:
        environ: dict[str, Any] = original_default_environ(req, sock, cfg)
        add_event_ids(environ)
        return environ

    Arbiter.setup = setup
    Arbiter.manage_workers = manage_workers
    gunicorn.util.write_error = write_error
    gunicorn.workers.base.default_environ = default_environ
    gunicorn.arbiter.os = hooks.master.exit_statuses


def unpatch_gunicorn() -> None:
    if not _originals:
        return
    Arbiter.setup = _originals.pop("setup")
    Arbiter.manage_workers = _originals.pop("manage_workers")
    gunicorn.util.write_error = _originals.pop("write_error")
    gunicorn.workers.base.default_environ = _originals.pop("default_environ")
    gunicorn.arbiter.os = _originals.pop("os")
