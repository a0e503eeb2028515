"""Real OS threads and locks, in a process gevent monkey-patched too.

gunicorn's gevent worker patches ``threading``, ``_thread`` and ``time`` as it starts (after
``post_fork``, before ``post_worker_init``); a gunicorn config file may patch the master too.
From then on a ``threading.Thread`` is a greenlet, which cannot run while a request holds the
hub, exactly when the watchdog must; and a patched lock or event is meant for greenlets of one
thread, not for a thread racing them. So what the watchdog and the event's ending share comes
from here: gevent's saved originals once gevent is imported, the standard library's own
otherwise (the same objects, as nothing patched them).

A lock from here is held for a few bytecodes at a time, never across a greenlet switch: a
greenlet that waited on one held by another greenlet would block its whole thread.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import importlib
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

# The longest wait a real lock accepts (an infinite one raises OverflowError).
MAX_WAIT_S: Final = threading.TIMEOUT_MAX


def original(module: str, name: str) -> Any:
    """``module.name`` as it was before gevent patched it (or as it is: nothing did)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        return monkey.get_original(module, name)
    return getattr(importlib.import_module(module), name)


def allocate_lock() -> _thread.LockType:
    """A lock of the operating system, whatever gevent patched."""
    lock: _thread.LockType = original("_thread", "allocate_lock")()
    return lock


def get_ident() -> int:
    """The OS thread's id (``sys._current_frames()`` keys), not the greenlet's gevent gives."""
    ident: int = original("_thread", "get_ident")()
    return ident


def start_thread(target: Callable[[], object]) -> None:
    """Run ``target`` in a new OS thread, a daemon: nothing waits for it at exit."""
    original("_thread", "start_new_thread")(target, ())


def start_released_on_return(target: Callable[[], object]) -> _thread.LockType:
    """Run ``target`` in a new OS thread; a held lock that it releases once ``target`` returned
    (or raised): acquiring it waits for ``target``, with the timeout the waiter chooses."""
    done = allocate_lock()
    done.acquire()

    def run() -> None:
        try:
            target()
        finally:
            done.release()

    start_thread(run)
    return done


def run_for_at_most(target: Callable[[], object], timeout_s: float) -> bool:
    """Run ``target`` in a new OS thread, waiting ``timeout_s`` at most; True if it returned."""
    return start_released_on_return(target).acquire(True, min(timeout_s, MAX_WAIT_S))


class Wakeup:
    """``threading.Event``'s ``set``, ``clear`` and ``wait`` on one real lock.

    The lock is held while the wakeup is not set; ``set`` releases it (from any thread or
    greenlet, without blocking) and ``wait`` blocks the calling OS thread until it can take it.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # set already
            self._lock.release()

    def clear(self) -> None:
        self._lock.acquire(False)

    def is_set(self) -> bool:
        return not self._lock.locked()

    def wait(self, timeout_s: float) -> bool:
        """Until set or ``timeout_s`` passed; True if set (it stays set, as an Event's)."""
        if not self._lock.acquire(True, min(max(timeout_s, 0.0), MAX_WAIT_S)):
            return False
        self.set()
        return True


def _delete_by_os_ident(thread: threading.Thread) -> None:
    registry: Any = threading
    with registry._active_limbo_lock:
        registry._active.pop(thread.ident, None)


def let_earlier_threads_end_quietly() -> None:
    """Once gevent patched ``threading``: threads started before would end with a ``KeyError``
    printed in the log (the export threads ``post_fork`` starts, at the worker's exit; the
    SDK's, handed over by a master patched in its config file): ``Thread._delete`` looks the
    thread up under the patched ``get_ident``, which names a greenlet. Each looks itself up
    under the id it was registered with instead. Nothing to do while nothing is patched.
    """
    registry: Any = threading
    if registry.get_ident is original("_thread", "get_ident"):
        return
    main = threading.main_thread()
    for thread in list(registry._active.values()):
        if thread is not main and not isinstance(thread, registry._DummyThread):
            thread._delete = functools.partial(_delete_by_os_ident, thread)
