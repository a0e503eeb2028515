"""Real threads and locks (_os_threads): what the watchdog and the event's ending rely on, also
in a process gevent patched (that part in a fresh interpreter: this one stays unpatched)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from gunicorn_django_wide_events._os_threads import (
    Wakeup,
    allocate_lock,
    get_ident,
    let_earlier_threads_end_quietly,
    run_for_at_most,
    start_thread,
)


def test_a_wakeup_set_before_the_wait_returns_at_once_and_stays_set() -> None:
    wakeup = Wakeup()
    wakeup.set()
    wakeup.set()  # twice is still set, no error

    assert wakeup.wait(10) is True
    assert wakeup.is_set()
    wakeup.clear()
    assert not wakeup.is_set()


def test_a_wakeup_not_set_waits_its_timeout_out() -> None:
    started = time.monotonic()
    assert Wakeup().wait(0.1) is False
    assert time.monotonic() - started >= 0.09


def test_a_wakeup_set_from_another_thread_ends_the_wait() -> None:
    wakeup = Wakeup()
    threading.Timer(0.05, wakeup.set).start()
    started = time.monotonic()

    assert wakeup.wait(10) is True
    assert time.monotonic() - started < 5


def test_start_thread_runs_the_target_in_another_os_thread() -> None:
    seen: list[int] = []
    done = allocate_lock()
    done.acquire()

    def target() -> None:
        seen.append(get_ident())
        done.release()

    start_thread(target)
    assert done.acquire(True, 10)
    assert seen and seen[0] != get_ident()


def test_run_for_at_most_says_whether_the_target_returned_in_time() -> None:
    assert run_for_at_most(lambda: None, 10) is True
    release = allocate_lock()
    release.acquire()
    assert run_for_at_most(lambda: release.acquire(True, 10), 0.05) is False
    release.release()


PATCHED_WORKER = textwrap.dedent(
    """
    import threading, time
    from gunicorn_django_wide_events import _os_threads

    ended = threading.Event()
    early = threading.Thread(target=ended.wait, daemon=True)  # started before the patch
    early.start()

    from gevent import monkey
    monkey.patch_all()
    import greenlet

    # What the watchdog gets: an OS thread and real locks, not greenlets.
    assert threading.get_ident() == id(greenlet.getcurrent())
    assert _os_threads.get_ident() != threading.get_ident()
    lock = _os_threads.allocate_lock()
    assert type(lock).__module__ == "_thread", type(lock)
    idents = []
    done = _os_threads.allocate_lock()
    done.acquire()
    def in_thread():
        idents.append(_os_threads.get_ident())
        time.sleep(0.01)  # patched: this thread gets a hub of its own, the main one is free
        done.release()
    _os_threads.start_thread(in_thread)
    assert done.acquire(True, 10)
    assert idents[0] != _os_threads.get_ident()

    _os_threads.let_earlier_threads_end_quietly()
    ended.set()
    early.join(10)
    time.sleep(0.1)
    assert early.ident not in threading._active
    print("ok")
    """
)


def test_under_gevent_threads_are_real_and_those_started_before_the_patch_end_quietly() -> None:
    pytest.importorskip("gevent")
    result = subprocess.run(
        [sys.executable, "-c", PATCHED_WORKER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "Exception ignored" not in result.stderr
    assert "KeyError" not in result.stderr


def test_nothing_is_adapted_while_nothing_is_patched() -> None:
    running = threading.Thread(target=time.sleep, args=(0.2,), daemon=True)
    running.start()
    let_earlier_threads_end_quietly()
    assert "_delete" not in vars(running)
    running.join()
