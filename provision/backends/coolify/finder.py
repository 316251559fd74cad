"""Finding a project's Coolify resources by name, and making the project and environment: what is ours (this
owner's marks) and what is foreign, and looking for what a create whose answer was lost made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from urllib.parse import quote

from ...core.errors import (
    AmbiguousResult,
    BackendUnavailable,
    CoolifyNotFound,
    InvalidName,
    ProjectConflict,
    ProvisionError,
)
from ...core.model import Handle, Target
from ...infra import hints
from . import marks
from .client import answered
from .context import Context
from .models import Environment, Project, Refs, Service


class Finder:
    """Lookups by name in one env's Coolify."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.config = ctx.config
        self.owner = ctx.owner
        # how long a create whose answer was lost is looked for before it is sent again
        self.create_grace = max(10.0, 2 * ctx.config.coolify.request_timeout)
        # how long a create Coolify never answered is looked for before the run stops (it is never sent twice)
        self.create_patience = max(self.create_grace, ctx.config.health.timeout)

    def coolify_project_name(self, project: str) -> str:
        name = f"{self.config.coolify.project_prefix}{project}"
        if len(name) < 3:
            raise InvalidName(
                f"{self.config.relpath}: coolify.project_prefix: Coolify project names need at least 3 characters, "
                f"and {name!r} has {len(name)}: set a prefix such as 'app-' or use a longer project name"
            )
        return name

    @staticmethod
    def service_name(target: Target) -> str:
        return target.project

    def projects(self) -> list[Project]:
        """GET /projects."""
        return [Project.parse(p) for p in self.client.request_list("GET", "/projects")]

    def find_project(self, target: Target, projects: list[Project] | None = None) -> Project | None:
        """The project's Coolify project (from `projects`, else a new listing); an error when several carry its name."""
        name = self.coolify_project_name(target.project)
        listed = self.projects() if projects is None else projects
        matches = [p for p in listed if p.name == name]
        if len(matches) > 1:
            uuids = ", ".join(p.uuid for p in matches)
            raise ProvisionError(
                f"Coolify has {len(matches)} projects named {name!r} ({uuids}): names are not unique in Coolify, "
                f"so rename or delete the extra ones in its UI"
            )
        return matches[0] if matches else None

    def find_environment(self, project_uuid: str, env: str) -> Environment | None:
        """The environment `env` (its name or uuid) of a project, or None."""
        try:
            return Environment.parse(self.client.request_object(
                "GET", f"/projects/{project_uuid}/{quote(env, safe='')}", keys=("uuid",)))
        except CoolifyNotFound:
            return None

    def service_in(self, environment: Environment, target: Target) -> Service | None:
        """The project's service in `environment`; an error when the name is taken by something else or
        when several services carry it (names are not unique in Coolify: the user must pick one)."""
        name = self.service_name(target)
        matches = [service for service in environment.services if service.name == name]
        if len(matches) > 1:
            uuids = ", ".join(m.uuid for m in matches)
            raise ProvisionError(
                f"Coolify has {len(matches)} services named {name!r} in project "
                f"{self.coolify_project_name(target.project)!r}, environment {target.env!r} ({uuids}): provision "
                f"cannot tell which one holds the data. Keep the one whose database you need, delete the others in "
                f"Coolify's UI (without deleting volumes if unsure), then run provision again"
            )
        for service in matches:
            if not self.ours(service):
                raise ProjectConflict(self.foreign(service, target))
            return service
        return None

    def ours(self, resource: Project | Service) -> bool:
        """Made by this repository: the description carries provision's marker and exactly this env's owner id."""
        found = marks.parse(resource.description)
        return found.marked and found.owner == self.owner

    def foreign(self, service: Service, target: Target) -> str:
        """Why the same-named `service` is not provision's to change, and how to take it over."""
        found = service.marks
        owner = found.owner
        if not found.marked:
            whose = "was not made by provision"
        elif owner is None:
            whose = "was made by provision before owner ids existed (or by hand), without an owner id"
        else:
            whose = f"belongs to another checkout or team (owner {owner}, this env's owner is {self.owner})"
        return (f"a service named {self.service_name(target)!r} ({service.uuid}) exists in Coolify project "
                f"{self.coolify_project_name(target.project)!r}, environment {target.env!r}, and {whose}: provision "
                f"will not change or delete it. Choose another project name, or take it over with "
                f"{hints.command('adopt', '--yes', env=target.env, project=target.project)}")

    def look_for(self, find: Callable[[], str | None], what: str, *, timeout: float | None = None) -> str | None:
        """After a create whose answer was lost: look for its result for a grace period (Coolify may still be
        processing the request that timed out) before anything is created again."""
        found: list[str] = []

        def look() -> str | None:
            uuid = find()
            if uuid is not None:
                found.append(uuid)
                return None
            return f"no {what} yet"

        self.ctx.wait_for({"created": look}, timeout=self.create_grace if timeout is None else timeout,
                          interval=1.0, max_interval=2.0)
        return found[0] if found else None

    def made_anyway(self, exc: AmbiguousResult, find: Callable[[], str | None], what: str) -> str | None:
        """After a create whose outcome is unknown (`exc`): the uuid of what it made, found by name (and, for
        services, this owner's mark), or None when it made nothing and a second create is safe. Coolify keeps no
        name unique, so a create is never sent twice while the first may still land: when Coolify answered (its
        500, or a body cut short) the request has ended and one look tells; without an answer (a timeout, a lost
        connection, a gateway's 502/503/504) it is looked for up to `create_patience`, and when it never shows the
        run stops without sending it again (the next run finds it, or makes it if it never happened)."""
        if answered(exc):
            return find()
        uuid = self.look_for(find, what, timeout=self.create_patience)
        if uuid is None:
            raise AmbiguousResult(
                f"Coolify did not answer the create of {what} and it has not appeared in {self.create_patience:.0f} s; "
                f"provision will not send it again, since Coolify does not keep names unique and a second create "
                f"could make a duplicate. Run provision again once Coolify answers: it finds the {what} if Coolify "
                f"made it after all, or creates it ({exc})") from exc
        return uuid

    def get_service(self, uuid: str) -> Service | None:
        """GET /services/{uuid} (the full view), or None when it does not exist."""
        try:
            return Service.parse(self.client.request_object("GET", f"/services/{uuid}", keys=("uuid",)))
        except CoolifyNotFound:
            return None

    def locate(self, target: Target, known: Handle | None) -> tuple[Refs, Service | None]:
        """The project's refs and its service (full view), from the recorded uuid or by name."""
        cached = known if isinstance(known, Refs) else Refs()
        if cached.service_uuid:
            service = self.get_service(cached.service_uuid)
            if service is not None and service.name == self.service_name(target) and self.ours(service):
                return replace(cached, api_fqdn=service.fqdn("api")), service
        projects = self.projects()
        # the same listing spares the lock a request, and a create the GET /servers
        locks = self.lock_project_in(projects)
        remembered = None if self.config.coolify.server or locks is None else marks.parse(locks.description).server
        base = Refs(lock_project=locks.uuid if locks else None, new_server=remembered)
        project = self.find_project(target, projects)
        if project is None:
            return base, None
        environment = self.find_environment(project.uuid, target.env)
        if environment is None:
            return replace(base, project_uuid=project.uuid), None
        refs = replace(base, project_uuid=project.uuid, environment_uuid=environment.uuid)
        summary = self.service_in(environment, target)
        if summary is None:
            return refs, None
        service = self.get_service(summary.uuid)
        return replace(refs, service_uuid=summary.uuid, api_fqdn=service.fqdn("api") if service else None), service

    def ensure_project(self, target: Target, *, look_first: bool = True) -> str:
        """The uuid of the project, created when missing; after a lost response it looks before creating again."""
        name = self.coolify_project_name(target.project)
        for attempt in range(3):
            project = self.find_project(target) if look_first or attempt else None
            if project is not None:
                return project.uuid
            try:
                created = self.client.request_object(
                    "POST", "/projects", body={"name": name, "description": marks.project_description(self.owner)},
                    keys=("uuid",))
                return str(created["uuid"])
            except AmbiguousResult as exc:
                def project_uuid() -> str | None:
                    found = self.find_project(target)
                    return found.uuid if found is not None else None

                uuid = self.made_anyway(exc, project_uuid, f"project {name!r}")
                if uuid is not None:
                    return uuid
        raise BackendUnavailable(f"could not create the Coolify project {name!r}: Coolify kept failing; retry later")

    def ensure_environment(self, project_uuid: str, env: str, *, look_first: bool = True) -> str:
        for attempt in range(3):
            found = self.find_environment(project_uuid, env) if look_first or attempt else None
            if found is not None:
                return found.uuid
            try:
                created = self.client.request(
                    "POST", f"/projects/{project_uuid}/environments", body={"name": env}, ok=(201, 409))
                if isinstance(created, dict) and isinstance(created.get("uuid"), str):
                    return str(created["uuid"])
                # 409: it exists (created concurrently): look it up on the next pass
            except AmbiguousResult:
                def environment() -> str | None:
                    found = self.find_environment(project_uuid, env)
                    return found.uuid if found is not None else None

                uuid = self.look_for(environment, f"environment {env!r}")
                if uuid is not None:
                    return uuid
        raise BackendUnavailable(f"could not create the Coolify environment {env!r}: Coolify kept failing; retry later")


    def lock_project_in(self, projects: list[Project]) -> Project | None:
        """This owner's lock project in a listing (the oldest, when several runners made one), or None."""
        mine = [p for p in projects if p.name == self.ctx.lock_project_name and self.ours(p)]
        return min(mine, key=lambda p: (p.id, p.uuid)) if mine else None
