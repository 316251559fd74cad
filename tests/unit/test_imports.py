"""The package's import structure, read from its source: imports inside functions count (they hide a cycle from
Python, not from a reader); imports under `if TYPE_CHECKING:` do not (they are for the type checker only)."""

from __future__ import annotations

import ast
from pathlib import Path

import provision

PACKAGE = Path(provision.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """The provision modules `path` imports anywhere but under `if TYPE_CHECKING:`."""
    package = _module(path).split(".") if path.name == "__init__.py" else _module(path).split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import names
                found.update(f"{module}.{alias.name}" for alias in node.names)
            else:
                found.add(module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module(path): path for path in PACKAGE.rglob("*.py")}
    return {name: _imported(path) & set(modules) for name, path in modules.items()}


def _reached(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


def test_the_env_file_layer_reaches_neither_rendering_nor_the_model() -> None:
    graph = _graph()
    assert graph["provision.config"]  # the graph is read at all
    later = _reached(graph, "provision.config") & {"provision.render", "provision.model", "provision.service"}
    assert later == set(), f"config.py reaches {sorted(later)}, which import config.py: a cycle"
    assert _reached(graph, "provision.templating") == {"provision.errors"}
    assert "provision.templating" in graph["provision.config"] and "provision.templating" in graph["provision.render"]


def test_the_only_import_cycles_are_the_known_ones() -> None:
    """provision/ has no import cycle, counting imports inside functions: a new one fails here."""
    graph = _graph()
    cycles = {module for module in graph if module in _reached(graph, module)}
    assert cycles == set()
