"""A small Laravel-style validator, good enough to mirror Coolify's API errors.

Only the rules Coolify's API controllers use for the emulated endpoints are
implemented: ``required``, ``nullable``, ``string``, ``boolean``, ``array``,
``integer``, ``min:n``, ``max:n``, ``regex`` (a callable here) and ``in:a,b``.
Messages follow Laravel 11's English defaults, except ``required`` which
Coolify's ``customApiValidator`` overrides with "This field is required.".
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

#: Laravel's ``boolean`` rule: JSON true/false, 0/1 and "0"/"1" only.
_BOOL_OK: tuple[Any, ...] = (True, False, 0, 1, "0", "1")

Rule = str | Callable[[Any], bool]

MISSING = object()


def attribute_label(field: str) -> str:
    """Laravel's display name for an attribute: underscores become spaces."""
    return field.replace("_", " ")


def is_bool_like(value: Any) -> bool:
    """True when Laravel's ``boolean`` rule accepts ``value``."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int) and value in (0, 1):
        return True
    return isinstance(value, str) and value in ("0", "1")


def to_bool(value: Any) -> bool:
    """Cast a value accepted by ``boolean`` to a Python bool."""
    if isinstance(value, str):
        return value == "1"
    return bool(value)


def query_bool(value: str | None, default: bool) -> bool:
    """``$request->boolean()``: FILTER_VALIDATE_BOOLEAN semantics for query strings."""
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "on", "yes")


def is_valid_name(value: str) -> bool:
    """Coolify's ``NAME_PATTERN``: letters, marks, numbers, whitespace and ``-_.@/&()#,:+``."""
    if not value:
        return False
    for ch in value:
        if ch in "-_.@/&()#,:+" or ch.isspace():
            continue
        cat = unicodedata.category(ch)
        if cat[0] in ("L", "M", "N"):
            continue
        return False
    return True


NAME_MESSAGES: dict[str, str] = {
    "name.regex": "The name may only contain letters (including Unicode), numbers, spaces, "
    "and these characters: - _ . / @ & ( ) # , : +",
    "name.min": "The name must be at least :min characters.",
    "name.max": "The name may not be greater than :max characters.",
}


def _is_empty_for_required(value: Any) -> bool:
    if value is None or value is MISSING:
        return True
    if isinstance(value, str) and value.strip() == "":
        return True
    if isinstance(value, (list, dict)) and len(value) == 0:
        return True
    return False


def _size(value: Any, rules: list[Rule]) -> tuple[float, str]:
    """Size used by min/max and the message flavour (string/array/numeric)."""
    if "string" in rules or isinstance(value, str):
        return (len(value) if isinstance(value, str) else 0), "string"
    if isinstance(value, (list, dict)):
        return len(value), "array"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value, "numeric"
    return 0, "string"


#: Laravel 11's English defaults for the rules whose message does not depend on the size kind.
_RULE_MESSAGES: dict[str, str] = {
    "string": "The {label} field must be a string.",
    "boolean": "The {label} field must be true or false.",
    "array": "The {label} field must be an array.",
    "integer": "The {label} field must be an integer.",
    "regex": "The {label} field format is invalid.",
    "in": "The selected {label} is invalid.",
}

#: ``min`` / ``max`` defaults by size kind (see :func:`_size`); any other kind reads as "string".
_SIZE_MESSAGES: dict[tuple[str, str], str] = {
    ("min", "array"): "The {label} field must have at least {param} items.",
    ("min", "numeric"): "The {label} field must be at least {param}.",
    ("min", "string"): "The {label} field must be at least {param} characters.",
    ("max", "array"): "The {label} field must not have more than {param} items.",
    ("max", "numeric"): "The {label} field must not be greater than {param}.",
    ("max", "string"): "The {label} field must not be greater than {param} characters.",
}


