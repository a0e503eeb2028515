"""Load from ``wrk``: installing it if missing, running it, reading its report."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from harness.report import emit, median


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    errors: int
    non_2xx: int
    latency: str  # mean
    p50: str
    p99: str
    output: str


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    emit("wrk not found: installing Debian's wrk (apt-get update && apt-get install -y wrk)")
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        result = subprocess.run(command, capture_output=True, text=True, env=environ, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{shlex.join(command)} failed:\n{result.stdout}{result.stderr}")
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("wrk could not be installed")
    return wrk


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).splitlines()
    return first[0].strip() if first else "unknown"


def run_wrk(wrk: str, url: str, threads: int, connections: int, duration: int) -> WrkResult:
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=duration + 60
    )
    out = result.stdout
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if result.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed ({result.returncode}):\n{out}\n{result.stderr}")
    requests = int(match[1])
    seconds = float(match[2]) / (1000 if match[3] == "ms" else 1)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = re.search(r"Latency\s+(\S+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    return WrkResult(
        requests=requests,
        seconds=seconds,
        rps=float(rps[1]) if rps else requests / seconds,
        errors=errors,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        latency=latency[1] if latency else "?",
        p50=p50[1] if p50 else "?",
        p99=p99[1] if p99 else "?",
        output=out,
    )


def median_latency(latencies: Sequence[str]) -> str:
    """wrk's latencies of several runs (``870.12us``, ``1.23ms``): their median, in ms."""
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}
    values = []
    for text in latencies:
        match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
        if match:
            values.append(float(match[1]) * scale[match[2]])
    return f"{median(values):.2f}ms" if values else "?"
