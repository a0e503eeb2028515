"""Fixtures shared by every test."""

from __future__ import annotations

import os

import pytest

#: Prefixes of variables that configure OpenTelemetry or the package itself.
CONFIG_PREFIXES = ("OTEL_", "WIDE_EVENTS_")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test without OTEL_* / WIDE_EVENTS_* from the developer's shell.

    Configuration is read from the environment, so a stray variable (say an
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a real collector) would make
    results depend on who runs the tests.  monkeypatch restores them after.
    """
    for name in list(os.environ):
        if name.startswith(CONFIG_PREFIXES):
            monkeypatch.delenv(name, raising=False)
