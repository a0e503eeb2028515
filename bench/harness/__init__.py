"""What the benchmark scripts under ``bench/`` share: the harness they are built on.

The scripts run as ``python bench/SCRIPT.py``, so ``bench/`` is on ``sys.path`` and this
package imports as ``harness``. Each module has one job:

``report``
    printing a report line by line (``emit``) and the median its tables use.
``machine``
    what machine, and which versions of the serving stack, a benchmark ran on.
``servers``
    the benchmark app served by one sync gunicorn worker per variant (bare, package, contrib).
``sink``
    a counting OTLP gRPC collector, and waiting until a run's spans have reached it.
``load``
    driving a server with ``wrk`` and reading wrk's report.
``measure``
    the worker's CPU time (per thread group) and memory, with psutil.
``run``
    one wrk run against a server, with the worker's CPU time and the spans that reached the sink.
``profile``
    py-spy on a worker under load, and where its time goes by category and function.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

BENCH_DIR: Final = Path(__file__).resolve().parent.parent
REPO_ROOT: Final = BENCH_DIR.parent
# gunicorn, opentelemetry-instrument and py-spy are taken from the benchmark's own environment.
VENV_BIN: Final = Path(sys.executable).parent
LOOPBACK: Final = "127.0.0.1"
