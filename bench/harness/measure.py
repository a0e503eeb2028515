"""What a gunicorn worker spends, read with psutil: CPU time (per thread group) and memory."""

from __future__ import annotations

from pathlib import Path

import psutil

# User and system CPU seconds by thread group: "main", "python", "native".
ThreadCpu = dict[str, tuple[float, float]]


def cpu_seconds(worker: psutil.Process) -> float:
    """User + system CPU time of the worker process (all its threads) so far."""
    times = worker.cpu_times()
    return times.user + times.system


def _comm(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return "?"


def cpu_by_thread(worker: psutil.Process) -> ThreadCpu:
    """User and system CPU seconds of the worker's threads, in three groups: ``main`` (the
    thread that serves requests), ``python`` (the other Python threads: the batch span
    processor's export thread and the package's watchdog, which the kernel names like the
    process) and ``native`` (threads started by C code, gRPC's, which name themselves)."""
    pid = worker.pid
    process_comm = _comm(pid, pid)
    groups: ThreadCpu = {}
    for thread in worker.threads():
        if thread.id == pid:
            group = "main"
        elif _comm(pid, thread.id) == process_comm:
            group = "python"
        else:
            group = "native"
        user, system = groups.get(group, (0.0, 0.0))
        groups[group] = (user + thread.user_time, system + thread.system_time)
    return groups


def cpu_by_thread_since(before: ThreadCpu, after: ThreadCpu) -> ThreadCpu:
    """The CPU time each thread group spent between two ``cpu_by_thread`` readings (a group
    missing from ``before`` had no threads then, so it spent all of ``after``)."""
    return {
        group: (
            user - before.get(group, (0.0, 0.0))[0],
            system - before.get(group, (0.0, 0.0))[1],
        )
        for group, (user, system) in after.items()
    }


def memory(worker: psutil.Process) -> tuple[int, int]:
    """RSS and USS of the worker, in bytes."""
    info = worker.memory_full_info()
    return info.rss, info.uss
