"""A small Laravel-style validator, good enough to mirror Coolify's API errors.

Only the rules Coolify's API controllers use for the emulated endpoints are
implemented: ``required``, ``required_without:x``, ``nullable``, ``string``, ``boolean``,
``array`` (and ``array:k1,k2``), ``integer``, ``min:n``, ``max:n``, ``regex`` (a callable
here) and ``in:a,b``. Messages follow Laravel's English defaults (Coolify ships no
``lang/en/validation.php``), except ``required`` where the controller goes through
``customApiValidator``, which overrides it with "This field is required." (``validate``'s
``required_message``). The second half of the module is what happens after validation:
the models' ``strip_tags`` mutators and the PostgreSQL columns (a 500 when too long).
"""

from __future__ import annotations

import re
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


#: PCRE's ``\s`` under ``PCRE2_UCP`` (PHP's ``/u`` sets it): ``\p{Z}``, ``\h`` and ``\v`` (pcre2pattern(3),
#: "Generic character types"). Python's ``str.isspace`` differs (it takes U+001C-U+001F, not U+180E).
_PCRE_SPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u180e\u2028\u2029\u202f\u205f\u3000"
                        + "".join(chr(c) for c in range(0x2000, 0x200B)))


def _pattern_class(value: str, punctuation: str) -> bool:
    r"""``/^[\p{L}\p{M}\p{N}\s<punctuation>]+$/u``: non-empty, every character a letter, mark, number,
    PCRE space or one of ``punctuation``."""
    if not value:
        return False
    for ch in value:
        if ch in punctuation or ch in _PCRE_SPACE or unicodedata.category(ch)[0] in ("L", "M", "N", "Z"):
            continue
        return False
    return True


def is_valid_name(value: str) -> bool:
    r"""Coolify's ``NAME_PATTERN`` ``/^[\p{L}\p{M}\p{N}\s\-_.@\/&()#,:+]+$/u``
    (app/Support/ValidationPatterns.php:13; ``nameRules`` :417-433 add required|nullable, string, min:3, max:255)."""
    return _pattern_class(value, "-_.@/&()#,:+")


def is_valid_description(value: str) -> bool:
    r"""Coolify's ``DESCRIPTION_PATTERN`` ``/^[\p{L}\p{M}\p{N}\s\-_.,!?()'"+=*@\/&]+$/u``
    (app/Support/ValidationPatterns.php:18; ``descriptionRules`` :438-453 add nullable, string, max:255): no ``:``,
    ``;``, ``#``, ``<``, ``%``, ``~`` or dashes other than ``-``."""
    return _pattern_class(value, "-_.,!?()'\"+=*@/&")


#: ``nameMessages`` (app/Support/ValidationPatterns.php:458-465)
NAME_MESSAGES: dict[str, str] = {
    "name.regex": "The name may only contain letters (including Unicode), numbers, spaces, "
    "and these characters: - _ . / @ & ( ) # , : +",
    "name.min": "The name must be at least :min characters.",
    "name.max": "The name may not be greater than :max characters.",
}

#: ``descriptionMessages`` (app/Support/ValidationPatterns.php:470-476)
DESCRIPTION_MESSAGES: dict[str, str] = {
    "description.regex": "The description may only contain letters (including Unicode), numbers, spaces, and "
    "common punctuation: - _ . , ! ? ( ) ' \" + = * / @ &",
    "description.max": "The description may not be greater than :max characters.",
}

#: ``combinedMessages`` (app/Support/ValidationPatterns.php:795-798): what the project controller and the
#: environment PATCH pass (app/Http/Controllers/Api/ProjectController.php:251, 370, 770)
COMBINED_MESSAGES: dict[str, str] = {**NAME_MESSAGES, **DESCRIPTION_MESSAGES}


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
    if "integer" in rules and not isinstance(value, (list, dict)):  # Laravel getSize: a numeric rule
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if number is None and isinstance(value, str) and value.lstrip("-").isdigit():
            number = int(value)
        return (number if number is not None else len(value) if isinstance(value, str) else 0), "numeric"
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


def _message(field: str, rule: str, param: str | None, kind: str, messages: Mapping[str, str],
             pattern: str | None = None) -> str:
    custom = (messages.get(f"{field}.{rule}") or (messages.get(f"{pattern}.{rule}") if pattern else None)
              or messages.get(rule))
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
        if param:  # `array:a,b`: an array whose keys are all listed (Laravel validateArray)
            keys = range(len(value)) if isinstance(value, list) else value.keys() if isinstance(value, dict) else None
            ok = keys is not None and all(str(k) in param.split(",") for k in keys)
            return ok, name, param, "string"
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


