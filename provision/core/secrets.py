"""Secret values: hidden from repr and str, revealed only on purpose."""

from __future__ import annotations

import secrets as _random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MASK = "***"

# The generated secrets every stack gets, by env var name: the owner role's password (db_url), the API's JWT
# secret, the bootstrap superuser's password (the tool's own) and the API's login (roles.py).
GENERATED_SECRETS = ("DB_PASSWORD", "JWT_SECRET", "DB_ADMIN_PASSWORD", "AUTHENTICATOR_PASSWORD")


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
    """`url` with its password (if any) replaced by `***`, the rest as written.

    A URL provision assembles percent-encodes its user and password (model.db_url), so its userinfo holds no
    `@`, `/`, `?` or `#`. One that does not (a password written raw, `p@ss#word`) has an `@` after what a URL
    parser takes for its authority: then the userinfo is taken to run to the last `@`, so that such a password
    is masked whole rather than shown in part (at worst, more than the password is masked)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority_end = next((i for i, char in enumerate(rest) if char in "/?#"), len(rest))
    if "@" in rest[authority_end:]:  # not percent-encoded: the userinfo runs to the last @
        at = rest.rfind("@")
    else:
        at = rest.rfind("@", 0, authority_end)
    user, colon, _ = rest[:max(at, 0)].partition(":")
    if at < 0 or not colon:
        return url
    return f"{scheme}://{user}:{MASK}@{rest[at + 1:]}"


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
