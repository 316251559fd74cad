"""In-memory data model of the emulated Coolify instance (one ``Store`` per emulator).

Everything here is plain data guarded by ``Store.lock`` (an ``RLock``); the HTTP
handlers and the test helpers take that lock for every read-modify-write.
"""

from __future__ import annotations

import secrets
import string
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_ALNUM = string.ascii_lowercase + string.digits


def now_iso(at: float | None = None) -> str:
    """Laravel's JSON timestamp format (``2024-01-01T00:00:00.000000Z``) of epoch `at` (default: now)."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_uuid() -> str:
    """A Coolify-looking id: 24 lowercase base36 characters starting with a letter (cuid2)."""
    return secrets.choice(string.ascii_lowercase) + "".join(secrets.choice(_ALNUM) for _ in range(23))


def random_string(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    """Random string used for generated names and SERVICE_PASSWORD_* values."""
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class Token:
    """A Sanctum personal access token (only its plaintext is matched)."""

    token: str
    abilities: frozenset[str]
    team_id: int = 0
    user_id: int = 1
    expires_at: float | None = None
    role: str = "owner"
    in_team: bool = True

    def can(self, ability: str) -> bool:
        """Sanctum ``tokenCan``: the ability itself or ``*``."""
        return "*" in self.abilities or ability in self.abilities

    def expired(self, now: float) -> bool:
        """Past its expiry at epoch `now`."""
        return self.expires_at is not None and now >= self.expires_at


@dataclass
class Destination:
    """A Docker network on a server (``StandaloneDocker``)."""

    id: int
    uuid: str
    name: str
    network: str
    server_id: int
    type: str = "standalone"
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class Server:
    """A server known to Coolify; ``destinations`` are its Docker networks."""

    id: int
    uuid: str
    name: str
    ip: str
    team_id: int = 0
    user: str = "root"
    port: int = 22
    description: str | None = None
    is_reachable: bool = True
    is_usable: bool = True
    is_build_server: bool = False
    wildcard_domain: str | None = None
    proxy_type: str = "traefik"
    destinations: list[Destination] = field(default_factory=list)
    # ServerSetting's encrypted, hidden `sentinel_token`, generated for every server (app/Models/ServerSetting.php:
    # 136-137, 149): shown only where the token may read sensitive data (ServersController.php:25-37)
    sentinel_token: str = field(default_factory=lambda: random_string(40))
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    @property
    def functional(self) -> bool:
        return self.is_reachable and self.is_usable and not self.is_build_server


@dataclass
class Project:
    id: int
    uuid: str
    name: str
    description: str | None
    team_id: int = 0
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class Environment:
    id: int
    uuid: str
    name: str
    project_id: int
    description: str | None = None
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class SharedEnv:
    """A project-scoped shared variable (``SharedEnvironmentVariable`` with ``type=project``)."""

    id: int
    key: str
    value: str | None
    project_id: int
    comment: str | None = None
    is_literal: bool = False
    is_multiline: bool = False
    is_shown_once: bool = False
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class EnvVar:
    """A service environment variable (``EnvironmentVariable`` with a Service resourceable)."""

    id: int
    uuid: str
    key: str
    value: str | None
    service_id: int
    is_literal: bool = False
    is_multiline: bool = False
    is_shown_once: bool = False
    is_preview: bool = False
    comment: str | None = None
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class SubResource:
    """A ``ServiceApplication`` (kind "application") or ``ServiceDatabase`` (kind "database")."""

    id: int
    uuid: str
    name: str
    kind: str
    image: str | None
    service_id: int
    fqdn: str | None = None
    status: str = "exited"  # what Coolify has stored (refreshed from the containers periodically)
    status_override: str | None = None
    # pure mode: what the containers really are, since when, and when a healthcheck passes
    actual: str = "exited"
    actual_since: float = 0.0
    healthy_at: float = 0.0
    last_tick: float = -1.0  # the refresh tick that last looked at it
    fresh: bool = True  # the stored status was refreshed after the containers last started (no stale old one)
    exists: bool = False  # a container exists (started once and not removed by a stop)
    has_healthcheck: bool = False
    exclude_from_status: bool = False
    human_name: str | None = None
    description: str | None = None
    last_online_at: str | None = None
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class PendingAction:
    """An asynchronous service action queued in pure mode (settled lazily by time)."""

    kind: str  # "start" | "stop" | "restart" | "delete"
    ready_at: float  # the queued job starts running
    options: dict[str, Any] = field(default_factory=dict)
    stop_until: float = 0.0  # restart/stop: the old containers are being stopped until then
    active_from: float = 0.0  # start/restart: the start activity ("starting:unhealthy") runs from...
    done_at: float = 0.0  # ...until then; the job is finished
    stopped: bool = False  # the stop phase has been applied


@dataclass
class Service:
    """A compose-based Coolify Service and its parsed sub-resources."""

    id: int
    uuid: str
    name: str
    description: str | None
    environment_id: int
    server_id: int
    destination_id: int
    docker_compose_raw: str
    parsed: dict[str, Any]
    team_id: int = 0
    service_type: str | None = None
    connect_to_docker_network: bool = False
    is_container_label_escape_enabled: bool = True
    is_container_label_readonly_enabled: bool = True
    tags: list[str] = field(default_factory=list)
    config_hash: str | None = None
    deployed_envs: dict[str, str | None] | None = None
    apps: list[SubResource] = field(default_factory=list)
    pending: list[PendingAction] = field(default_factory=list)
    deleting: bool = False
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    def app(self, name: str) -> SubResource | None:
        """Sub-resource by compose key."""
        return next((a for a in self.apps if a.name == name), None)

    @property
    def applications(self) -> list[SubResource]:
        return [a for a in self.apps if a.kind == "application"]

    @property
    def databases(self) -> list[SubResource]:
        return [a for a in self.apps if a.kind == "database"]


@dataclass
class ScheduledTask:
    """A service's scheduled task (app/Models/ScheduledTask.php; API: ScheduledTasksController.php)."""

    uuid: str
    service_id: int
    name: str
    command: str
    frequency: str
    container: str | None = None
    timeout: int = 300
    enabled: bool = True
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("uuid", "name", "command", "frequency", "container", "timeout",
                                              "enabled", "created_at", "updated_at")}


