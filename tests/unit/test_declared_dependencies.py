"""Every package the installed program imports is declared in pyproject.toml.

A module-level import of a third-party package needs a `[project] dependencies` entry (a user's
`pip install .` brings nothing else); an import inside a function (the training code's torch,
transformers, peft) needs one there or in a non-test extra. Test-only packages never count: that is
how `httpx`, brought by the `test` extra alone, once broke every `hermesd` command while the suite
passed. `.ci/user-path` checks the same by importing every module in a fresh install.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("cli", "server", "runtime", "models", "systemd")
TEST_EXTRAS = {"test"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {
        _name(r)
        for extra, requirements in project["optional-dependencies"].items()
        if extra not in TEST_EXTRAS
        for r in requirements
    }
    return core, extras - {"hermesd"}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[str, bool, int]]:
    """(top-level module, imported at module level, line) for every import outside TYPE_CHECKING."""
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], module_level, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], module_level, child.lineno))
            inner = module_level and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            visit(child, inner)

    visit(tree, True)
    return found


def _third_party_imports() -> list[tuple[Path, int, str, bool]]:
    out = []
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module, module_level, line in _imports(ast.parse(path.read_text(), str(path))):
                if module in sys.stdlib_module_names or module in ("hermesd", "__future__"):
                    continue
                out.append((path.relative_to(ROOT), line, module, module_level))
    return out


def test_every_import_of_the_package_is_declared() -> None:
    core, extras = _declared()
    distributions = metadata.packages_distributions()
    problems = []
    for path, line, module, module_level in _third_party_imports():
        dists = {_name(d) for d in distributions.get(module, [])}
        if not dists:
            problems.append(
                f"{path}:{line}: `{module}` is imported but no installed distribution provides it"
            )
        elif module_level and not dists & core:
            problems.append(
                f"{path}:{line}: `{module}` (from {', '.join(sorted(dists))}) is imported at module level "
                "but is not in [project] dependencies"
            )
        elif not dists & (core | extras):
            problems.append(
                f"{path}:{line}: `{module}` (from {', '.join(sorted(dists))}) is in no dependency list "
                "that users install (only test extras have it)"
            )
    assert not problems, "\n".join(problems)


def test_the_check_sees_the_imports_it_guards() -> None:
    imports = _third_party_imports()
    modules = {module for _, _, module, _ in imports}
    assert {"fastapi", "llama_cpp", "huggingface_hub", "httpx", "gguf"} <= modules
    # torch is imported only inside the training functions, and the check knows it
    assert any(module == "torch" and not module_level for _, _, module, module_level in imports)
    assert not any(module == "torch" and module_level for _, _, module, module_level in imports)


def test_the_check_fails_for_an_undeclared_module_level_import() -> None:
    source = "import httpx\n\ndef f():\n    import torch\n"
    assert _imports(ast.parse(source)) == [("httpx", True, 1), ("torch", False, 4)]
    core, extras = _declared()
    dists = {_name(d) for d in metadata.packages_distributions()["pytest"]}
    assert not dists & (core | extras)  # a test-only package would be reported
