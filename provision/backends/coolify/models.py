"""What Coolify's answers say, read once: the backend's handle (`Refs`), the containers of a service view and their
states, its fqdn and server, the observation of a service (`observed`), and pure descriptions for messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ...errors import ProvisionError
from ...model import Observed, ServiceState
from ...render import hash_services, parse_compose, stack_hash, without_hash_labels
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



def compose_hash(text: str) -> str:
    """A hash of a compose text's structure, without secrets: equal for Coolify's re-dumped copy."""
    hashes, _ = hash_services(without_hash_labels(parse_compose(text)), None)
    return stack_hash(hashes)


def apps(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The service's sub-resources (containers) that carry a name; anything else Coolify sent is skipped."""
    items = [*listed(service.get("applications")), *listed(service.get("databases"))]
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)]


def listed(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def app_state(app: Mapping[str, Any]) -> ServiceState:
    state, _, rest = str(app.get("status") or "exited").partition(":")
    return ServiceState(state, rest.split(":")[0])




def refresh_marks(service: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """Each container's stored status and last refresh stamp: they move only when Coolify refreshes them."""
    return tuple(sorted((str(a["name"]), str(a.get("status")), str(a.get("last_online_at"))) for a in apps(service)))


def describe_status(service: Mapping[str, Any]) -> str:
    """Coolify's own status strings: the aggregate, then each container's, e.g. 'running:healthy (db: exited)'."""
    parts = [f"{a['name']}: {a.get('status') or 'unknown'}" for a in apps(service)]
    return str(service.get("status") or "unknown") + (f" ({', '.join(parts)})" if parts else "")


def running(seen: Observed) -> list[str]:
    """The containers an observation saw running: a restart is under way once one of them no longer does."""
    return [name for name, state in seen.services.items() if state.running]


def is_up(service: Mapping[str, Any]) -> bool:
    """Coolify's aggregate status says running (healthy, or unknown where a container has no
    healthcheck) and so does every sub-resource; a pending start/restart reads starting:unhealthy."""
    aggregate = app_state({"status": service.get("status") or "missing"})
    return aggregate.ready and all(app_state(app).ready for app in apps(service))


def observation(service: Mapping[str, Any], refs: Refs) -> Observed:
    found = marks.parse(str(service.get("description") or ""))
    placed = found.placed
    containers = apps(service)
    if containers:
        services = {str(a["name"]): app_state(a) for a in containers}
    else:  # summary views carry only the aggregate status
        services = {"stack": app_state({"status": service.get("status")})}
    raw = service.get("docker_compose_raw")  # present only for tokens with read:sensitive
    return Observed(
        exists=True,
        config_hash=found.config_hash,
        services=services,
        handle=Refs(refs.project_uuid, refs.environment_uuid, str(service.get("uuid")),
                    fqdn(service, "api") or refs.api_fqdn, server=placed,
                    server_uuid=server_uuid_of(service) or (
                        refs.server_uuid if refs.service_uuid == service.get("uuid") else None)),
        applied_text=str(raw) if raw else None,
        drift=drift(service, str(raw) if raw else None),
        server=placed,
    )


def drift(service: Mapping[str, Any], raw: str | None) -> str | None:
    """Why the compose stored in Coolify differs from the one provision pushed, or None."""
    recorded = marks.parse(str(service.get("description") or "")).compose
    if raw is None or recorded is None:
        return None
    try:
        deployed = compose_hash(raw)
    except ProvisionError:
        return "the compose stored in Coolify is no longer valid YAML (edited in Coolify's UI?)"
    if deployed != recorded:
        return "the compose stored in Coolify was edited after provision pushed it (in Coolify's UI?)"
    return None


def fqdn(service: Mapping[str, Any], app: str) -> str | None:
    for item in apps(service):
        if item.get("name") == app and item.get("fqdn"):
            return str(item["fqdn"]).split(",")[0].strip()
    return None


def public_url(address: str | None) -> str | None:
    """The public URL of an fqdn: scheme://host[/path]; a :port there is the container port."""
    if not address:
        return None
    parts = urlsplit(address if "://" in address else f"http://{address}")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.hostname}{path}"


def has_resources(environment: Mapping[str, Any]) -> bool:
    kinds = ("applications", "postgresqls", "redis", "mongodbs", "mysqls", "mariadbs", "services",
             "keydbs", "dragonflies", "clickhouses")
    return any(environment.get(kind) for kind in kinds)



def destination_server(service: Mapping[str, Any]) -> dict[str, Any] | None:
    """The server of a service's view (`destination.server`, with its `ip`): GET /services/{uuid} loads it for a
    token that may read sensitive data (app/Http/Controllers/Api/ServicesController.php:832-837)."""
    destination = service.get("destination")
    server = destination.get("server") if isinstance(destination, dict) else None
    return server if isinstance(server, dict) and isinstance(server.get("uuid"), str) and server["uuid"] else None


def server_uuid_of(service: Mapping[str, Any]) -> str | None:
    server = destination_server(service)
    return str(server["uuid"]) if server else None



def objects(items: object) -> list[dict[str, Any]]:
    """The objects of a list Coolify nested in an answer, skipping anything that is not one with a uuid."""
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("uuid"), str)]

