"""What machine a benchmark ran on: printed at the top of every benchmark's report."""

from __future__ import annotations

import contextlib
import os
import platform
import sys


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith(("model name", "Hardware", "Processor")):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def machine_lines() -> list[str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        f"cpu        {cpu_model()}",
        f"nproc      {affinity if affinity is not None else os.cpu_count()} "
        f"(os.cpu_count() {os.cpu_count()})",
        f"python     {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        f"platform   {platform.platform()}",
        f"load       {' '.join(f'{load:.2f}' for load in os.getloadavg())} (1/5/15 min)",
    ]
