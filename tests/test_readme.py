"""The README's promises that code can check: its settings table and its two commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gunicorn_django_wide_events._config import ENV_PREFIX, SETTINGS, Setting, default_of

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_row(variable: str) -> list[str]:
    for line in README.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and variable in cells[0]:
            return cells
    raise AssertionError(f"{variable} has no row in the README's configuration tables")


def documented_default(value: object) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == ():
        return "(none)"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.env)
def test_every_setting_is_in_the_readme_with_its_default(setting: Setting) -> None:
    """Each environment variable the package reads has a README row showing its real default."""
    cells = readme_row(setting.env)
    if setting.env.startswith(ENV_PREFIX):
        assert cells[1] == documented_default(default_of(setting))


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one() -> None:
    """The quick start is `scripts/demo` and `scripts/test`; `.ci/run` runs both."""
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert re.search(r"^scripts/demo\b", quick_start, re.MULTILINE)
    assert re.search(r"^scripts/test\b", quick_start, re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^scripts/test$", ci, re.MULTILINE)
    assert re.search(r"^scripts/demo$", ci, re.MULTILINE)
