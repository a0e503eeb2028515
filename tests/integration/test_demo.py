"""The README's first command works: the demo serves the example shop and prints its events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_demo_prints_one_event_per_request() -> None:
    """examples/demo.py (what scripts/demo runs) gets one wide event for each of its requests."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 wide events for 6 requests." in result.stdout
    assert '"url.query": "utm_source=mail&token=REDACTED"' in result.stdout
    assert '"exception.type": "ValueError"' in result.stdout
    assert '"shop.cart.total_cents": 4599' in result.stdout
    assert '"wide_event.type": "timeout"' in result.stdout
    assert '"code.stacktrace"' in result.stdout
