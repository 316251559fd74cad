"""The facts passed between the service layer and a backend: frozen, no behaviour beyond reading them.

A `Target` says which project; a backend's `observe` answers with `Observed` (what runs, and a
`Handle`: what the backend needs to act on that project later, kept in the project's record by the
service); `prepare` answers with `Prepared` (secrets and, locally, leased ports).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from .branches import BranchMark
from .config import EnvConfig, ProjectSpec
from .envfile import Images
from .secrets import Secret, SecretURL

ControlVerb = Literal["stop", "start", "restart"]


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

    @property
    def images(self) -> Images:
        """The project's images: its own (`projects[i].images`) laid over the env's."""
        return self.spec.images or self.config.images


class Handle(Protocol):
    """What a backend needs to act on one project later (uuids, recorded hashes). The service stores
    `to_dict()` in the project's record and gives it back through the backend's `load_handle`."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class ServiceState:
    state: str  # running, exited, created, restarting, starting, missing, ...
    health: str = ""  # healthy, unhealthy, starting, unknown, or "" (no healthcheck)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def ready(self) -> bool:
        """The one definition of ready: running, and not judged unhealthy. A healthcheck still `starting` counts:
        its first check comes only after health.interval (long, to keep idle stacks cheap), so readiness is
        decided by provision's own probes of what the stack serves (Backend.wait), not by the healthcheck."""
        return self.running and self.health != "unhealthy"


@dataclass(frozen=True)
class Usage:
    """What one container costs now, as the engine reports it; None where the backend cannot tell."""

    memory_used_bytes: int | None = None
    memory_limit_bytes: int | None = None  # None: no limit
    cpu_percent: float | None = None  # of one core, as `docker stats` shows it
    uptime_s: float | None = None  # since the container last started; None when it does not run
    oom_killed: bool = False  # its main process was killed for going over its memory limit
    restarts: int | None = None  # restarts by the engine's restart policy, where the backend asked


@dataclass(frozen=True)
class Observed:
    """What a backend sees deployed for one project; read-only facts, no decisions."""

    exists: bool
    config_hash: str | None = None
    services: Mapping[str, ServiceState] = field(default_factory=dict)
    # where the project lives on the backend (None: nothing found to act on)
    handle: Handle | None = None
    # the compose text provision last applied, when the backend can tell (for diffs and rollback)
    applied_text: str | None = field(default=None, repr=False)
    # why what runs differs from what provision last applied (changed by hand), or None
    drift: str | None = None
    # data the backend keeps for the project although no stack runs (a volume name), or None
    kept_data: str | None = None
    # the server the stack runs on, where the env spreads stacks over several (Coolify placement), or None
    server: str | None = None
    # the stack is this checkout's but was made without the owner label it now gets: what the next apply takes
    # over (one line to show), or None
    adopting: str | None = None
    # the name is taken on the backend by another owner's stack, which no verb touches: why, and what to do (the
    # stack itself is not observed: exists stays False), or None
    foreign: str | None = None
    # the project is a branch of another, as the backend's labels say (issue 23), or None
    branch: BranchMark | None = None

    @property
    def running(self) -> bool:
        return bool(self.services) and all(s.running for s in self.services.values())

    @property
    def ready(self) -> bool:
        return bool(self.services) and all(s.ready for s in self.services.values())

    @property
    def any_running(self) -> bool:
        return any(s.running for s in self.services.values())

    def summary(self, expected: Collection[str] = ()) -> str:
        """running / stopped / partial / absent / unhealthy / starting. `expected`: the services the stack was
        applied with; when the backend names its containers by service (some of `expected` are seen), one
        without a container makes a stack that would read running or unhealthy `partial` (an apply
        interrupted after the db came up)."""
        if not self.exists:
            return "absent"
        if not self.services:
            return "stopped"
        states = list(self.services.values())
        seen = [name for name in expected if name in self.services]
        missing = bool(seen) and len(seen) < len(set(expected))
        if all(s.running for s in states) and missing:
            return "partial"
        if all(s.ready for s in states):
            return "running"
        if all(s.running for s in states):
            return "unhealthy"
        if any(s.state in ("starting", "restarting", "created") for s in states):
            return "starting"
        if any(s.running for s in states):
            return "partial"
        return "stopped"


ABSENT = Observed(exists=False)


@dataclass(frozen=True, slots=True)
class Ports:
    """What a local project leases on the host: ports on the bind address, and a subnet for its
    network when `local.network_pool` is set (else Docker picks one)."""

    api: int
    db: int
    subnet: str | None = None


@dataclass(frozen=True)
class Prepared:
    """Inputs resolved before rendering: the project's secrets and (local) its host ports.
    `new_secrets`: some were generated now, and the service must save them before applying."""

    secrets: Mapping[str, Secret]
    ports: Ports | None = None
    new_secrets: bool = False
    preview: bool = False  # ports are a preview, not a lease
    # the SQL that makes the database's roles (roles.ensure_sql) as it stands for this stack: a backend whose
    # template hands it to the db container (Coolify's PROVISION_ROLES) writes it with the secrets
    roles_sql: Secret | None = None

    def __repr__(self) -> str:
        return f"Prepared(secrets=<{len(self.secrets)} hidden>, ports={self.ports!r}, new_secrets={self.new_secrets})"


@dataclass(frozen=True)
class Endpoints:
    api_url: str | None
    db_url: SecretURL | None
    db_url_scope: Literal["public", "internal", "host"] = "host"


NO_ENDPOINTS = Endpoints(None, None)


@dataclass(frozen=True)
class Destroyed:
    """What a backend's destroy did. `changed`: something was removed; `kept_secrets`: secrets the backend
    held itself (Coolify) and that the service must keep, because the data they open is kept."""

    changed: bool
    messages: tuple[str, ...] = ()
    kept_secrets: Mapping[str, Secret] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DataCopy:
    """What a copy-on-write copy of a running project's data did (issue 23): the new volume's name and
    directory, the WAL positions of the backup it was taken in, and how long the source was in backup mode."""

    volume: str
    directory: Path
    start_lsn: str
    stop_lsn: str
    seconds: float


@dataclass(frozen=True)
class LockInfo:
    """A lock a run holds (or held) on a project, as the backend records it for every runner to see."""

    env: str
    project: str
    holder: str  # user@host pid N, or "unknown" while the holder has not written it yet
    since: str  # UTC, ISO 8601
    expires: str
    stale: bool  # past its expiry: `unlock` may break it, and a waiting run breaks it itself

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "project": self.project, "holder": self.holder, "since": self.since,
                "expires": self.expires, "stale": self.stale}


def db_url(user: str, password: Secret | None, host: str, port: int | str, database: str) -> SecretURL:
    """The one way a db_url is assembled: user, password and database percent-encoded (so any password reads
    back, and masks, whole), the password kept secret."""
    from urllib.parse import quote

    auth = quote(user, safe="")
    if password is not None:
        auth += f":{quote(password.reveal(), safe='')}"
    return SecretURL(f"postgresql://{auth}@{host}:{port}/{quote(database, safe='')}")
