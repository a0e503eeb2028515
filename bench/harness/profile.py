"""py-spy on a gunicorn worker under load, and where its time goes.

Each sampled frame is put in a category (the package, the OpenTelemetry API and SDK, the OTLP
encoder and transport, Django, gunicorn); each thread's share of samples is scaled to its CPU
time per request, measured with psutil over the same seconds.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from harness import VENV_BIN
from harness.load import WrkResult, run_wrk
from harness.measure import ThreadCpu, cpu_by_thread, cpu_by_thread_since
from harness.report import emit
from harness.servers import Server

FRAME_RE: Final = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
CATEGORIES: Final = (
    "package",
    "api",
    "sdk",
    "encoder",
    "transport",
    "django",
    "gunicorn",
    "other",
)
INSTRUMENTATION: Final = frozenset({"package", "api", "sdk", "encoder", "transport"})
CATEGORY_NOTES: Final = {
    "package": "gunicorn_django_wide_events",
    "api": "opentelemetry API: context, attributes, propagators",
    "sdk": "opentelemetry SDK: spans, processors, resources",
    "encoder": "OTLP encoder: SDK spans to protobuf objects",
    "transport": "OTLP gRPC exporter and grpc",
    "django": "Django",
    "gunicorn": "gunicorn",
    "other": "stdlib and the rest, when no frame above is one of these",
}


def frame_category(filename: str) -> str:
    if "gunicorn_django_wide_events" in filename:
        return "package"
    if (
        "opentelemetry/exporter/otlp/proto/common" in filename
        or "google/protobuf" in filename
        or "opentelemetry/proto/" in filename
    ):
        return "encoder"
    if "opentelemetry/exporter" in filename or "/grpc/" in filename:
        return "transport"
    if "opentelemetry/sdk" in filename:
        return "sdk"
    if "opentelemetry/" in filename:
        return "api"
    if "/django/" in filename:
        return "django"
    if "/gunicorn/" in filename:
        return "gunicorn"
    return "other"


def short_frame(frame: str) -> tuple[str, str]:
    """``func (path:line)`` -> (``func (short/path.py)``, category)."""
    match = FRAME_RE.match(frame.strip())
    if match is None:
        return frame.strip(), "other"
    filename = match["file"]
    category = frame_category(filename)
    short = filename
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3"):
        if marker in short:
            short = short.split(marker, 1)[1]
            break
    return f"{match['func']} ({short})", category


@dataclass
class Sample:
    thread: str
    frames: list[tuple[str, str]]  # (function, category), outermost first
    count: int

    @property
    def owner(self) -> str:
        """The category of the innermost frame that is not ``other``: a stdlib call (a lock, a
        socket, json) is charged to the code that made it."""
        for _, category in reversed(self.frames):
            if category != "other":
                return category
        return "other"

    def instrumentation_frames(self) -> set[tuple[str, str]]:
        """The instrumentation's frames this sample is in, counted from the leaf up to the first
        Django or gunicorn frame: so the package's middleware is charged for its own work and
        for the SDK calls it makes, not for the Django view it wraps."""
        frames = set()
        for frame in reversed(self.frames):
            if frame[1] in ("django", "gunicorn"):
                break
            if frame[1] in INSTRUMENTATION:
                frames.add(frame)
        return frames


def read_raw_profile(raw_path: Path) -> list[Sample]:
    samples = []
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        thread = "?"
        while frames and frames[0].startswith(("process ", "thread ")):
            thread = frames[0]
            frames = frames[1:]
        thread = re.sub(r"^thread \((?:0x)?[0-9a-fA-F]+\): ", "", thread)
        samples.append(Sample(thread, [short_frame(frame) for frame in frames], int(count_text)))
    return samples


def thread_group(thread: str) -> str:
    """py-spy's thread name to the groups of ``measure.cpu_by_thread``."""
    return "main" if thread == "MainThread" else "python"


