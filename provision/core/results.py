"""Results of operations: frozen, with secrets masked unless revealed on purpose."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .model import Usage
from .secrets import SecretURL


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    state: str
    health: str = ""
    usage: Usage | None = None

    def to_dict(self) -> dict[str, Any]:
        usage = self.usage or Usage()
        return {"service": self.service, "state": self.state, "health": self.health,
                "memory_used_bytes": usage.memory_used_bytes, "memory_limit_bytes": usage.memory_limit_bytes,
                "cpu_percent": usage.cpu_percent, "uptime_s": usage.uptime_s, "oom_killed": usage.oom_killed,
                "restarts": usage.restarts}


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
    server: str | None = None  # where the stack runs, when the env spreads stacks over several servers
    messages: tuple[str, ...] = ()
    duration: float = 0.0
    error: str | None = None
    error_code: int | None = None  # the failure's exit code (ProvisionError.exit_code), the CLI's when it is the only one
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
            "services": [s.to_dict() for s in self.services],
            "server": self.server,
            **self.usage_totals(),
            "messages": list(self.messages),
            "duration_s": round(self.duration, 3),
            "error": self.error,
            "details": dict(self.details),
        }


    def usage_totals(self) -> dict[str, Any]:
        """The stack's cost: memory and CPU summed over its services, the limit summed (None when a service
        has none or nothing is known), uptime the shortest of its running services'."""
        usages = [s.usage for s in self.services if s.usage is not None]
        used = [u.memory_used_bytes for u in usages if u.memory_used_bytes is not None]
        limits = [u.memory_limit_bytes for u in usages]
        cpus = [u.cpu_percent for u in usages if u.cpu_percent is not None]
        uptimes = [u.uptime_s for u in usages if u.uptime_s is not None]
        return {
            "memory_used_bytes": sum(used) if used else None,
            "memory_limit_bytes": sum(x for x in limits if x is not None) if limits and None not in limits else None,
            "cpu_percent": round(sum(cpus), 2) if cpus else None,
            "uptime_s": round(min(uptimes), 1) if uptimes else None,
            "oom_killed": [s.service for s in self.services if s.usage is not None and s.usage.oom_killed],
        }


@dataclass(frozen=True)
class PlanItem:
    """What `provision` would do to one project: create, update, no-op, drift, orphan, or taken (another owner's
    stack has the name: provision refuses it)."""

    project: str
    env: str
    backend: str
    outcome: str
    reason: str
    diff: str = field(default="", repr=False)
    declared: bool = True

    @property
    def changes(self) -> bool:
        return self.outcome not in ("no-op", "branch")  # a branch is no drift: gc or destroy removes it

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
