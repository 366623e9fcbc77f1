"""The modules of build_tools import each other without a cycle.

Every import counts, also one inside a function (a lazy import hides a cycle
from Python, not from the reader); only `if TYPE_CHECKING:` blocks, which never
run, are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "build_tools"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute names of everything `module` imports (modules, or names inside them)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if is_type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                origin = ".".join(anchor + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        names = imported_names(ast.parse(path.read_text(encoding="utf-8")), module, path.name == "__init__.py")
        graph[module] = {name for name in names if name in paths and name != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the search path, then "done"
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_build_tools_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "build_tools.compile" in graph["build_tools.build"]  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_sees_imports_inside_functions_and_skips_type_checking_blocks() -> None:
    a = ast.parse("def f():\n    from .b import g\n")
    b = ast.parse("from .a import f\nif TYPE_CHECKING:\n    from .c import x\n")
    graph = {"p.a": imported_names(a, "p.a", False) & {"p.b"},
             "p.b": imported_names(b, "p.b", False) & {"p.a", "p.c"}}
    assert graph == {"p.a": {"p.b"}, "p.b": {"p.a"}}
    assert find_cycle(graph) == ["p.a", "p.b", "p.a"]



def test_a_stage_module_that_fails_to_import_fails_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from build_tools import cli

    monkeypatch.setattr(cli, "STAGE_MODULES", (*cli.STAGE_MODULES, "build_tools.no_such_stage"))
    with pytest.raises(ModuleNotFoundError, match="no_such_stage"):
        cli.make_parser()
