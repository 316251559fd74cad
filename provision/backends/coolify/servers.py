"""The servers a stack goes to: the env's one server (coolify.server, else the only usable one), placement across
coolify.servers under each server's shared lock, the destination, the server an existing service runs on and the
host of its published db."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import urlsplit

from ...core.errors import BackendUnavailable, ConfigError, ProvisionError, ServersFull
from ...core.model import Target
from ...core.placement import ServerLoad, place
from .context import Context
from .finder import Finder
from .lock import Locks
from .models import Destination, Refs, Resource, Server, Service, servers

UUID = re.compile(r"^[a-z0-9]{20,40}$")
API_PORT = 3000


class Servers:
    """Server choice and placement in one env's Coolify."""

    def __init__(self, ctx: Context, finder: Finder, locks: Locks) -> None:
        self.ctx, self.finder, self.locks = ctx, finder, locks
        self.client, self.config = ctx.client, ctx.config

    def server_loads(self) -> list[ServerLoad]:
        """What each server listed in coolify.servers holds now: its stacks (Coolify's own list of the server's
        resources) and their memory limits (the `mem=` of provision's service descriptions). One GET /servers,
        one GET /services, and one GET /servers/{uuid}/resources per usable listed server."""
        listed = self.config.coolify.servers or []
        listing = servers(self.client.request_list("GET", "/servers"))
        memory = {s.uuid: s.marks.memory for s in map(Service.parse, self.client.request_list("GET", "/services"))}
        loads = []
        for wanted in listed:
            server = named(listing, wanted.name)
            if server is None:
                raise ConfigError(f"{self.config.relpath}: coolify.servers: no server {wanted.name!r} in Coolify; "
                                  f"candidates: {describe_servers(listing)}")
            load = ServerLoad(wanted.name, wanted.max_stacks, wanted.memory, uuid=server.uuid)
            if server.is_build_server:
                loads.append(replace(load, unusable="a build server (it cannot run stacks)"))
                continue
            if not server.is_reachable or not server.is_usable:
                why = "unreachable" if not server.is_reachable else "not usable (Coolify has not validated it)"
                loads.append(replace(load, unusable=f"{why} (Coolify's last check)"))
                continue
            try:
                resources = map(Resource.parse, self.client.request_list("GET", f"/servers/{server.uuid}/resources"))
            except BackendUnavailable as exc:
                loads.append(replace(load, unusable=f"its resources could not be listed: {exc}"))
                continue
            # every resource on the server counts against max_stacks: Coolify lists its applications,
            # standalone databases and services there (app/Models/Server.php:1001-1008, definedResources), each
            # with its `type` (`service`, `application`, `standalone-postgresql`...); memory counts provision's
            # services only (their `mem=`)
            held = {r.uuid: r.type for r in resources}
            stacks = [u for u, kind in held.items() if kind == "service"]
            loads.append(replace(load, stacks=len(held), memory_used=sum(memory.get(u, 0) for u in stacks)))
        return loads

    def placed_server(self, target: Target, placing: contextlib.ExitStack | None = None,
                       known: Refs | None = None) -> tuple[Server, str]:
        """The server a new stack goes to now: the one placement chose before (`spec.server`) if it still takes
        it, else the one with the most free capacity. Runs under the process's placement lock until the service
        exists, so the projects of one run never take the same last place; with `placing`, also under that
        server's shared lock (`place.<server uuid>`, a variable of the owner's lock project, left to `placing`
        to release once the service exists), taken before its load is read: runs on other machines of this
        owner never take one server's last place either. A server found full under its lock is passed over
        for the next best one; ServersFull when none takes the stack."""
        memory = target.spec.memory_limit
        refused: dict[str, str] = {}
        loads = None if placing is not None else self.server_loads()
        name = target.spec.server
        for _ in range(len(self.config.coolify.servers or []) + 1):
            if name is None:
                loads = loads if loads is not None else self.server_loads()
                candidates = [replace(x, unusable=refused[x.name]) if x.name in refused else x for x in loads]
                name = place(candidates, [(target.project, memory)])[target.project]
            held = contextlib.ExitStack()
            if placing is not None:
                listed = self.listed_server(name)
                if listed is not None:
                    uuid = listed.uuid
                    project = self.locks.held().get(self.locks.lock_key(target))
                    held.enter_context(self.locks.hold(
                        f"place.{uuid}", known, timeout=project.timeout if project else 600.0,
                        where=f"placement on server {name!r}", hint="", shown=(target.env, f"placement on {name}")))
                loads = self.server_loads()  # under the server's lock: what it holds now is exact
            assert loads is not None
            load = next((x for x in loads if x.name == name), None)
            if load is None:
                held.close()
                raise ConfigError(f"{self.config.relpath}: coolify.servers does not list {name!r}; listed: "
                                  f"{', '.join(x.name for x in loads)}")
            refusal = load.refusal(memory)
            if refusal is None:
                if placing is not None:
                    placing.enter_context(held.pop_all())
                return Server(load.uuid or "", load.name), load.name
            held.close()
            if placing is None or load.unusable:
                raise ServersFull(f"{load.name} cannot take {target.project!r}: {refusal}. Nothing was created")
            refused[load.name] = refusal  # another run took its last place meanwhile: the next best one
            name = None
        raise ServersFull(f"no server can take {target.project!r}: "
                          f"{'; '.join(f'{k}: {v}' for k, v in refused.items())}. Nothing was created")

    def server_holding(self, service_uuid: str | None) -> str | None:
        """With coolify.servers, the listed server a service without a `placed=` mark runs on (one made before the
        env listed servers), from the listed servers' resources, read once per lookup (such a service does not
        move: a move marks the new one); None otherwise."""
        if self.config.coolify.servers is None or service_uuid is None:
            return None
        return self.ctx.lookups.get("holders", self._holders).get(service_uuid)

    def _holders(self) -> dict[str, str]:
        holders: dict[str, str] = {}
        for listed in self.config.coolify.servers or []:
            server = named(self.listing(), listed.name)
            for resource in self.client.request_list("GET", f"/servers/{server.uuid}/resources") if server else []:
                holders.setdefault(Resource.parse(resource).uuid, listed.name)
        return holders

    def listing(self) -> list[Server]:
        """GET /servers, once per lookup (addresses and names: configuration)."""
        return self.ctx.lookups.get("servers", lambda: servers(self.client.request_list("GET", "/servers")))

    def listed_server(self, name: str | None) -> Server | None:
        """The Coolify server of a name listed in coolify.servers."""
        return named(self.listing(), name)

    def choose_server(self) -> Server:
        """The server new services go to without coolify.servers: coolify.server, else the one usable server."""
        return self.ctx.lookups.get("server", self._choose)

    def _choose(self) -> Server:
        wanted = self.config.coolify.server
        if wanted and UUID.match(wanted):
            return Server.named(wanted)  # checked by POST /services (404 if unknown)
        listing = self.listing()
        if wanted:
            found = named(listing, wanted)
            if found is None:
                raise ConfigError(
                    f"{self.config.relpath}: coolify.server: no server {wanted!r} in Coolify; "
                    f"candidates: {describe_servers(listing)}"
                )
            return found
        usable = [s for s in listing if s.is_usable and s.is_reachable and not s.is_build_server]
        if len(usable) != 1:
            raise ConfigError(
                f"{self.config.relpath}: coolify.server is not set and Coolify has {len(usable)} usable "
                f"servers: set coolify.server to one of {describe_servers(usable or listing)}"
            )
        return usable[0]

    def destinations(self, server: Server) -> list[Destination]:
        """GET /servers/{uuid}/destinations."""
        return [Destination.parse(d) for d in self.client.request_list("GET", f"/servers/{server.uuid}/destinations")]

    def destination(self, server: Server) -> str | None:
        """The uuid of the destination coolify.destination names (uuid, name or network) on `server`; None when
        unset (Coolify picks the only one)."""
        wanted = self.config.coolify.destination
        if not wanted:
            return None
        destinations = self.destinations(server)
        for destination in destinations:
            if wanted in (destination.uuid, destination.name, destination.network):
                return destination.uuid
        raise ConfigError(
            f"{self.config.relpath}: coolify.destination: no destination {wanted!r} on server "
            f"{server.name!r}; candidates: {describe_destinations(destinations)}"
        )

    def destination_error(self, server: Server) -> ConfigError:
        """The error of a create Coolify refused for want of a destination (several on `server`)."""
        destinations = self.destinations(server)
        return ConfigError(
            f"{self.config.relpath}: coolify.destination: server {server.name!r} has several destinations; "
            f"set coolify.destination to one of {describe_destinations(destinations)}"
        )

    def urls(self, target: Target) -> list[dict[str, str]]:
        base = self.api_base(target)
        return [{"name": "api", "url": f"{base}:{API_PORT}"}] if base else []

    def api_base(self, target: Target) -> str | None:
        domain = self.config.coolify.domain
        if not domain:
            return None
        scheme, _, host = domain.rpartition("://")
        return f"{scheme or 'https'}://{target.project}-{target.env}.{host}"

    def db_host(self, refs: Refs) -> str:
        """The host of a published db: the `ip` of the server the service runs on (only GET /servers and
        /servers/{uuid} show it: app/Http/Controllers/Api/ServersController.php:88-109), or the API's own host for
        the server Coolify runs on (`ip: host.docker.internal`). Never the server new services would go to now."""
        ip = self.server_of(refs).ip or ""
        if not ip or ip == "host.docker.internal":
            return urlsplit(str(self.client.http.base_url)).hostname or "localhost"
        return ip

    def server_of(self, refs: Refs) -> Server:
        """The Coolify server an existing service runs on, whatever the env file names now and whatever servers
        were added since: the one its create or view recorded (`server_uuid`), else its `placed=` mark
        (coolify.servers), else the one its view names (`destination.server`, else `server_id`). One GET /servers
        per instance, and a GET of the service only when the handle knows neither."""
        if refs.server_uuid:
            found = named(self.listing(), refs.server_uuid)
            if found is not None:
                return found
        if refs.server and self.config.coolify.servers is not None:
            found = self.listed_server(refs.server)
            if found is not None:
                return found
        service = self.finder.get_service(str(refs.service_uuid))
        nested = service.server if service else None
        server_id = service.server_id if service else None
        listing = self.listing()
        found = (named(listing, nested.uuid) if nested else None) or (
            nested if nested and nested.ip else None) or server_with_id(listing, server_id)
        if found is None:
            raise ProvisionError(
                f"Coolify's answers name no server for service {refs.service_uuid} (no destination.server, and no "
                f"server of its server_id {server_id!r} in GET /servers): provision cannot tell the host "
                f"of its published database. Check the service in Coolify's UI; Coolify's servers: "
                f"{describe_servers(listing)}")
        return found


def describe_servers(listing: Sequence[Server]) -> str:
    return ", ".join(server.shown for server in listing) or "none"


def named(listing: Sequence[Server], wanted: str | None) -> Server | None:
    """The server `wanted` names (its uuid or its name, as the env file may give either), or None."""
    return next((s for s in listing if wanted in (s.uuid, s.name)), None)


def server_with_id(listing: Sequence[Server], server_id: int | None) -> Server | None:
    """The server of a service's `server_id` (every view has it, app/Models/Service.php:62): GET /servers hides
    servers' `id` (ServersController.php:41-44) but shows it as `settings.server_id`."""
    if server_id is None:
        return None
    return next((s for s in listing if s.server_id == server_id), None)


def describe_destinations(destinations: Sequence[Destination]) -> str:
    return ", ".join(f"{d.name} ({d.uuid}, network {d.network})" for d in destinations) or "none"
