"""The house rules that can be checked: no import loops between our modules, no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.servers import ROOT

PACKAGES = ("serving", "loadtests")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "proto" in path.relative_to(ROOT).parts:
                continue  # generated code
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    return modules


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every module of ours that `path` imports anywhere (TYPE_CHECKING and function bodies included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found.update(name for name in names if name in known)
    return found


def test_no_import_loops() -> None:
    modules = _modules()
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    loops: set[tuple[str, ...]] = set()

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for nxt in graph[node]:
            if nxt in path:
                loops.add(tuple(sorted(path[path.index(nxt) :])))
            elif nxt not in done:
                visit(nxt, [*path, nxt], done)
        done.add(node)

    done: set[str] = set()
    for name in graph:
        if name not in done:
            visit(name, [name], done)
    assert not loops, f"import loops: {sorted(loops)}"


def test_no_module_over_400_lines() -> None:
    long = {
        name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_package_says_what_it_owns_and_is_in_the_architecture_page() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    for init in sorted((ROOT / "serving").glob("*/__init__.py")):
        package = init.parent.name
        if package == "proto":
            continue
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring, f"serving/{package}/__init__.py says nothing about what it owns"
        assert f"| `serving/{package}/` |" in page, f"docs/architecture.md's package table lacks serving/{package}/"