@dataclass
class TaskExecution:
    """One run of a task (app/Models/ScheduledTaskExecution.php): `duration` is a decimal cast, a string."""

    uuid: str
    task_uuid: str
    status: str = "running"
    message: str | None = None
    retry_count: int = 0
    duration: str | None = None
    error_details: str | None = None
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("uuid", "status", "message", "retry_count", "duration",
                                              "started_at", "finished_at", "created_at", "updated_at",
                                              "error_details")}


class Store:
    """All emulated rows plus id counters, guarded by ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._ids: dict[str, int] = {}
        self.tokens: dict[str, Token] = {}
        self.servers: dict[str, Server] = {}
        self.projects: dict[str, Project] = {}
        self.environments: dict[str, Environment] = {}
        self.services: dict[str, Service] = {}
        self.envs: dict[str, EnvVar] = {}
        self.shared_envs: dict[int, SharedEnv] = {}
        self.tags: dict[str, str] = {}  # name -> uuid
        self.tasks: dict[str, ScheduledTask] = {}
        self.executions: dict[str, list[TaskExecution]] = {}  # task uuid -> runs, oldest first

    def next_id(self, table: str, start: int = 1) -> int:
        """Auto-increment id per table."""
        with self.lock:
            value = self._ids.get(table, start - 1) + 1
            self._ids[table] = value
            return value

    # -- lookups (callers hold the lock) -------------------------------------------------
    def project_by_id(self, project_id: int) -> Project | None:
        return next((p for p in self.projects.values() if p.id == project_id), None)

    def environment_by_id(self, env_id: int) -> Environment | None:
        return next((e for e in self.environments.values() if e.id == env_id), None)

    def server_by_id(self, server_id: int) -> Server | None:
        return next((s for s in self.servers.values() if s.id == server_id), None)

    def destination_by_id(self, dest_id: int) -> tuple[Server, Destination] | None:
        for server in self.servers.values():
            for dest in server.destinations:
                if dest.id == dest_id:
                    return server, dest
        return None

    def environments_of(self, project: Project) -> list[Environment]:
        return sorted((e for e in self.environments.values() if e.project_id == project.id), key=lambda e: e.id)

    def services_in_environment(self, env: Environment) -> list[Service]:
        return sorted((s for s in self.services.values() if s.environment_id == env.id), key=lambda s: s.id)

    def services_of_team(self, team_id: int) -> list[Service]:
        return sorted((s for s in self.services.values() if s.team_id == team_id), key=lambda s: s.id)

    def shared_envs_of(self, project: Project) -> list[SharedEnv]:
        return sorted((e for e in self.shared_envs.values() if e.project_id == project.id), key=lambda e: e.id)

    def envs_of(self, service: Service) -> list[EnvVar]:
        """Env vars of a service ordered by key (Coolify's relation orders by key)."""
        return sorted((e for e in self.envs.values() if e.service_id == service.id), key=lambda e: (e.key, e.id))

    def env_by_key(self, service: Service, key: str) -> EnvVar | None:
        return next((e for e in self.envs.values() if e.service_id == service.id and e.key == key), None)
