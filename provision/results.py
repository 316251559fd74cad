"""Results of operations: frozen, with secrets masked unless revealed on purpose."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .secrets import SecretURL


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    state: str
    health: str = ""


@dataclass(frozen=True)
class ProjectResult:
    """What one operation did to one project. `changed` is true exactly when an action ran."""

    project: str
    env: str
    backend: str
    status: str
    changed: bool
    action: str
    api_url: str | None = None
    db_url: SecretURL | None = None
    db_url_scope: str = "host"
    declared: bool | None = None
    services: tuple[ServiceStatus, ...] = ()
    messages: tuple[str, ...] = ()
    duration: float = 0.0
    error: str | None = None
    # what a data operation produced: backup path and manifest, row counts, downtime
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self, *, show_secrets: bool = False) -> dict[str, Any]:
        """The JSON shape scripts rely on; every key is always present (null when unknown)."""
        db_url = None
        if self.db_url is not None:
            db_url = self.db_url.reveal() if show_secrets else self.db_url.masked
        return {
            "project": self.project,
            "env": self.env,
            "backend": self.backend,
            "status": self.status,
            "changed": self.changed,
            "action": self.action,
            "api_url": self.api_url,
            "db_url": db_url,
            "db_url_scope": self.db_url_scope if self.db_url is not None else None,
            "declared": self.declared,
            "services": [{"service": s.service, "state": s.state, "health": s.health} for s in self.services],
            "messages": list(self.messages),
            "duration_s": round(self.duration, 3),
            "error": self.error,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class PlanItem:
    """What `provision` would do to one project: create, update, no-op, drift or orphan."""

    project: str
    env: str
    backend: str
    outcome: str
    reason: str
    diff: str = field(default="", repr=False)
    declared: bool = True

    @property
    def changes(self) -> bool:
        return self.outcome != "no-op"

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "env": self.env, "backend": self.backend, "outcome": self.outcome,
                "reason": self.reason, "declared": self.declared, "diff": self.diff or None}


@dataclass(frozen=True)
class RunSummary:
    """The results of one command over one env."""

    env: str
    backend: str
    results: tuple[ProjectResult, ...] = field(default_factory=tuple)

    def extended(self, more: tuple[ProjectResult, ...] | list[ProjectResult]) -> RunSummary:
        return RunSummary(self.env, self.backend, self.results + tuple(more))

    @property
    def ok(self) -> bool:
        return all(r.error is None for r in self.results)

    @property
    def changed(self) -> bool:
        return any(r.changed for r in self.results)

    def to_dict(self, *, show_secrets: bool = False) -> dict[str, Any]:
        return {
            "env": self.env,
            "backend": self.backend,
            "ok": self.ok,
            "changed": self.changed,
            "projects": [r.to_dict(show_secrets=show_secrets) for r in self.results],
        }
