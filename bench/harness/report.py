"""Printing a benchmark's report."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence


def emit(line: str = "") -> None:
    """Print one line of the report at once: the runs take minutes, and a report piped to a
    file (or ``tee``) should show each line as it is measured, not when the buffer fills."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values: a table cell with nothing measured prints as ``nan``."""
    return statistics.median(values) if values else float("nan")
