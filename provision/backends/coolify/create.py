"""Making a project's service: its project and environment when missing, on the server chosen or placed, with the
description that records what was pushed."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

from ...core.branches import BranchMark
from ...core.errors import AmbiguousResult, BackendUnavailable, ConfigError, CoolifyAPIError
from ...core.model import Target
from ...core.render import RenderedStack
from . import marks
from .context import Context
from .finder import Finder
from .lock import Locks
from .models import Refs, Server, compose_hash, servers
from .servers import Servers, describe_servers
from .tasks import b64


class Creator:
    """Creates in one env's Coolify."""

    def __init__(self, ctx: Context, finder: Finder, servers: Servers, locks: Locks) -> None:
        self.ctx, self.finder, self.servers, self.locks = ctx, finder, servers, locks
        self.client, self.config, self.owner = ctx.client, ctx.config, ctx.owner

    def create(self, target: Target, known: Refs, stack: RenderedStack,
               placing: contextlib.ExitStack | None = None) -> Refs:
        """Make what `known` lacks of the project, environment and service (on the server chosen or placed, never
        twice while a lost create may still land); the service's refs."""
        # observe() just looked both up by name (under this project's lock): create what it did not find
        project_uuid = known.project_uuid or self.finder.ensure_project(target, look_first=False)
        environment_uuid = known.environment_uuid or self.finder.ensure_environment(
            project_uuid, target.env, look_first=target.env == "production")  # Coolify makes 'production' itself
        placed: str | None = None
        if self.config.coolify.servers is not None:
            server, placed = self.servers.placed_server(target, placing, known)
        else:
            server = Server.named(known.new_server) if known.new_server else self.servers.choose_server()
            if not self.config.coolify.server and not known.new_server:
                self.locks.remember_server(known.lock_project, server.uuid)
        body: dict[str, Any] = {
            "name": self.finder.service_name(target),
            "description": description(stack, self.owner, memory=target.spec.memory_limit, placed=placed),
            "project_uuid": project_uuid,
            "environment_uuid": environment_uuid,
            "server_uuid": server.uuid,
            "docker_compose_raw": b64(stack.text),
            "instant_deploy": False,
            "tags": ["provision", f"provision-{target.env}"],
        }
        destination = self.servers.destination(server)
        if destination:
            body["destination_uuid"] = destination
        urls = self.servers.urls(target)
        if urls:
            body["urls"] = urls
        for _ in range(3):
            try:
                created = self.client.request_object("POST", "/services", body=body, keys=("uuid",))
                domains = [d for d in created.get("domains") or [] if isinstance(d, str)]
                # only the api has a URL in the stack: Coolify's one domain is the api's
                return Refs(project_uuid, environment_uuid, str(created["uuid"]),
                            domains[0] if len(domains) == 1 else None, lock_project=known.lock_project, server=placed,
                            server_uuid=server.uuid)
            except AmbiguousResult as exc:
                # the create may have happened, or may still happen: it is looked for, never sent twice blindly
                def service() -> str | None:
                    environment = self.finder.find_environment(project_uuid, environment_uuid)
                    found = self.finder.service_in(environment, target) if environment else None  # by name, ours only
                    return found.uuid if found is not None else None

                uuid = self.finder.made_anyway(exc, service, f"service {target.project!r}")
                if uuid is not None:
                    return Refs(project_uuid, environment_uuid, uuid, lock_project=known.lock_project, server=placed,
                                server_uuid=server.uuid)
            except CoolifyAPIError as exc:
                if exc.status == 400 and "multiple destinations" in exc.message:
                    raise self.servers.destination_error(server) from exc
                if exc.status == 404 and "Server not found" in exc.message and known.new_server:
                    # the remembered server is gone: choose again, remember that one, and retry
                    server = self.servers.choose_server()
                    self.locks.remember_server(known.lock_project, server.uuid)
                    known = replace(known, new_server=None)
                    body["server_uuid"] = server.uuid
                    continue
                if exc.status == 404 and "Server not found" in exc.message:
                    listing = servers(self.client.request_list("GET", "/servers"))
                    raise ConfigError(f"{self.config.relpath}: coolify.server: no server {server.uuid!r} in "
                                      f"Coolify; candidates: {describe_servers(listing)}") from exc
                raise
        raise BackendUnavailable(f"could not create the Coolify service for {target.project!r}: Coolify kept failing; "
                                 f"retry later")


def description(stack: RenderedStack, owner: str, *, memory: int = 0, placed: str | None = None) -> str:
    """The service description (marks.service_description) of this stack."""
    db = (stack.document.get("services") or {}).get("db") or {}
    labels = db.get("labels") if isinstance(db, dict) else None
    branch = BranchMark.from_labels(labels) if isinstance(labels, dict) else None
    return marks.service_description(stack.config_hash, compose_hash(stack.text), owner, memory=memory, placed=placed,
                                     branch=branch)

