"""What Coolify's answers say, parsed once at the edge (finder, servers, lock, variables) into frozen dataclasses,
tolerating what Coolify omits (a summary view has no containers, GET /servers hides `id`, a token without
read:sensitive sees no values or compose); the backend's handle (`Refs`); and the pure readings of a service's
statuses and of its observation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ...core.errors import ProvisionError
from ...core.model import Observed, ServiceState
from ...core.render import hash_services, parse_compose, stack_hash, without_hash_labels
from . import marks


@dataclass(frozen=True)
class Refs:
    """Where a project lives in Coolify (the backend's handle); any part may be unknown (None).
    `api_fqdn`: the api's fqdn as Coolify last reported it (endpoints need no request for it)."""

    project_uuid: str | None = None
    environment_uuid: str | None = None
    service_uuid: str | None = None
    api_fqdn: str | None = None
    lock_project: str | None = None  # this owner's lock project, when the listing that found the rest showed it
    # the server the lock project names for new services (coolify.server unset); not recorded: read each run
    new_server: str | None = None
    # with coolify.servers: the listed server the service was placed on (its description's `placed=`)
    server: str | None = None
    # the uuid of the Coolify server the service runs on, as its create or its view showed it (a service never
    # changes servers: a move makes a new one); its `ip` is the host of a published db
    server_uuid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("project_uuid", self.project_uuid), ("environment_uuid", self.environment_uuid),
                                  ("service_uuid", self.service_uuid), ("api_fqdn", self.api_fqdn),
                                  ("lock_project", self.lock_project), ("server", self.server),
                                  ("server_uuid", self.server_uuid)) if v}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Refs | None:
        values = {k: str(data[k]) for k in ("project_uuid", "environment_uuid", "service_uuid", "api_fqdn",
                                            "lock_project", "server", "server_uuid") if data.get(k)}
        return cls(**values) if values else None