#: ``customApiValidator`` (bootstrap/helpers/shared.php:2417-2425) replaces Laravel's required message;
#: controllers calling ``Validator::make`` directly (projects, environments, POST/PATCH /services) do not.
CUSTOM_REQUIRED = "This field is required."


def validate(
    data: Mapping[str, Any],
    rules: Mapping[str, list[Rule]],
    messages: Mapping[str, str] | None = None,
    *,
    required_message: str | None = CUSTOM_REQUIRED,
) -> dict[str, list[str]]:
    """Validate ``data`` against ``rules``; returns Laravel's ``errors`` bag (maybe empty).

    Nested rules use ``parent.*.child`` keys, expanded over list items. ``required_message=None``:
    Laravel's own "The :attribute field is required." (``Validator::make`` without custom messages).
    """
    base = {"required": required_message} if required_message else {}
    msgs: Mapping[str, str] = {**base, **(messages or {})}
    errors: dict[str, list[str]] = {}
    for pattern, field_rules in rules.items():
        for field, value in _expand(data, pattern):
            if _missing_without(data, value, field_rules):
                errors.setdefault(field, []).append(_required_without_message(field, field_rules))
                continue
            _validate_field(field, value, field_rules, msgs, errors, pattern)
    return errors


def _missing_without(data: Mapping[str, Any], value: Any, rules: list[Rule]) -> bool:
    """Laravel ``required_without:other``: required when ``other`` is missing or empty."""
    for rule in rules:
        if isinstance(rule, str) and rule.startswith("required_without:"):
            others = rule.partition(":")[2].split(",")
            if any(_is_empty_for_required(data.get(o)) for o in others) and _is_empty_for_required(value):
                return True
    return False


def _required_without_message(field: str, rules: list[Rule]) -> str:
    rule = next(r for r in rules if isinstance(r, str) and r.startswith("required_without:"))
    others = " / ".join(attribute_label(o) for o in rule.partition(":")[2].split(","))
    return f"The {attribute_label(field)} field is required when {others} is not present."


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
    field: str, value: Any, rules: list[Rule], msgs: Mapping[str, str], errors: dict[str, list[str]],
    pattern: str | None = None,
) -> None:
    nullable = "nullable" in rules
    required = "required" in rules
    if required and _is_empty_for_required(value):
        errors.setdefault(field, []).append(msgs.get(f"{field}.required") or msgs.get("required")
                                            or f"The {attribute_label(field)} field is required.")
        return
    if value is MISSING:
        return
    if value is None and nullable:
        return
    for rule in rules:
        if rule in ("required", "nullable", "sometimes") or (
                isinstance(rule, str) and rule.startswith("required_without:")):
            continue
        ok, name, param, kind = _check(value, rule, rules)
        if not ok:
            errors.setdefault(field, []).append(_message(field, name, param, kind, msgs, pattern))


def extra_fields(data: Mapping[str, Any], allowed: list[str] | tuple[str, ...]) -> list[str]:
    """``array_diff(array_keys($request->all()), $allowedFields)``."""
    return [k for k in data.keys() if k not in allowed]


def merge_extra(errors: dict[str, list[str]], extras: list[str]) -> dict[str, list[str]]:
    """Append Coolify's "This field is not allowed." for every extra field."""
    for field in extras:
        errors.setdefault(field, []).append("This field is not allowed.")
    return errors


# --- what happens after validation: model mutators and PostgreSQL columns ------------------------------------


def strip_tags(value: Any) -> str:
    """PHP ``strip_tags`` (no allowed tags), as ``HasSafeStringAttribute`` (app/Traits/HasSafeStringAttribute.php:
    10-24) applies it to every ``name`` and ``description`` written to its models. ``null`` becomes ``""`` (PHP 8:
    a deprecation, not an error). A ``<`` followed by whitespace stays; otherwise everything up to the matching
    ``>`` goes (quotes inside a tag may hold ``>``; an unclosed tag runs to the end); ``<!-- -->`` comments and
    NUL bytes go too."""
    text = "" if value is None else str(value)
    out: list[str] = []
    i, depth, quote = 0, 0, ""
    while i < len(text):
        ch = text[i]
        if depth == 0:
            if ch == "<" and text.startswith("<!--", i):
                end = text.find("-->", i + 4)
                i = len(text) if end == -1 else end + 3
                continue
            if ch == "<" and not (i + 1 < len(text) and text[i + 1].isspace()):
                depth = 1
            elif ch != "\0":
                out.append(ch)
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        i += 1
    return "".join(out)


