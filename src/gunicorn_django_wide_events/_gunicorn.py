"""How the package plugs into gunicorn with no change to its command line or config file.

``Arbiter.setup`` runs in the master when gunicorn starts and again on every HUP reload, after
the configuration (the user's hooks included) is loaded and before any worker is forked. That
is where our hooks are chained with the user's, where the contrib Django instrumentation steps
aside, and where the master hands export over to the workers (``ForkSafeExport.take_over``).
``Arbiter.manage_workers``, which forks the workers gunicorn is missing and runs once at start
and once per turn of the master's loop, is where the monitor thread resumes as soon as gunicorn
is done forking (see ``monitor.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

import gunicorn.arbiter
from gunicorn.arbiter import Arbiter

from ._guard import never_raise
from ._hooks import GunicornHooks
from ._worker.contrib_django import retire_contrib_django_spans

_CHAINED: Final = "__wide_events_chained__"
_setup_guard: Final = never_raise("gunicorn.arbiter_setup")
_tick_guard: Final = never_raise("gunicorn.arbiter_tick")

_original_setup: Callable[[Arbiter, Any], None] | None = None


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


def attach_to_arbiter(hooks: GunicornHooks) -> None:
    global _original_setup  # noqa: PLW0603
    if _original_setup is not None:
        return
    original = _original_setup = Arbiter.setup

    def setup(arbiter: Arbiter, app: Any) -> None:
        # Before the original: with --preload it builds Django's middleware chain.
        with _setup_guard:
            retire_contrib_django_spans()
        original(arbiter, app)
        with _setup_guard:
            chain_hooks(arbiter.cfg, hooks)
            hooks.arbiter_setup(arbiter)

    Arbiter.setup = setup

    # manage_workers runs at start and once per turn of the arbiter's loop, in every gunicorn
    # version; the monitor resumes right after its forks, not a turn (up to a second) later.
    original_manage_workers = Arbiter.manage_workers

    def manage_workers(arbiter: Arbiter) -> None:
        original_manage_workers(arbiter)
        with _tick_guard:
            hooks.arbiter_tick(arbiter)

    manage_workers.__wrapped__ = original_manage_workers  # type: ignore[attr-defined]
    Arbiter.manage_workers = manage_workers
    # child_exit is not told how a worker ended; this records it (see fallback.ExitStatuses).
    gunicorn.arbiter.os = hooks.exit_statuses


def detach_from_arbiter() -> None:
    global _original_setup  # noqa: PLW0603
    if _original_setup is not None:
        Arbiter.setup = _original_setup
        Arbiter.manage_workers = Arbiter.manage_workers.__wrapped__
        _original_setup = None
        gunicorn.arbiter.os = os
