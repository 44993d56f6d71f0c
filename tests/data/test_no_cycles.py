"""The data package's modules import each other without a cycle.

Imports are read with ``ast``, at module level and inside functions alike: a
function-level import that only hides a cycle from the interpreter counts.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import cxrhash.data

PACKAGE = "cxrhash.data"
ROOT = Path(cxrhash.data.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, importer: str) -> str:
    """The module an ``import from`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _nearest_module(name: str) -> str | None:
    """``name`` or its closest enclosing package among the data modules."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imported_data_modules(importer: str) -> set[str]:
    """Data modules that ``importer`` imports anywhere in its source."""
    tree = ast.parse(MODULES[importer].read_text(), filename=str(MODULES[importer]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, importer)
            # ``from cxrhash.data import labels`` imports the submodule ``labels``.
            names = [f"{module}.{alias.name}" for alias in node.names]
            names = [n if n in MODULES else module for n in names]
        else:
            continue
        found.update(m for m in map(_nearest_module, names) if m is not None)
    found.discard(importer)
    return found


def test_the_module_list_covers_the_package() -> None:
    assert {f"{PACKAGE}.images", f"{PACKAGE}.dicom", f"{PACKAGE}.errors"} <= set(MODULES)


def test_images_and_dicom_no_longer_import_each_other() -> None:
    assert f"{PACKAGE}.dicom" in imported_data_modules(f"{PACKAGE}.images")
    assert f"{PACKAGE}.images" not in imported_data_modules(f"{PACKAGE}.dicom")


def test_the_data_import_graph_is_acyclic() -> None:
    graph = {module: imported_data_modules(module) for module in MODULES}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as err:
        pytest.fail(f"import cycle in {PACKAGE}: {' -> '.join(err.args[1])}")
