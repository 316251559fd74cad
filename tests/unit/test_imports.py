"""The package's import structure, read from its source and tasks.py. Every import counts: inside functions (they
hide a cycle from Python, not from a reader) and under `if TYPE_CHECKING:` (a cycle for the type checker is one
for a reader too). `from package import name` imports the module `package.name` when there is one."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import provision

PACKAGE = Path(provision.__file__).parent
REPO = PACKAGE.parent

#: The layers, each module's found by the longest module-name prefix that names it or a package above it (a module
#: keeps its layer when it moves into a sub-package); the bare package name `provision` names only its own
#: __init__ (the public API, lazy). Top to bottom: a layer imports only its own and those under it, as ALLOWED says.
LAYERS = {
    "tasks": "entry",
    "provision": "entry",
    "provision.__main__": "entry",
    "provision.cli": "entry",
    "provision.http": "entry",
    "provision.service": "service",
    "provision.service.archive": "service",
    "provision.backends": "backend core",
    "provision.backends.base": "backend core",
    "provision.backends.local": "backends",
    "provision.backends.coolify": "backends",
    "provision.state": "state",
    "provision.infra": "infra",
    "provision.core": "core",
    "provision.core.archiving": "core",
}
_LOWER = {"state", "infra", "backend core", "core"}
#: What each layer may import: entry points reach a backend through the registry only; the service reaches the
#: backends the same way; a backend neither the service nor an entry point; the core nothing that keeps state,
#: serves, or talks to a backend.
ALLOWED = {
    "entry": {"entry", "service"} | _LOWER,
    "service": {"service"} | _LOWER,
    "backends": {"backends"} | _LOWER,
    "backend core": _LOWER,
    "state": _LOWER,
    "infra": _LOWER,
    "core": {"core", "infra"},
}


def _module(path: Path) -> str:
    if path == REPO / "tasks.py":
        return "tasks"
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module(path): path for path in [*PACKAGE.rglob("*.py"), REPO / "tasks.py"]}


def _imports(path: Path, modules: set[str]) -> set[tuple[str, str]]:
    """(module, name) for every `from module import name` in `path`, (module, "") for `import module`, with
    relative imports resolved and `from package import submodule` read as an import of the submodule."""
    own = _module(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.add((submodule, "") if submodule in modules else (module, alias.name))
        elif isinstance(node, ast.Import):
            found.update((alias.name, "") for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    return {name: {module for module, _ in _imports(path, set(sources))} & set(sources) - {name}
            for name, path in sources.items()}


def _reached(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


def _layer(module: str) -> str | None:
    named = [key for key in LAYERS if key == module or (key != "provision" and module.startswith(key + "."))]
    return LAYERS[max(named, key=len)] if named else None


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert {"provision.core.templating", "provision.core.errors"} <= graph["provision.core.config"]
    assert "provision.cli" in graph["tasks"] and "provision.infra.hints" in graph["tasks"]  # from provision import hints
    assert "provision.service" in graph["provision"]  # under TYPE_CHECKING
    assert "provision.cli.completion" in graph["provision.__main__"]  # inside a function


def test_no_import_cycle() -> None:
    """provision/ has no import cycle, counting every import: a new one fails here, naming its modules."""
    graph = _graph()
    cycles = sorted(module for module in graph if module in _reached(graph, module))
    assert cycles == []


def test_the_env_file_layer_reaches_neither_rendering_nor_the_model() -> None:
    graph = _graph()
    later = _reached(graph, "provision.core.config") & {"provision.core.render", "provision.core.model", "provision.service"}
    assert later == set(), f"config.py reaches {sorted(later)}, which import config.py"
    assert _reached(graph, "provision.core.templating") == {"provision.core.errors"}
    assert "provision.core.templating" in graph["provision.core.config"] and "provision.core.templating" in graph["provision.core.render"]


def test_no_module_imports_another_modules_underscore_name() -> None:
    sources = _sources()
    found = sorted(f"{name} imports {module}.{imported}" for name, path in sources.items()
                   for module, imported in _imports(path, set(sources))
                   if imported.startswith("_") and not (imported.startswith("__") and imported.endswith("__")))
    assert found == []


def test_no_private_member_access() -> None:
    """ruff's SLF001 (`module._name`, `obj._attr` from outside) on provision/ and tasks.py."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff is not None, "ruff is not installed: `pip install -e '.[test]'` (scripts/bootstrap.sh does)"
    result = subprocess.run([ruff, "check", "--no-cache", "--select", "SLF001", "--output-format", "concise",
                             "provision", "tasks.py"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_has_a_layer() -> None:
    assert sorted(module for module in _sources() if _layer(module) is None) == []
    new_backends = {module for module in _sources()
                    if module.startswith("provision.backends.") and _layer(module) == "backend core"}
    assert new_backends == {"provision.backends.base"}, "a backend package needs its line in LAYERS"


def test_each_layer_imports_only_what_it_may() -> None:
    graph = _graph()
    crossing = sorted(f"{module} ({_layer(module)}) imports {imported} ({_layer(imported)})"
                      for module, imported_set in graph.items() for imported in imported_set
                      if _layer(imported) not in ALLOWED[str(_layer(module))])
    assert crossing == []


def test_a_backend_imports_no_other_backend() -> None:
    graph = _graph()
    backends = {key for key, layer in LAYERS.items() if layer == "backends"}
    crossing = sorted(f"{module} imports {imported}" for module, imported_set in graph.items()
                      for imported in imported_set for theirs in backends
                      if imported.startswith(theirs) and _layer(module) == "backends" and not module.startswith(theirs))
    assert crossing == []


def test_every_public_name_of_the_package_resolves() -> None:
    """`provision.__init__` imports its names lazily, by module path: each must still be where it says."""
    import provision

    for name in provision.__all__:
        assert getattr(provision, name).__name__ == name