def php_trim(value: str) -> str:
    """PHP ``trim`` / Laravel ``Str::trim`` without arguments: spaces, tabs, newlines, NUL and vertical tabs."""
    return value.strip(" \t\n\r\0\x0b")


def environment_name(value: Any) -> str:
    """What an environment's name is stored as: ``strip_tags``, then ``Environment::customizeName``
    (app/Models/Environment.php:143-146): lower-cased, trimmed, ``/`` → ``-``."""
    return php_trim(strip_tags(value).lower()).replace("/", "-")


def tag_names(values: Any) -> list[str]:
    """``HandlesTagsApi::normalizeTagNames`` (app/Http/Controllers/Api/Concerns/HandlesTagsApi.php:166-173):
    each ``strtolower(trim(strip_tags((string) $name)))``, duplicates dropped, order kept."""
    seen: list[str] = []
    for value in values if isinstance(values, list) else list(values.values()) if isinstance(values, dict) else []:
        name = php_trim(strip_tags("" if value is None else value if isinstance(value, str) else json_scalar(value)))
        name = name.lower()
        if name not in seen:
            seen.append(name)
    return seen


def json_scalar(value: Any) -> str:
    """PHP's ``(string)`` of a decoded JSON scalar: true → "1", false/null → "", numbers as written."""
    if value is True:
        return "1"
    if value is False or value is None:
        return ""
    return str(value)


#: ``varchar(n)`` columns the emulated routes write (PostgreSQL: Laravel's ``string()`` is ``varchar(255)``).
#: A longer value fails with SQLSTATE 22001 and the API answers 500 ``{"message": "Server Error"}``; the
#: controllers' own ``max:`` rules catch most of them first, these are the ones that stay reachable.
VARCHAR_COLUMNS: dict[tuple[str, str], int] = {
    # database/migrations/2023_03_27_075351_create_projects_table.php:17-18
    ("projects", "name"): 255, ("projects", "description"): 255,
    # 2023_03_27_075444_create_environments_table.php:16; 2023_12_30_134507_add_description_to_environments.php:15
    ("environments", "name"): 255, ("environments", "description"): 255,
    # 2023_03_27_083621_create_services_table.php:17 (description: longText, 2023_09_20_082541_update_services_table.php:16)
    ("services", "name"): 255,
    # 2023_12_31_173041_create_scheduled_tasks_table.php:18-21 (never altered)
    ("scheduled_tasks", "name"): 255, ("scheduled_tasks", "command"): 255, ("scheduled_tasks", "frequency"): 255,
    ("scheduled_tasks", "container"): 255,
    # 2024_02_01_111228_create_tags_table.php:17
    ("tags", "name"): 255,
    # 2023_05_04_194548_create_environment_variables_table.php:17 (value: text since
    # 2023_06_23_114131_change_env_var_value_length.php:15); comment: 2025_11_17_145255_add_comment_to_environment_variables_table.php:15
    ("environment_variables", "key"): 255, ("environment_variables", "comment"): 256,
    # 2024_01_23_113129_create_shared_environment_variables_table.php:16 (value: text since
    # 2024_01_29_072322_change_env_variable_length.php:15); comment: 2025_11_17_145255_…:19
    ("shared_environment_variables", "key"): 255, ("shared_environment_variables", "comment"): 256,
}


def column_overflow(table: str, values: Mapping[str, Any]) -> str | None:
    """The first ``table.column`` among ``values`` that PostgreSQL refuses as too long for its ``varchar(n)``
    (excess characters that are all spaces are truncated instead, as PostgreSQL does), else None."""
    for column, value in values.items():
        limit = VARCHAR_COLUMNS.get((table, column))
        if limit is not None and isinstance(value, str) and value[limit:].strip(" "):
            return f"{table}.{column}"
    return None


def is_bigint(value: str) -> bool:
    """Whether PostgreSQL reads a path parameter compared with a ``bigint`` id (``where('id', $id)``) as one;
    anything else fails with SQLSTATE 22P02 (not a number) or 22003 (out of range): a 500."""
    text = value.strip()
    return re.fullmatch(r"[+-]?\d+", text) is not None and -(2 ** 63) <= int(text) < 2 ** 63
