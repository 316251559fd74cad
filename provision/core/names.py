"""Project and environment names: validated up front, before anything is created."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from .errors import InvalidName

PROJECT_MAX = 40
ENV_MAX = 20
# the one name rule: a lowercase RFC 1123 label without "--" (also published in the HTTP API's schema)
NAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_NAME = re.compile(NAME_PATTERN)

LABEL_PREFIX = "io.provision"
LABEL_PROJECT = f"{LABEL_PREFIX}.project"
LABEL_ENV = f"{LABEL_PREFIX}.env"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_CONFIG_HASH = f"{LABEL_PREFIX}.config-hash"
# the env's owner id on what the local backend creates (containers, networks, data volumes it makes itself)
LABEL_OWNER = f"{LABEL_PREFIX}.owner"


def validate_name(name: object, *, kind: str = "project", max_length: int = PROJECT_MAX) -> str:
    """Return `name` if it is a lowercase DNS label of at most `max_length` characters.

    Raises InvalidName naming the value and the rule it breaks.
    """
    if not isinstance(name, str) or not name:
        raise InvalidName(f"{kind} name is empty: give a lowercase name such as 'shop'")
    shown = name if len(name) <= 60 else name[:57] + "..."
    if len(name) > max_length:
        raise InvalidName(f"{kind} name {shown!r} is {len(name)} characters long: the limit is {max_length}")
    if not _NAME.fullmatch(name):
        suggestion = normalise(name)
        hint = f" (did you mean {suggestion!r}?)" if suggestion and _NAME.fullmatch(suggestion) else ""
        raise InvalidName(
            f"{kind} name {shown!r} is invalid: use lowercase letters, digits and single hyphens, "
            f"starting and ending with a letter or digit{hint}"
        )
    return name


def validate_env_name(name: object) -> str:
    """Validate an environment name (same rules as projects, shorter limit)."""
    return validate_name(name, kind="env", max_length=ENV_MAX)


def normalise(name: str) -> str:
    """The canonical form two names collide on: lowercase, runs of non-alphanumerics become one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def find_collisions(names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of names (first seen, later one) that are equal after `normalise`."""
    seen: dict[str, str] = {}
    collisions = []
    for name in names:
        key = normalise(name)
        if key in seen:
            collisions.append((seen[key], name))
        else:
            seen[key] = name
    return collisions


def compose_project_name(env: str, project: str) -> str:
    """The compose project name for a project in an env; unique because names contain no '_'."""
    return f"{project}_{env}"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """'did you mean 'x'? ' for the closest candidate, or '' when none is close."""
    close = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f"did you mean {close[0]!r}? " if close else ""