def _message(field: str, rule: str, param: str | None, kind: str, messages: Mapping[str, str]) -> str:
    custom = messages.get(f"{field}.{rule}") or messages.get(rule)
    label = attribute_label(field)
    if custom:
        return custom.replace(":attribute", label).replace(":min", param or "").replace(":max", param or "")
    if rule in ("min", "max"):
        template = _SIZE_MESSAGES.get((rule, kind), _SIZE_MESSAGES[(rule, "string")])
    else:
        template = _RULE_MESSAGES.get(rule, "The {label} field is invalid.")
    return template.format(label=label, param=param)


def _check(value: Any, rule: Rule, rules: list[Rule]) -> tuple[bool, str, str | None, str]:
    """Evaluate one rule. Returns (ok, rule_name, param, size_kind)."""
    if callable(rule):
        return (isinstance(value, str) and rule(value)), "regex", None, "string"
    name, _, param = rule.partition(":")
    if name == "string":
        return isinstance(value, str), name, None, "string"
    if name == "boolean":
        return is_bool_like(value), name, None, "string"
    if name == "array":
        return isinstance(value, (list, dict)), name, None, "string"
    if name == "integer":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and value.lstrip("-").isdigit()
        )
        return ok, name, None, "string"
    if name in ("min", "max"):
        size, kind = _size(value, rules)
        limit = float(param)
        ok = size >= limit if name == "min" else size <= limit
        return ok, name, param, kind
    if name == "in":
        return (str(value) in param.split(",")), name, param, "string"
    return True, name, param, "string"


def validate(
    data: Mapping[str, Any],
    rules: Mapping[str, list[Rule]],
    messages: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Validate ``data`` against ``rules``; returns Laravel's ``errors`` bag (maybe empty).

    Nested rules use ``parent.*.child`` keys, expanded over list items.
    """
    msgs: Mapping[str, str] = {"required": "This field is required.", **(messages or {})}
    errors: dict[str, list[str]] = {}
    for pattern, field_rules in rules.items():
        for field, value in _expand(data, pattern):
            _validate_field(field, value, field_rules, msgs, errors)
    return errors


def _expand(data: Mapping[str, Any], pattern: str) -> list[tuple[str, Any]]:
    parts = pattern.split(".")
    results: list[tuple[str, Any]] = [("", data)]
    for part in parts:
        nxt: list[tuple[str, Any]] = []
        for prefix, node in results:
            if part == "*":
                if isinstance(node, list):
                    for i, item in enumerate(node):
                        nxt.append((f"{prefix}.{i}" if prefix else str(i), item))
                elif isinstance(node, dict):
                    for k, item in node.items():
                        nxt.append((f"{prefix}.{k}" if prefix else str(k), item))
            else:
                child = node.get(part, MISSING) if isinstance(node, dict) else MISSING
                nxt.append((f"{prefix}.{part}" if prefix else part, child))
        results = nxt
    return results


def _validate_field(
    field: str, value: Any, rules: list[Rule], msgs: Mapping[str, str], errors: dict[str, list[str]]
) -> None:
    nullable = "nullable" in rules
    required = "required" in rules
    if required and _is_empty_for_required(value):
        errors.setdefault(field, []).append(msgs.get(f"{field}.required") or msgs["required"])
        return
    if value is MISSING:
        return
    if value is None and nullable:
        return
    for rule in rules:
        if rule in ("required", "nullable", "sometimes"):
            continue
        ok, name, param, kind = _check(value, rule, rules)
        if not ok:
            errors.setdefault(field, []).append(_message(field, name, param, kind, msgs))


def extra_fields(data: Mapping[str, Any], allowed: list[str] | tuple[str, ...]) -> list[str]:
    """``array_diff(array_keys($request->all()), $allowedFields)``."""
    return [k for k in data.keys() if k not in allowed]


def merge_extra(errors: dict[str, list[str]], extras: list[str]) -> dict[str, list[str]]:
    """Append Coolify's "This field is not allowed." for every extra field."""
    for field in extras:
        errors.setdefault(field, []).append("This field is not allowed.")
    return errors
