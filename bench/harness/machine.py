"""What machine a benchmark ran on: printed at the top of every benchmark's report."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sys

import psutil

from harness.load import wrk_version


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith(("model name", "Hardware", "Processor")):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def usable_cores() -> int | None:
    """The cores this process may run on (a container's or taskset's limit), if known."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def interpreter() -> str:
    return f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def machine_lines() -> list[str]:
    """The machine, for benchmarks that run in this process."""
    affinity = usable_cores()
    return [
        f"cpu        {cpu_model()}",
        f"nproc      {affinity if affinity is not None else os.cpu_count()} "
        f"(os.cpu_count() {os.cpu_count()})",
        f"python     {interpreter()}",
        f"platform   {platform.platform()}",
        f"load       {load_average()} (1/5/15 min)",
    ]


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load_test_machine_lines(wrk: str) -> list[str]:
    """The machine and the serving stack, for benchmarks that load gunicorn servers with wrk:
    every version that moves their numbers (the protobuf backend among them)."""
    from google.protobuf.internal import api_implementation

    memory = psutil.virtual_memory().total / 2**30
    return [
        f"cpu          {cpu_model()}",
        f"cores        {usable_cores()} usable (os.cpu_count() {os.cpu_count()}), {memory:.1f} GiB",
        f"os           {platform.platform()}",
        f"python       {interpreter()}",
        f"gunicorn     {version('gunicorn')}, Django {version('Django')}",
        f"otel         sdk {version('opentelemetry-sdk')}, "
        f"exporter-otlp-proto-grpc {version('opentelemetry-exporter-otlp-proto-grpc')}, "
        f"instrumentation-django {version('opentelemetry-instrumentation-django')}",
        f"protobuf     {version('protobuf')} ({api_implementation.Type()}), "
        f"grpcio {version('grpcio')}",
        f"package      gunicorn-django-wide-events {version('gunicorn-django-wide-events')}",
        f"wrk          {wrk_version(wrk)} ({wrk})",
        f"load         {load_average()} (1/5/15 min, at start)",
    ]
