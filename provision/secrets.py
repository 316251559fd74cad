"""Secret values: hidden from repr and str, revealed only on purpose."""

from __future__ import annotations

import secrets as _random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# The generated secrets every stack gets, by the env var name the template references.
GENERATED_SECRETS = ("DB_PASSWORD", "JWT_SECRET")


@dataclass(frozen=True, slots=True)
class Secret:
    """A string that never shows itself by accident: `str()` and `repr()` give `***`."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The real value; call only where it must leave the process (env files, APIs)."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __bool__(self) -> bool:
        return bool(self._value)


def generate_secret() -> Secret:
    """A fresh random secret: 48 hex characters, safe in URLs, env files and YAML."""
    return Secret(_random.token_hex(24))


def generate_missing(existing: Mapping[str, Secret], names: Iterable[str] = GENERATED_SECRETS) -> dict[str, Secret]:
    """`existing` plus a new value for each name it lacks; existing values are never replaced."""
    result = dict(existing)
    for name in names:
        if not result.get(name):
            result[name] = generate_secret()
    return result


def mask_url_password(url: str) -> str:
    """`url` with its password (if any) replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class SecretURL:
    """A URL that embeds a password: prints masked, `reveal()` gives the real one."""

    _url: str = field(repr=False)

    def reveal(self) -> str:
        return self._url

    @property
    def masked(self) -> str:
        return mask_url_password(self._url)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"SecretURL({self.masked!r})"
