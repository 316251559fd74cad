"""The Backend protocol, the observed state it reports, and the pure planning step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

from ..config import EnvConfig, ProjectSpec
from ..render import Ports, RenderedStack
from ..secrets import Secret, SecretURL


@dataclass(frozen=True, slots=True)
class Target:
    """One project in one env, with the env's validated config."""

    config: EnvConfig
    spec: ProjectSpec

    @property
    def env(self) -> str:
        return self.config.name

    @property
    def project(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class ServiceState:
    state: str  # running, exited, created, restarting, starting, missing, ...
    health: str = ""  # healthy, unhealthy, starting, unknown, or "" (no healthcheck)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def ready(self) -> bool:
        return self.running and self.health in ("", "healthy", "unknown")


@dataclass(frozen=True)
class Observed:
    """What a backend sees deployed for one project; read-only facts, no decisions."""

    exists: bool
    config_hash: str | None = None
    services: Mapping[str, ServiceState] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)
    # the compose text provision last applied, when the backend can tell (for diffs and rollback)
    applied_text: str | None = field(default=None, repr=False)
    # why what runs differs from what provision last applied (changed by hand), or None
    drift: str | None = None

    @property
    def running(self) -> bool:
        return bool(self.services) and all(s.running for s in self.services.values())

    @property
    def any_running(self) -> bool:
        return any(s.running for s in self.services.values())

    def summary(self) -> str:
        """running / stopped / partial / absent / unhealthy / starting."""
        if not self.exists:
            return "absent"
        if not self.services:
            return "stopped"
        states = list(self.services.values())
        if all(s.ready for s in states):
            return "running"
        if all(s.running for s in states):
            return "unhealthy" if any(s.health == "unhealthy" for s in states) else "starting"
        if any(s.running for s in states):
            return "partial"
        return "stopped"


class Action(StrEnum):
    CREATE = "create"
    DRIFT = "drift"  # applied like an update
    UPDATE = "update"
    START = "start"
    NOOP = "no-op"


@dataclass(frozen=True)
class Plan:
    action: Action
    reason: str

    @property
    def changes(self) -> bool:
        return self.action is not Action.NOOP


def plan(desired: RenderedStack, observed: Observed) -> Plan:
    """Decide what provision must do to make `observed` match `desired`. Pure.

    create: nothing deployed; drift: what runs was changed outside provision (applying fixes
    it); update: deployed config differs; start: same config, something not running;
    no-op: same config and every service running.
    """
    if not observed.exists:
        return Plan(Action.CREATE, "nothing is deployed")
    if observed.drift:
        return Plan(Action.DRIFT, observed.drift)
    if observed.config_hash != desired.config_hash:
        return Plan(Action.UPDATE, "the deployed configuration differs from the rendered one")
    missing = [s for s in desired.services if s not in observed.services]
    if missing:
        return Plan(Action.UPDATE, f"service(s) {', '.join(missing)} are not deployed")
    stopped = [name for name, s in observed.services.items() if not s.running]
    if stopped:
        return Plan(Action.START, f"service(s) {', '.join(sorted(stopped))} are not running")
    return Plan(Action.NOOP, "deployed configuration matches and every service is running")


@dataclass(frozen=True)
class Prepared:
    """Inputs resolved before rendering: the project's secrets and (local) its host ports."""

    secrets: Mapping[str, Secret]
    ports: Ports | None = None
    new_secrets: bool = False
    preview: bool = False  # ports are a preview, not a lease

    def __repr__(self) -> str:
        return f"Prepared(secrets=<{len(self.secrets)} hidden>, ports={self.ports!r}, new_secrets={self.new_secrets})"


@dataclass(frozen=True)
class Endpoints:
    api_url: str | None
    db_url: SecretURL | None
    db_url_scope: Literal["public", "internal", "host"] = "host"


ControlVerb = Literal["stop", "start", "restart"]


class Backend(Protocol):
    """Where stacks run. Observe and prepare are reads (prepare may persist new secrets);
    apply, control and destroy change things; every verb takes a Target."""

    name: str

    def describe(self) -> str:
        """e.g. 'Local Docker provider' or 'Coolify provider (https://coolify.example/api/v1)'."""
        ...

    def observe(self, target: Target) -> Observed: ...

    def prepare(self, target: Target, observed: Observed, *, create: bool = True) -> Prepared:
        """The project's secrets and ports. With `create`, missing ones are generated and saved
        before anything is deployed; without, only what exists is returned and nothing is written."""
        ...

    def apply(self, target: Target, stack: RenderedStack, prepared: Prepared, plan: Plan) -> None: ...

    def wait(self, target: Target, prepared: Prepared, *, timeout: float) -> Endpoints:
        """Block until the stack is up (backend health and host-side probes) or raise HealthTimeout."""
        ...

    def endpoints(self, target: Target, prepared: Prepared) -> Endpoints: ...

    def control(self, target: Target, verb: ControlVerb) -> bool:
        """stop/start/restart; returns whether anything changed."""
        ...

    def destroy(self, target: Target, *, delete_data: bool, backup_to: Path | None) -> list[str]:
        """Remove the stack; keep its data (and what is needed to use it again) unless `delete_data`,
        in which case the backend also forgets what it kept for the project; returns what was done."""
        ...

    def logs(self, target: Target, *, service: str | None, tail: int) -> str: ...

    def observe_env(self, config: EnvConfig, *, full: bool = False) -> Mapping[str, Observed]:
        """Every project of this env with something deployed (containers, a service, or kept data).
        With `full`, each observation is as complete as `observe`'s (what was applied, drift)."""
        ...

