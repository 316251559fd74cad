"""The backend contract's shape, read from the source: a small core, and no backend method that exists only to
say it cannot (a lacking ability is a missing capability protocol, which the service handles in one place)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from provision.backends import base
from provision.backends.coolify.backend import CoolifyBackend
from provision.backends.local.backend import LocalBackend

PACKAGE = Path(base.__file__).resolve().parent.parent


def _members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")} | set(
        getattr(protocol, "__annotations__", {}))


def test_the_core_protocol_has_at_most_twelve_members() -> None:
    assert len(_members(base.Backend)) <= 12, sorted(_members(base.Backend))


def _is_stub(function: ast.FunctionDef) -> bool:
    """Only a docstring, `pass`, `...`, a constant or empty container returned, or a NotSupported raised."""
    body = [node for node in function.body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    if not body:
        return True
    if len(body) != 1:
        return False
    [node] = body
    if isinstance(node, ast.Pass):
        return True
    if isinstance(node, ast.Return):
        value = node.value
        return value is None or (isinstance(value, ast.Constant) and not isinstance(value.value, str)) or (
            isinstance(value, (ast.Dict, ast.List, ast.Tuple)) and not getattr(value, "keys", None)
            and not getattr(value, "elts", None))
    if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
        return isinstance(node.exc.func, ast.Name) and node.exc.func.id == "NotSupported"
    return False


@pytest.mark.parametrize("backend", [LocalBackend, CoolifyBackend], ids=lambda b: b.__name__)
def test_no_backend_method_is_a_stub(backend: type) -> None:
    tree = ast.parse(inspect.getsource(backend))
    [cls] = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    stubs = [node.name for node in cls.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
             and _is_stub(node)]
    assert stubs == []


def test_the_stub_rule_catches_a_stub() -> None:
    source = "def usage(self):\n    '''Nothing.'''\n    return {}\n\ndef lock(self):\n    raise NotSupported('x')\n"
    functions = [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    assert all(_is_stub(f) for f in functions)


def test_no_module_is_over_six_hundred_and_fifty_lines() -> None:
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 650}
    assert long == {}
