"""The house rules a reader can rely on (docs/architecture.md), checked on the source.

- No module of the package is over :data:`MAX_LINES` lines.
- No private name crosses a module boundary: ``obj._name`` is read or written only in
  the module that defines ``_name`` (as ``self._name = …``, a ``def _name``, a class
  attribute …), and nobody imports an underscore name from another module.  The tests
  hold themselves to the same rule: they use what users use, plus the documented seams.
- The layers import only downward: the import-linter contract in pyproject.toml (run by
  ``make test`` as ``lint-imports``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGE: Final = ROOT / "trio_agent"
TESTS: Final = ROOT / "tests"

MAX_LINES: Final = 500
"""A module a newcomer reads in one sitting."""

PUBLIC_UNDERSCORE: Final = frozenset({"_fields", "_replace", "_asdict", "_make", "_field_defaults"})
"""Underscore names that are public API of the standard library (``NamedTuple``)."""


def sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def defined_private(tree: ast.AST) -> set[str]:
    """The underscore names a module defines: functions, classes, assignments (also
    ``self._x = …``), class attributes, parameters and slots."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            if not isinstance(node, ast.ClassDef):
                args = node.args
                for a in (*args.posonlyargs, *args.args, *args.kwonlyargs):
                    names.add(a.arg)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries, setattr(obj, "_x", …)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def crossings(path: Path) -> Iterator[str]:
    """Where ``path`` reaches a private name it does not define."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = defined_private(tree)
    where = path.relative_to(ROOT)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in PUBLIC_UNDERSCORE:
                continue
            if name not in own:
                yield f"{where}:{node.lineno}: .{name} (defined in another module)"
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield f"{where}:{node.lineno}: imports {alias.name} from {node.module}"


@pytest.mark.parametrize("path", sources(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_the_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (> {MAX_LINES})"


def test_no_private_name_crosses_a_module_of_the_package() -> None:
    found = [c for path in sources(PACKAGE) for c in crossings(path)]
    assert found == [], "\n".join(found)


def test_the_tests_use_no_private_name() -> None:
    found = [c for path in sources(TESTS) for c in crossings(path)]
    assert found == [], "\n".join(found)


def test_the_checker_sees_a_reach_in() -> None:
    # The rule itself: a private attribute of another module's object is found; one
    # the module defines is not.
    tree = ast.parse("class A:\n    def f(self):\n        self._mine = 1\n        return x._theirs")
    assert defined_private(tree) == {"_mine"}
