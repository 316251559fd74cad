"""Pure: what makes a project a branch of another (issue 23). A branch is recorded twice: in its project
record (`ProjectRecord.branch`, this checkout's) and on the backend (labels on its containers, the parent on its
data volume too), so that every checkout of the same owner sees it as a branch and never as an orphan."""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import names
from .errors import ConfigError

LABEL_PARENT = f"{names.LABEL_PREFIX}.parent"
LABEL_PARENT_ENV = f"{names.LABEL_PREFIX}.parent-env"
LABEL_TAKEN_AT = f"{names.LABEL_PREFIX}.taken-at"
LABEL_EXPIRES = f"{names.LABEL_PREFIX}.expires"
NEVER = "never"  # the expiry label of a branch without a lifetime

_TTL = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_ttl(text: str, *, where: str = "--ttl") -> int:
    """Seconds of a lifetime written 3d, 12h, 90m, 1d12h (or 30s); ConfigError naming `where` otherwise."""
    found = _TTL.fullmatch(text.strip())
    if not text.strip() or found is None or not any(found.groups()):
        raise ConfigError(f"{where} {text!r}: use a lifetime such as 3d, 12h, 90m or 1d12h")
    days, hours, minutes, secs = (int(g or 0) for g in found.groups())
    seconds = days * 86400 + hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise ConfigError(f"{where} {text!r}: a lifetime must be longer than zero")
    return seconds


def epoch_of(stamp: str) -> float:
    """Seconds since the epoch of a `utc_now()` stamp (2026-12-08T00:18:16Z)."""
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


@dataclass(frozen=True)
class BranchMark:
    """A project's life as a branch: its parent (project and env), when its data was taken from the parent,
    when it expires (None: never), how it was copied (logical, reflink) and the masking script applied."""

    parent: str
    parent_env: str
    taken_at: str
    expires_at: str | None = None
    method: str = "logical"
    masked_with: str | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and epoch_of(self.expires_at) <= now

    def labels(self) -> dict[str, str]:
        """What its containers carry (they are recreated when these change; a volume keeps only `volume_labels`)."""
        return {LABEL_PARENT: self.parent, LABEL_PARENT_ENV: self.parent_env, LABEL_TAKEN_AT: self.taken_at,
                LABEL_EXPIRES: self.expires_at or NEVER}

    def volume_labels(self) -> dict[str, str]:
        """What its data volume carries: the parent only, which never changes (a volume's labels cannot)."""
        return {LABEL_PARENT: self.parent, LABEL_PARENT_ENV: self.parent_env}

    def to_dict(self) -> dict[str, Any]:
        return {"parent": self.parent, "parent_env": self.parent_env, "taken_at": self.taken_at,
                "expires_at": self.expires_at, "method": self.method, "masked_with": self.masked_with}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BranchMark | None:
        """The mark a record stored; None for an empty one (not a branch)."""
        if not data or not data.get("parent"):
            return None
        return cls(parent=str(data["parent"]), parent_env=str(data.get("parent_env") or ""),
                   taken_at=str(data.get("taken_at") or ""), expires_at=data.get("expires_at") or None,
                   method=str(data.get("method") or "logical"), masked_with=data.get("masked_with") or None)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> BranchMark | None:
        """The mark a container's (or a volume's: the parent only) labels carry; None when it has none."""
        parent = labels.get(LABEL_PARENT)
        if not parent:
            return None
        expires = labels.get(LABEL_EXPIRES)
        return cls(parent=parent, parent_env=labels.get(LABEL_PARENT_ENV, ""), taken_at=labels.get(LABEL_TAKEN_AT, ""),
                   expires_at=None if expires in (None, "", NEVER) else expires)


def age_seconds(mark: BranchMark, now: float) -> float | None:
    return now - epoch_of(mark.taken_at) if mark.taken_at else None