def _text(value: object) -> str | None:
    """A scalar of an answer as text (None for null, a missing key or a nested object)."""
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def _items(value: object) -> list[Mapping[str, object]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> int:
    """An id as Coolify may send it (a number, or its text); 0 when absent or unreadable."""
    try:
        return int(value) if isinstance(value, (int, float, str)) and value != "" else 0
    except ValueError:
        return 0


def objects(items: object) -> list[Mapping[str, object]]:
    """The objects of a list Coolify nested in an answer, skipping anything that is not one with a uuid."""
    return [item for item in _items(items) if isinstance(item.get("uuid"), str)]


@dataclass(frozen=True)
class App:
    """A container of a compose service (an entry of its `applications` or `databases`): its stored status
    (`running:healthy`, `exited`...; None when absent), last refresh stamp and, for an application, its fqdn."""

    name: str
    status: str | None = None
    last_online_at: str | None = None
    fqdn: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> App | None:
        name = data.get("name")
        if not isinstance(name, str):
            return None
        return cls(name, _text(data.get("status")), _text(data.get("last_online_at")), _text(data.get("fqdn")) or None)

    @property
    def state(self) -> ServiceState:
        return status_state(self.status)


@dataclass(frozen=True)
class Server:
    """A server of GET /servers (or the `destination.server` of a service view). `server_id`: its database id,
    which GET /servers shows only as `settings.server_id` (ServersController.php:41-44). `shows_sensitive`: its
    settings carry `sentinel_token`, hidden from a token that may not read sensitive data."""

    uuid: str
    name: str | None = None
    ip: str | None = None
    is_usable: bool = False
    is_reachable: bool = False
    is_build_server: bool = False
    server_id: int | None = None
    shows_sensitive: bool = False

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Server | None:
        uuid = data.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            return None
        settings = data.get("settings")
        flags: Mapping[str, object] = settings if isinstance(settings, dict) else {}
        return cls(uuid, _text(data.get("name")), _text(data.get("ip")), bool(data.get("is_usable")),
                   bool(data.get("is_reachable")), bool(flags.get("is_build_server")), _int(flags.get("server_id")),
                   "sentinel_token" in flags)

    @classmethod
    def named(cls, name: str) -> Server:
        """A server known only by the uuid or name the env file gives (POST /services checks it)."""
        return cls(name, name)

    @property
    def shown(self) -> str:
        return f"{self.name} ({self.uuid})"


def servers(answer: Sequence[Mapping[str, object]]) -> list[Server]:
    """GET /servers' servers (any entry without a uuid skipped)."""
    return [server for server in map(Server.parse, answer) if server is not None]


@dataclass(frozen=True)
class Destination:
    """A server's Docker network (GET /servers/{uuid}/destinations)."""

    uuid: str
    name: str | None = None
    network: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Destination:
        return cls(str(data.get("uuid")), _text(data.get("name")), _text(data.get("network")))


@dataclass(frozen=True)
class Resource:
    """An entry of GET /servers/{uuid}/resources: a service, application or standalone database (`type`)."""

    uuid: str
    type: str = ""

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Resource:
        return cls(str(data.get("uuid")), str(data.get("type") or ""))


@dataclass(frozen=True)
class Service:
    """A compose service: a summary (an environment's `services`, GET /services) or its full view (GET
    /services/{uuid}: containers, and for a read:sensitive token its compose and `destination.server`)."""

    uuid: str
    name: str | None = None
    description: str = ""
    status: str | None = None
    apps: tuple[App, ...] = ()
    compose: str | None = None
    server: Server | None = None
    server_id: int | None = None

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Service:
        # a container Coolify's own status leaves out (`restart: "no"` or `exclude_from_hc`: a one-shot such as the
        # restore of restore --to-time, exited once done; bootstrap/helpers/parsers.php `exclude_from_status`) is
        # left out here too: the stack is up when the others are
        containers = [App.parse(item) for item in (*_items(data.get("applications")), *_items(data.get("databases")))
                      if not item.get("exclude_from_status")]
        destination = data.get("destination")
        nested = destination.get("server") if isinstance(destination, dict) else None
        return cls(str(data.get("uuid")), _text(data.get("name")), str(data.get("description") or ""),
                   _text(data.get("status")), tuple(app for app in containers if app is not None),
                   str(data.get("docker_compose_raw") or "") or None,
                   Server.parse(nested) if isinstance(nested, dict) else None, _int(data.get("server_id")))

    @property
    def marks(self) -> marks.Marks:
        return marks.parse(self.description)

    def fqdn(self, app: str) -> str | None:
        """The first fqdn of container `app`, or None."""
        return next((a.fqdn.split(",")[0].strip() for a in self.apps if a.name == app and a.fqdn), None)


@dataclass(frozen=True)
class Project:
    """A project (GET /projects, or GET /projects/{uuid} with its `environments`)."""

    uuid: str
    name: str | None = None
    description: str = ""
    id: int = 0
    environments: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Project:
        return cls(str(data.get("uuid")), _text(data.get("name")), str(data.get("description") or ""),
                   _number(data.get("id")), tuple(str(e["uuid"]) for e in objects(data.get("environments"))))


RESOURCE_KINDS = ("applications", "postgresqls", "redis", "mongodbs", "mysqls", "mariadbs", "services", "keydbs",
                  "dragonflies", "clickhouses")


@dataclass(frozen=True)
class Environment:
    """An environment of a project (GET /projects/{uuid}/{name or uuid}): its services (summaries) and whether it
    holds any resource at all (Coolify refuses to delete one that does)."""

    uuid: str
    services: tuple[Service, ...] = ()
    has_resources: bool = False

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Environment:
        return cls(str(data.get("uuid")), tuple(Service.parse(s) for s in objects(data.get("services"))),
                   any(data.get(kind) for kind in RESOURCE_KINDS))


@dataclass(frozen=True)
class Variable:
    """A service's environment variable (GET /services/{uuid}/envs). `value` is None when Coolify sent none
    (hidden from this token: `readable` False) or an empty one."""

    key: str | None
    value: str | None = None
    readable: bool = True
    shown_once: bool = False

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Variable:
        value = data.get("value") or data.get("real_value")
        return cls(_text(data.get("key")), str(value) if value else None,
                   "value" in data or "real_value" in data, bool(data.get("is_shown_once")))


@dataclass(frozen=True)
class LockVariable:
    """A shared variable of the lock project (`lock.<env>.<project>`, `place.<server uuid>`) and its comment."""

    id: int
    key: str
    comment: str = ""
    created_at: str = ""

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> LockVariable | None:
        number = _int(data.get("id"))
        if number is None:
            return None
        return cls(number, str(data.get("key") or ""), str(data.get("comment") or ""),
                   str(data.get("created_at") or ""))


@dataclass(frozen=True)
class TaskRun:
    """A run of a scheduled task (GET .../scheduled-tasks/{uuid}/executions): `running`, `success` or `failed`,
    and its output."""

    uuid: str
    status: str | None = None
    message: str = ""

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> TaskRun:
        return cls(str(data.get("uuid")), _text(data.get("status")), str(data.get("message") or ""))


def compose_hash(text: str) -> str:
    """A hash of a compose text's structure, without secrets: equal for Coolify's re-dumped copy."""
    hashes, _ = hash_services(without_hash_labels(parse_compose(text)), None)
    return stack_hash(hashes)


def status_state(status: str | None) -> ServiceState:
    """A stored status (`running:healthy`, `exited`...) as a state; none reads exited."""
    state, _, rest = (status or "exited").partition(":")
    return ServiceState(state, rest.split(":")[0])


def refresh_marks(service: Service) -> tuple[tuple[str, str, str], ...]:
    """Each container's stored status and last refresh stamp: they move only when Coolify refreshes them."""
    return tuple(sorted((a.name, str(a.status), str(a.last_online_at)) for a in service.apps))


def describe_status(service: Service) -> str:
    """Coolify's own status strings: the aggregate, then each container's, e.g. 'running:healthy (db: exited)'."""
    parts = [f"{a.name}: {a.status or 'unknown'}" for a in service.apps]
    return (service.status or "unknown") + (f" ({', '.join(parts)})" if parts else "")


def running(seen: Observed) -> list[str]:
    """The containers an observation saw running: a restart is under way once one of them no longer does."""
    return [name for name, state in seen.services.items() if state.running]


def is_up(service: Service) -> bool:
    """Coolify's aggregate status says running (healthy, or unknown where a container has no
    healthcheck) and so does every sub-resource; a pending start/restart reads starting:unhealthy."""
    return status_state(service.status or "missing").ready and all(a.state.ready for a in service.apps)


def observation(service: Service, refs: Refs) -> Observed:
    """What `service` (a summary or a full view) says of the stack; `refs`: what was known before."""
    found = service.marks
    if service.apps:
        states = {a.name: a.state for a in service.apps}
    else:  # summary views carry only the aggregate status
        states = {"stack": status_state(service.status)}
    server_uuid = service.server.uuid if service.server else None
    return Observed(
        exists=True,
        config_hash=found.config_hash,
        services=states,
        handle=Refs(refs.project_uuid, refs.environment_uuid, service.uuid, service.fqdn("api") or refs.api_fqdn,
                    server=found.placed, server_uuid=server_uuid or (
                        refs.server_uuid if refs.service_uuid == service.uuid else None)),
        applied_text=service.compose,  # present only for tokens with read:sensitive
        drift=drift(service),
        server=found.placed,
        branch=marks.branch_mark(found),
    )


def drift(service: Service) -> str | None:
    """Why the compose stored in Coolify differs from the one provision pushed, or None."""
    recorded = service.marks.compose
    if service.compose is None or recorded is None:
        return None
    try:
        deployed = compose_hash(service.compose)
    except ProvisionError:
        return "the compose stored in Coolify is no longer valid YAML (edited in Coolify's UI?)"
    if deployed != recorded:
        return "the compose stored in Coolify was edited after provision pushed it (in Coolify's UI?)"
    return None


def public_url(address: str | None) -> str | None:
    """The public URL of an fqdn: scheme://host[/path]; a :port there is the container port."""
    if not address:
        return None
    parts = urlsplit(address if "://" in address else f"http://{address}")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.hostname}{path}"