def summarise_profile(
    raw_path: Path,
    rps: float,
    duration_s: float,
    rate: int,
    top: int,
    gil: bool,
    cpu_per_request: ThreadCpu | None = None,
) -> None:
    """Print where the worker's time goes: per thread, per category, top functions.

    With ``cpu_per_request`` (user and system microseconds per request of each thread group,
    measured over the profile), a group's user CPU time is spread over its samples: a function's
    "us/req" is its share of its thread's samples times that thread's user CPU per request. py-spy
    sees only part of the time (it misses samples, and ``--gil`` drops the time spent in system
    calls), so the shares are what it measures and the CPU time is the scale. Without it, a sample
    counts as 1/rate s of wall time.
    """
    samples = read_raw_profile(raw_path)
    if not samples:
        emit(f"  no samples in {raw_path}")
        return
    total = sum(sample.count for sample in samples)
    expected = duration_s * rate
    threads: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for sample in samples:
        threads[sample.thread] += sample.count
        groups[thread_group(sample.thread)] += sample.count

    wall_per_sample = 1e6 / (rate * rps * duration_s) if rps else 0.0
    scale: dict[str, float] = {}
    for thread in threads:
        group = thread_group(thread)
        if cpu_per_request is not None and group in cpu_per_request:
            scale[thread] = cpu_per_request[group][0] / groups[group]
        else:
            scale[thread] = wall_per_sample

    kind = "holding the GIL" if gil else "not idle"
    emit(
        f"  {total} samples of threads {kind} ({expected:.0f} per always-sampled thread at "
        f"{rate} Hz over {duration_s:g}s); wrk: {rps:.0f} req/s under the profiler "
        f"({1e6 / rps if rps else 0:.0f} us/request)"
    )
    if cpu_per_request is not None:
        emit("  the worker's CPU per request meanwhile (psutil, per thread group):")
        for group, (user, system) in sorted(cpu_per_request.items()):
            emit(
                f"    {group:7} user {user:6.1f} us  system {system:6.1f} us  "
                f"({groups.get(group, 0)} samples)"
            )
        emit("  'us/req' below = a thread's user CPU per request x the share of its samples")
    else:
        emit(f"  'us/req' below = samples x {wall_per_sample:.3f} (wall time)")

    owners: dict[str, Counter[str]] = defaultdict(Counter)
    inclusive: Counter[tuple[str, str, str]] = Counter()
    self_time: Counter[tuple[str, tuple[str, str]]] = Counter()
    for sample in samples:
        owners[sample.thread][sample.owner] += sample.count
        for name, category in sample.instrumentation_frames():
            inclusive[sample.thread, name, category] += sample.count
        if sample.frames:
            self_time[sample.thread, sample.frames[-1]] += sample.count

    def share(thread: str, count: float) -> str:
        return f"{count / threads[thread] * 100:5.1f}% {count * scale[thread]:6.1f} us/req"

    emit("  per thread (% of the thread's samples), charged to the innermost non-stdlib frame:")
    for thread, count in threads.most_common():
        emit(f"    {share(thread, count)}  {thread} ({count / expected * 100:.0f}% of wall time)")
        for category in CATEGORIES:
            if owners[thread][category]:
                emit(
                    f"      {share(thread, owners[thread][category])}  {category:9} "
                    f"({CATEGORY_NOTES[category]})"
                )
    emit(f"  top {top} instrumentation functions by inclusive time (with what they call, except")
    emit("  Django: the middleware is charged for its own work, not for the view it wraps):")
    by_time = sorted(inclusive.items(), key=lambda item: -item[1] * scale[item[0][0]])
    for (thread, name, category), count in by_time[:top]:
        emit(f"    {share(thread, count)}  [{category}] {name}  ({thread})")
    emit(f"  top {top} functions by self time in the instrumentation (package, api, sdk, encoder,")
    emit("  transport):")
    shown = 0
    self_by_time = sorted(self_time.items(), key=lambda item: -item[1] * scale[item[0][0]])
    for (thread, (name, category)), count in self_by_time:
        if category in INSTRUMENTATION:
            emit(f"    {share(thread, count)}  [{category}] {name}  ({thread})")
            shown += 1
            if shown >= top:
                break
    emit(f"  top {top} functions by self time, all code:")
    for (thread, (name, category)), count in self_by_time[:top]:
        emit(f"    {share(thread, count)}  [{category}] {name}  ({thread})")


def profile_worker(
    wrk: str,
    server: Server,
    *,
    seconds: int,
    rate: int,
    all_threads: bool,
    top: int,
    threads: int,
    connections: int,
    raw_path: Path,
    keep_raw: bool,
) -> None:
    """py-spy ``server``'s worker for ``seconds`` while wrk drives ``/hello/``, then print where
    its time went (``summarise_profile``); py-spy's raw stacks go to ``raw_path``."""
    py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    if not Path(py_spy).exists():
        emit("py-spy is not installed (pip install py-spy): no profile")
        return
    command = [
        py_spy,
        "record",
        "--pid",
        str(server.worker.pid),
        "--duration",
        f"{seconds:g}",
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--threads",
        "--full-filenames",
        "--nonblocking",
        *([] if all_threads else ["--gil"]),
        "--output",
        str(raw_path),
    ]
    emit()
    emit(f"== profile of the {server.variant} worker on /hello/ (py-spy)")
    emit(f"  {shlex.join(command)}")
    results: list[WrkResult] = []
    # wrk runs 2 s longer than py-spy and starts 1 s earlier: every sample is of a loaded worker.
    load = threading.Thread(
        target=lambda: results.append(
            run_wrk(wrk, server.url("hello"), threads, connections, seconds + 2)
        )
    )
    load.start()
    time.sleep(1.0)
    cpu_before = cpu_by_thread(server.worker)
    started = time.monotonic()
    spy = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 60)
    elapsed = time.monotonic() - started
    cpu_after = cpu_by_thread(server.worker)
    load.join()
    if spy.returncode != 0 or not raw_path.exists():
        emit(f"  py-spy failed ({spy.returncode}): {spy.stderr.strip()[-2000:]}")
        return
    rps = results[0].rps if results else 0.0
    requests = rps * elapsed
    cpu_per_request = (
        {
            group: (user / requests * 1e6, system / requests * 1e6)
            for group, (user, system) in cpu_by_thread_since(cpu_before, cpu_after).items()
        }
        if requests
        else None
    )
    summarise_profile(raw_path, rps, seconds, rate, top, not all_threads, cpu_per_request)
    if keep_raw:
        emit(f"  raw stacks: {raw_path}")
