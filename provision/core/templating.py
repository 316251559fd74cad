"""The compose template as a file: its Jinja environment (the `q` and `urlquote` filters), the parsed and compiled
template cached per version of the file, and the `vars.NAME` it reads.

It imports nothing of provision but its errors, so that config (which checks an env's variables against the
template) and render (which renders it) both use it without importing each other.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import jinja2
from jinja2 import nodes

from .errors import TemplateError


def q(value: object) -> str:
    """A YAML double-quoted scalar for `value`, with `$` doubled so compose does not interpolate it."""
    return json.dumps(str(value), ensure_ascii=False).replace("$", "$$")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = q
    env.filters["urlquote"] = lambda v: quote(str(v), safe="")
    return env


@lru_cache(maxsize=16)
def _parsed(path: str, mtime_ns: int) -> nodes.Template:
    """The template's syntax tree, parsed once per version of the file for both of its uses below."""
    source = Path(path).read_text(encoding="utf-8")
    try:
        return _environment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from exc


@lru_cache(maxsize=16)
def _load_template(path: str, mtime_ns: int) -> jinja2.Template:
    return _environment().from_string(_parsed(path, mtime_ns))


@lru_cache(maxsize=16)
def _template_variables(path: str, mtime_ns: int) -> frozenset[str] | None:
    tree = _parsed(path, mtime_ns)
    found: set[str] = set()
    reads = 0
    for attr in tree.find_all(nodes.Getattr):
        if isinstance(attr.node, nodes.Name) and attr.node.name == "vars":
            found.add(attr.attr)
            reads += 1
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.node, nodes.Name) and item.node.name == "vars" and isinstance(item.arg, nodes.Const) \
                and isinstance(item.arg.value, str):
            found.add(item.arg.value)
            reads += 1
    uses = sum(1 for n in tree.find_all(nodes.Name) if n.name == "vars")
    called = any(isinstance(c.node, nodes.Getattr) and isinstance(c.node.node, nodes.Name) and c.node.node.name == "vars"
                 for c in tree.find_all(nodes.Call))  # vars.items(), vars.get(...): any name may be read
    return frozenset(found) if uses == reads and not called else None


def _version(path: Path) -> int:
    """The file's modification time, which keys the caches above; TemplateError when it cannot be read."""
    try:
        return path.stat().st_mtime_ns
    except OSError as exc:
        raise TemplateError(f"template {path} cannot be read: {exc.strerror}") from exc


def template_variables(path: Path) -> frozenset[str] | None:
    """The names the template reads as `vars.NAME` (or `vars["NAME"]`); None when it also reads `vars` as a
    whole (a loop, a filter), so that which names it uses cannot be told."""
    return _template_variables(str(path), _version(path))


def load_template(path: Path) -> jinja2.Template:
    """The compiled template at `path` (cached until the file changes)."""
    return _load_template(str(path), _version(path))
