"""The package's layout rule: the worker and master sides never import each other, export
imports neither, and the shared modules import none of the three.

Read from the source (every ``import`` and ``from ... import``, relative ones resolved), so a
new module is covered the day it is added.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gunicorn_django_wide_events

PACKAGE = gunicorn_django_wide_events.__name__
ROOT = Path(gunicorn_django_wide_events.__file__).parent
SIDES = ("_worker", "_master", "_export")
# The live view runs in a process of its own and only reads the board.
READER = "_live"
SHARED = (
    "_attributes",
    "_board",
    "_config",
    "_forking",
    "_guard",
    "_os_threads",
    "_otel_environ",
    "_spool",
)
# What each room must never import, by room.
FORBIDDEN = {
    "_worker": {"_master"},
    "_master": {"_worker"},
    "_export": {"_worker", "_master"},
    READER: set(SIDES),
    **{shared: set(SIDES) for shared in SHARED},
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.add(target)
            # "from . import _board" imports the module _board itself.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def room_of(dotted: str) -> str | None:
    """The room (a side or a shared module) a module of the package is in."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1] if parts[1] in FORBIDDEN else None


MODULES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_room_imports_a_room_it_must_not(path: Path) -> None:
    room = room_of(module_name(path))
    if room is None:
        return  # the wiring (_hooks, _gunicorn, _instrumentor) and the public modules
    wrong = sorted(
        dotted for dotted in imported_modules(path) if room_of(dotted) in FORBIDDEN[room]
    )
    assert wrong == [], f"{room} must not import {wrong}"


def test_every_room_exists_and_has_modules() -> None:
    """The rule is about real modules: a renamed room would make the test above vacuous."""
    for side in (*SIDES, READER):
        assert len(list((ROOT / side).glob("*.py"))) > 1, side
    for shared in SHARED:
        assert (ROOT / f"{shared}.py").is_file(), shared


def test_the_rule_sees_a_forbidden_import(tmp_path: Path) -> None:
    """Relative imports are resolved as Python does, so a forbidden one is caught."""
    worker = tmp_path / "_worker"
    worker.mkdir()
    module = worker / "leaky.py"
    module.write_text("from .._master.master import MasterSide\nfrom . import slot\n")
    imports = imported_modules(module, tmp_path)
    assert f"{PACKAGE}._master.master" in imports
    assert f"{PACKAGE}._worker.slot" in imports
    assert {room_of(dotted) for dotted in imports} & FORBIDDEN["_worker"] == {"_master"}
