"""The import layers of docs/architecture.md, read from the source: which package may
import which, and no import cycle between modules (function-level imports included)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Each part of ``cxrhash`` and the parts it may import (docs/architecture.md).
ALLOWED: dict[str, set[str]] = {
    "registry": set(),
    "config": set(),
    "data": {"registry", "config"},
    "index": {"registry"},
    "models": {"registry"},
    "losses": {"registry", "models"},
    "inference": {"models"},
    "encode": {"data", "index", "models", "inference"},
    "methods": {"registry", "config", "losses", "models"},
    "evaluation": {"registry", "config", "data", "index", "models", "encode"},
    "training": {
        "registry",
        "config",
        "data",
        "index",
        "models",
        "losses",
        "encode",
        "methods",
        "evaluation",
    },
    "pretrain": {"registry", "config", "data", "models", "losses", "training"},
    "closeness": {"data", "index", "models", "encode", "inference"},
    "pacs_cursor": {"data", "index"},
    "retrieve": {"data", "index", "models", "inference", "encode", "training", "closeness"},
    "bulk_index": {"data", "index", "inference", "training", "closeness", "retrieve"},
    "visualize": {"data", "models", "retrieve"},
    "bench": {
        "registry",
        "config",
        "data",
        "index",
        "models",
        "encode",
        "methods",
        "evaluation",
        "training",
    },
    "demo": {"config", "data", "evaluation", "training", "retrieve", "visualize"},
    "serve": {
        "registry",
        "config",
        "data",
        "index",
        "models",
        "inference",
        "encode",
        "training",
        "retrieve",
    },
    "cli": {
        "registry",
        "config",
        "data",
        "index",
        "models",
        "inference",
        "encode",
        "methods",
        "evaluation",
        "training",
        "pretrain",
        "closeness",
        "pacs_cursor",
        "retrieve",
        "bulk_index",
        "visualize",
        "bench",
        "demo",
        "serve",
    },
}
#: Modules a part must not import even though their part is allowed.
FORBIDDEN = {"pretrain": {"cxrhash.training.trainer"}}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "cxrhash").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of other cxrhash modules, at any depth of its code."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{a.name}" for a in node.names]
                targets = [t if t in modules else node.module for t in targets]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name and target.startswith("cxrhash."):
                    graph[name].add(target)
    return graph


def _part(module: str) -> str:
    return module.split(".")[1]


def test_every_part_imports_only_the_layers_below_it() -> None:
    modules = _modules()
    parts = {_part(m) for m in modules if m != "cxrhash"} - {"__main__"}
    assert parts == set(ALLOWED), "a new part of cxrhash needs its row in ALLOWED and the doc"
    wrong = []
    for module, targets in _imports(modules).items():
        if module in ("cxrhash", "cxrhash.__main__"):  # the entry points import the CLI
            continue
        for target in targets:
            src, dst = _part(module), _part(target)
            if src != dst and (dst not in ALLOWED[src] or target in FORBIDDEN.get(src, ())):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_layers_form_no_cycle() -> None:
    seen: dict[str, int] = {}

    def visit(part: str) -> None:
        assert seen.get(part) != 1, f"ALLOWED has a cycle through {part}"
        if part not in seen:
            seen[part] = 1
            for below in ALLOWED[part]:
                visit(below)
            seen[part] = 2

    for part in ALLOWED:
        visit(part)


def test_no_two_modules_import_each_other_even_inside_functions() -> None:
    graph = _imports(_modules())
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in graph.get(module, ()):
            if state.get(target) == 1:
                cycles.append(" → ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in list(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)
