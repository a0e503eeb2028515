"""Fixtures shared by unit tests in more than one package; a module opts in by name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gunicorn_django_wide_events._guard import forget_reports


@pytest.fixture
def fresh_reports() -> Iterator[None]:
    """Guards log their first failure per site; each test starts with none reported."""
    forget_reports()
    yield
    forget_reports()
