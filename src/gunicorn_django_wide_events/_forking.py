"""Helpers for a master that forks: no thread of ours may be alive when gunicorn forks."""

from __future__ import annotations

import os
import threading
import time


def wait_for_native_threads(timeout_s: float) -> None:
    """Wait (a little) until every OS thread of the process is one Python knows about.

    Two kinds of thread outlive what Python reports: the C-core threads of a closed gRPC
    channel, which end a few milliseconds later, and a thread whose ``join()`` has returned but
    whose OS thread is still exiting. A fork in between copies a multi-threaded process (and
    Python 3.12+ warns about it).
    """
    task_dir = "/proc/self/task"  # Linux only; elsewhere there is nothing to count
    if not os.path.isdir(task_dir):
        return
    deadline = time.monotonic() + timeout_s
    while len(os.listdir(task_dir)) > threading.active_count() and time.monotonic() < deadline:
        time.sleep(0.001)
