"""The layers as drawn in the README, read from the source with `ast` (nothing is imported):
dependencies point down (cli -> server -> runtime -> models); models/ is pure Python over data, so
it never imports llama.cpp; and the modules of cli/ import one another without cycles.

Every import counts, also one inside a function or under TYPE_CHECKING: a lazy import is still a
dependency, only a hidden one."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("cli", "server", "runtime", "models")  # top to bottom; each may import only those below
# third-party packages a layer must not import
FORBIDDEN_PACKAGES = {"models": ("llama_cpp",)}


def module_name(path: Path) -> str:
    parts = ["hermesd", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in `path`; `from package import submodule` names the submodule."""
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in modules() else base


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "hermesd" and parts[1] in LAYERS else None


def test_the_source_tree_is_found() -> None:
    assert {"hermesd.cli.main", "hermesd.server.app", "hermesd.models.catalog"} <= set(modules())


@pytest.mark.parametrize("layer", LAYERS)
def test_dependencies_point_down(layer: str) -> None:
    allowed = set(LAYERS[LAYERS.index(layer) :])
    forbidden = FORBIDDEN_PACKAGES.get(layer, ())
    wrong = []
    for name, path in modules().items():
        if layer_of(name) != layer:
            continue
        for line, target in imports(path):
            target_layer = layer_of(target)
            if (target_layer is not None and target_layer not in allowed) or target.split(".")[
                0
            ] in forbidden:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, f"{layer}/ may import only {sorted(allowed)}:\n" + "\n".join(wrong)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_cli_modules_import_each_other_without_cycles() -> None:
    cli = {name: path for name, path in modules().items() if layer_of(name) == "cli"}
    graph = {name: {t for _, t in imports(path) if t in cli and t != name} for name, path in cli.items()}
    assert cycles(graph) == []
