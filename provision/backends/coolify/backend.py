"""The Coolify backend: a project becomes a Coolify project, an env one of its environments,
and the stack one compose Service in it, all found again by name from any machine.

What this tool last pushed is recorded in the service's description (`provision=<hash>`, marks.py),
because Coolify rewrites the YAML it stores. Secrets live in the service's environment
variables and are read back (the token needs `read:sensitive`); they are generated once.

This module composes the parts: finder (names), servers (choice, placement), lock (the shared lock), create,
waits (actions and status waits), tasks (one-off scheduled tasks), logs, move; Coolify's answers are read in
models.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ...core.archive_scripts import DrillReport, DrillRequest
from ...core.archiving import ArchiveFacts, Restored
from ...core.config import EnvConfig, ProjectSpec
from ...core.errors import CoolifyAPIError, NotSupported, ProvisionError, StateError
from ...core.model import (
    NO_ENDPOINTS,
    ControlVerb,
    Destroyed,
    Endpoints,
    Handle,
    LockInfo,
    Observed,
    Prepared,
    Target,
    db_url,
)
from ...core.placement import ServerLoad, place
from ...core.planner import Action, Plan
from ...core.render import DEFAULT_DB_VOLUME, RenderedStack, parse_compose
from ...core.secrets import Secret, generate_missing
from ...infra import hints, interrupts, pgimage
from ...infra.doctor import Check, DoctorProbe
from ..base import Adopted, Backend
from . import doctor, marks
from .archives import CoolifyArchives
from .client import CoolifyClient
from .context import Context, Lookups
from .create import Creator, description
from .finder import Finder
from .lock import DEFAULT_TIMING, Locks, LockTiming
from .logs import Logs
from .models import Project, Refs, observation, public_url, running
from .move import Mover
from .servers import Servers
from .tasks import Tasks, b64
from .variables import read_secrets, set_secrets
from .waits import Waits

__all__ = ["CoolifyBackend", "Refs", "volume_name"]


class CoolifyBackend:
    """Runs each project as one compose Service on a Coolify server, through its API."""

    name = "coolify"
    def __init__(self, client: CoolifyClient, config: EnvConfig, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = interrupts.sleep, wall: Callable[[], float] = time.time,
                 lock_timing: LockTiming = DEFAULT_TIMING, lock_project: str | None = None) -> None:
        """`clock` (monotonic) and `sleep` time every wait, `wall` (epoch seconds) the lock's expiries;
        `lock_project`: the lock project's name (this owner's, `provision-locks-<owner>`, unless doctor's
        throwaway one)."""
        self.client = client
        self.config = config
        self.owner = config.owner or ""
        self.ctx = Context(client, config, clock, sleep, lock_project or f"provision-locks-{self.owner}",
                           Lookups(clock), wall)
        self.finder = Finder(self.ctx)
        self.locking = Locks(self.ctx, self.finder, lock_timing)
        self.servers = Servers(self.ctx, self.finder, self.locking)
        self.creator = Creator(self.ctx, self.finder, self.servers, self.locking)
        self.logging = Logs(self.ctx)
        self.waits = Waits(self.ctx, self.finder, self.logging)
        self.tasks = Tasks(self.ctx)
        self.archives = CoolifyArchives(self.tasks)
        self.mover = Mover(self.ctx, self.finder, self.waits, self.control)
        client.guard = self.locking.check  # nothing changes once a held lock may have expired
        # held from choosing a server until the service exists (coolify.servers): a run's creates never race
        # for a server's last place
        self._placement_lock = threading.Lock()

    def variant(self, client: CoolifyClient, *, lock_project: str) -> CoolifyBackend:
        """This env's backend through another client, with another lock project (doctor's throwaway one)."""
        return CoolifyBackend(client, self.config, clock=self.ctx.clock, sleep=self.ctx.sleep, wall=self.ctx.wall,
                              lock_timing=self.locking.timing, lock_project=lock_project)

    def describe(self) -> str:
        return f"Coolify provider ({str(self.client.http.base_url).rstrip('/')})"

    def load_handle(self, data: Mapping[str, Any]) -> Refs | None:
        return Refs.from_dict(data)

    def coolify_project_name(self, project: str) -> str:
        return self.finder.coolify_project_name(project)

    @staticmethod
    def service_name(target: Target) -> str:
        return Finder.service_name(target)

    # --- observe / prepare ------------------------------------------------------------------
    def observe(self, target: Target, known: Handle | None) -> Observed:
        refs, service = self.finder.locate(target, known)
        if service is None:
            return Observed(exists=False, handle=refs if refs != Refs() else None)
        return observation(service, refs)

    def prepare(self, target: Target, observed: Observed, stored: Mapping[str, Secret], *,
                create: bool = True) -> Prepared:
        """The service's secrets, read back from Coolify; without a service, the copy the service kept
        (after a destroy that kept the data) or, with `create`, new ones."""
        refs = observed.handle if isinstance(observed.handle, Refs) else None
        existing: dict[str, Secret] = dict(stored)
        if observed.exists and refs is not None and refs.service_uuid:
            existing = read_secrets(self.client, refs.service_uuid)
        if not create:
            return Prepared(secrets=existing)
        if observed.exists and not existing.get("DB_PASSWORD"):
            uuid = refs.service_uuid if refs is not None else "?"
            raise StateError(
                f"the Coolify service {uuid} of {target.project!r} in env {target.env!r} exists, but its DB_PASSWORD "
                f"could not be read back (missing or empty in Coolify): provision will not give "
                f"an existing database a new password. Put the password the database was created with back into the "
                f"service's DB_PASSWORD variable in Coolify (not 'shown once'), then run provision again"
            )
        secrets = generate_missing(existing)
        return Prepared(secrets=secrets, new_secrets=secrets != existing)


    # --- apply ------------------------------------------------------------------------------
    def apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
              plan: Plan) -> Refs:
        """create: project, environment, service, secrets, start. update: PATCH the compose and
        secrets, then restart (or start). start: start. Coolify applies env changes only on a (re)start."""
        known = observed.handle if isinstance(observed.handle, Refs) else Refs()
        if plan.action is Action.CREATE:
            # coolify.servers: from reading a server's load until the service exists, this process's placement
            # lock and that server's shared one (`_placed_server`) are held
            with self._placement_lock if self.config.coolify.servers is not None else contextlib.nullcontext(), \
                    contextlib.ExitStack() as placing:
                refs = self.creator.create(target, known, stack, placing)
            set_secrets(self.client, refs, prepared)
            self.waits.action(refs, "start")
            return refs
        refs = known if known.service_uuid else self.finder.locate(target, known)[0]
        if refs.service_uuid is None:
            raise ProvisionError(f"{target.project!r} has no Coolify service in env {target.env!r} to {plan.action}")
        if plan.action in (Action.UPDATE, Action.DRIFT):
            body: dict[str, Any] = {"docker_compose_raw": b64(stack.text),
                                    "description": description(
                                        stack, self.owner, memory=target.spec.memory_limit,
                                        placed=observed.server or self.servers.server_holding(refs.service_uuid))}
            urls = self.servers.urls(target)
            if urls:
                body["urls"] = urls
            self.client.request("PATCH", f"/services/{refs.service_uuid}", body=body)
            set_secrets(self.client, refs, prepared)
            self.waits.action(refs, "restart" if observed.any_running else "start", was_up=observed.ready,
                         running=running(observed), restart_if_running=True)
        else:
            self.waits.action(refs, "start")
        return refs

    def server_loads(self) -> list[ServerLoad]:
        return self.servers.server_loads()

    def listed_servers(self, config: EnvConfig) -> tuple[str, ...]:
        """The listed servers new stacks are spread over (coolify.servers); none without that list."""
        return tuple(s.name for s in config.coolify.servers or [])

    def place(self, config: EnvConfig, projects: Sequence[ProjectSpec]) -> dict[str, str]:
        """Where each of these new projects would go: {project: listed server name}; {} without coolify.servers.
        ServersFull when one of them fits on no server."""
        if self.config.coolify.servers is None or not projects:
            return {}
        return place(self.server_loads(), [(p.name, p.memory_limit) for p in projects])

    # --- commands in the db container ---------------------------------------------------------------------
    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        return self.tasks.run_sql(target, observed, sql, timeout=timeout, user=user, purpose=purpose)

    def store_secrets(self, target: Target, observed: Observed, secrets: Mapping[str, Secret]) -> None:
        """Coolify's copy of the project's secrets (its service variables): written only by a thread that holds
        the project's lock, so that no other runner reads or writes them meanwhile (a deploy from another
        machine between a rotation's ALTER ROLE and this write would put the old password back)."""
        refs = observed.handle if isinstance(observed.handle, Refs) else None
        if refs is None or refs.service_uuid is None or not observed.exists:
            raise ProvisionError(f"{target.project!r} has no Coolify service in env {target.env!r}")
        if not self.holds_lock(target):
            raise ProvisionError(f"the secrets of {target.project!r} in env {target.env!r} are written to Coolify "
                                 f"only under its lock, which this run does not hold: nothing was written")
        set_secrets(self.client, refs, Prepared(secrets=dict(secrets)))


    # --- wait -------------------------------------------------------------------------------
    def wait(self, target: Target, handle: Handle | None, prepared: Prepared, *, timeout: float,
             settled: Observed | None = None) -> Endpoints:
        return self.waits.wait(target, handle, prepared, timeout=timeout, settled=settled, answers=self.endpoints)

    # --- endpoints --------------------------------------------------------------------------
    def endpoints(self, target: Target, handle: Handle | None, prepared: Prepared) -> Endpoints:
        """From the handle alone when it knows the api's fqdn (or a domain is configured); else one GET."""
        refs = handle if isinstance(handle, Refs) else None
        if refs is None or refs.service_uuid is None:
            return NO_ENDPOINTS
        api_url = self.servers.api_base(target)
        if api_url is None:
            address = refs.api_fqdn
            if address is None:
                service = self.finder.get_service(refs.service_uuid)
                if service is None:
                    return NO_ENDPOINTS
                address = service.fqdn("api")
            api_url = public_url(address)
        variables = target.spec.variables
        password = prepared.secrets.get("DB_PASSWORD")
        user, database = variables["db_user"], variables["db_name"]
        public_port = variables.get("db_public_port")
        if public_port:
            host = self.servers.db_host(refs)
            return Endpoints(api_url, db_url(user, password, host, public_port, database), "public")
        return Endpoints(api_url, db_url(user, password, f"db-{refs.service_uuid}", 5432, database), "internal")


    # --- lifecycle --------------------------------------------------------------------------
    def control(self, target: Target, observed: Observed, verb: ControlVerb, *,
                prepared: Prepared | None = None) -> bool:
        refs = observed.handle if isinstance(observed.handle, Refs) else Refs()
        if not observed.exists or refs.service_uuid is None:
            raise ProvisionError(
                f"{target.project!r} has no Coolify service in env {target.env!r}: "
                f"run {hints.command('provision', env=target.env, project=target.project)} first"
            )
        changed = self.waits.action(refs, verb, was_up=observed.ready, running=running(observed))
        if verb == "stop" and changed:
            self.waits.await_status(refs, lambda s: not s.startswith(("running", "starting", "restarting")),
                               "stopped", timeout=self.config.health.timeout)
        return changed

    def destroy(self, target: Target, observed: Observed, *, delete_data: bool,
                prepared: Prepared | None = None) -> Destroyed:
        refs = observed.handle if isinstance(observed.handle, Refs) else Refs()
        done: list[str] = []
        kept: dict[str, Secret] | None = None
        if refs.service_uuid and observed.exists:
            if not delete_data:
                kept = read_secrets(self.client, refs.service_uuid) or None
            volumes = "true" if delete_data else "false"
            self.client.request("DELETE", f"/services/{refs.service_uuid}",
                                params={"delete_volumes": volumes})
            self.waits.await_gone(refs.service_uuid)
            if delete_data:
                done.append(f"deleted Coolify service {refs.service_uuid} and its volumes")
            else:
                names = ", ".join(volume_name(refs.service_uuid, key)
                                  for key in _volume_keys(observed.applied_text) or [DEFAULT_DB_VOLUME])
                done.append(
                    f"deleted Coolify service {refs.service_uuid}; its data volume stays on the server as "
                    f"{names}, and its credentials are kept (0600) in the state directory. "
                    f"Coolify names volumes after the service, so provisioning again creates a new service with a "
                    f"new, empty volume that reuses these credentials: restore the old volume's data into it"
                )
        removed_service = bool(done)
        if refs.project_uuid and (removed_service or delete_data):
            done.extend(self._remove_if_empty(refs.project_uuid, target.env))
        return Destroyed(changed=bool(done), messages=tuple(done), kept_secrets=kept)

    def _remove_if_empty(self, project_uuid: str, env: str) -> list[str]:
        """Delete the env and then the project when they hold nothing; Coolify refuses otherwise."""
        done: list[str] = []
        try:
            project = Project.parse(self.client.request_object("GET", f"/projects/{project_uuid}"))
            if not self.finder.ours(project):
                return done  # made by hand or by another checkout: never deleted here
            environment = self.finder.find_environment(project_uuid, env)
            if environment is not None and not environment.has_resources:
                self.client.request("DELETE", f"/projects/{project_uuid}/environments/{environment.uuid}")
                done.append(f"removed the empty Coolify environment {env!r}")
            for other in project.environments:
                details = self.finder.find_environment(project_uuid, other)
                if details is not None and details.has_resources:
                    return done
            self.client.request("DELETE", f"/projects/{project_uuid}")
            done.append(f"removed the empty Coolify project {project.name!r}")
        except CoolifyAPIError as exc:
            if exc.status not in (400, 404):
                raise
        return done


    # --- the lock every runner sees: lock.py ----------------------------------------------------------------
    def lock(self, target: Target, known: Handle | None, *, timeout: float) -> contextlib.AbstractContextManager[None]:
        return self.locking.lock(target, known, timeout=timeout)

    def holds_lock(self, target: Target) -> bool:
        return self.locking.holds_lock(target)

    def locks(self, config: EnvConfig) -> list[LockInfo]:
        return self.locking.locks(config)

    def unlock(self, target: Target) -> bool:
        return self.locking.unlock(target)

    def adopt(self, target: Target) -> Adopted:
        """Take over the same-named service (made before owner ids, by hand or by another checkout): its
        description gets this env's owner id. Returns what was done (nothing when it is ours already)."""
        project = self.finder.find_project(target)
        environment = self.finder.find_environment(project.uuid, target.env) if project else None
        name = self.finder.service_name(target)
        matches = [s for s in (environment.services if environment else ()) if s.name == name]
        if not matches:
            raise ProvisionError(f"no Coolify service named {name!r} in project "
                                 f"{self.finder.coolify_project_name(target.project)!r}, environment {target.env!r} "
                                 f"to adopt")
        if len(matches) > 1 and environment is not None:
            self.finder.service_in(environment, target)  # raises: which uuids, and what to do
        service = matches[0]
        done: list[str] = []
        if not self.finder.ours(service):
            # its marks (either form) with this owner id, written in the form Coolify accepts
            description = replace(service.marks, owner=self.owner).render()
            self.client.request("PATCH", f"/services/{service.uuid}", body={"description": description})
            done.append(f"adopted Coolify service {service.uuid}: it now carries owner {self.owner}")
        legacy = project.description if project else ""
        if project is not None and not self.finder.ours(project) and (
                marks.parse(legacy).marked or marks.is_legacy_project(legacy)):
            body = {"description": marks.project_description(self.owner)}
            self.client.request("PATCH", f"/projects/{project.uuid}", body=body)
            done.append(f"adopted Coolify project {project.name!r}")
        return Adopted(changed=bool(done), messages=tuple(done))

    def logs(self, target: Target, observed: Observed, *, service: str | None, tail: int,
             since: datetime | None = None, follow: bool = False) -> Iterator[str]:
        return self.logging.logs(target, observed, service=service, tail=tail, since=since, follow=follow)

    def image_major(self, image: str) -> int:
        """Coolify's API cannot run an image; this machine's Docker Engine can, when it has one and the image."""
        return pgimage.image_major(image, why="Coolify's API cannot run")

    def data_major(self, target: Target, image: str) -> int | None:
        """The running server's major (SHOW server_version_num, through a one-off task): the data directory's."""
        observed = self.observe(target, None)
        db = observed.services.get("db")
        if not observed.exists or db is None or not db.running:
            raise NotSupported(f"the db of {target.project!r} is not running, and Coolify's API cannot read its "
                               f"volume's PG_VERSION")
        answer = self.run_sql(target, observed, "SHOW server_version_num;", purpose="server-version")
        return int(answer.strip()) // 10000

    def find_volume(self, target: Target, volume_key: str) -> str | None:
        """Coolify names a service's volume `<service uuid>_<slug of key>` and keeps it until the service is deleted
        with its volumes (its API lists none): the name while the service exists, else None."""
        refs = self.observe(target, None).handle
        uuid = refs.service_uuid if isinstance(refs, Refs) else None
        return volume_name(uuid, volume_key) if uuid else None

    # --- continuous archiving: archives.py (tasks in the archiver; restores in the stack) ------------------------
    def archive_facts(self, target: Target, observed: Observed, lineage: str) -> ArchiveFacts:
        if observed.exists and "archiver" not in observed.services:  # a summary view (an env's listing) says only
            observed = self.observe(target, observed.handle)  # the aggregate status: whether the archiver runs, asked
        return self.archives.facts(target, observed, lineage)

    def restore_outcome(self, target: Target, observed: Observed, volume_key: str) -> Restored:
        restored = self.archives.outcome(target, observed, volume_key)
        uuid = observed.handle.service_uuid if isinstance(observed.handle, Refs) else None
        return replace(restored, volume=volume_name(uuid, volume_key)) if uuid else restored

    def drill_archive(self, target: Target, observed: Observed, request: DrillRequest, *,
                      timeout: float) -> DrillReport:
        return self.archives.drill(target, observed, request, timeout=timeout)

    # --- move to another server: move.py ----------------------------------------------------------------
    def set_aside(self, target: Target, observed: Observed, label: str) -> tuple[str, dict[str, Secret]]:
        return self.mover.set_aside(target, observed, label)

    def put_back(self, target: Target, name: str) -> None:
        self.mover.put_back(target, name)

    def drop_set_aside(self, target: Target) -> list[str]:
        return self.mover.drop_set_aside(target)

    def observe_env(self, config: EnvConfig, known: Mapping[str, Handle], *,
                    full: bool = False) -> dict[str, Observed]:
        prefix = config.coolify.project_prefix
        found: dict[str, Observed] = {}
        for project in self.finder.projects():
            name = project.name or ""
            if not name.startswith(prefix):
                continue
            short = name[len(prefix):]
            environment = self.finder.find_environment(project.uuid, config.name)
            if environment is None:
                continue
            for service in environment.services:
                if service.name == short and self.finder.ours(service):
                    recorded = known.get(short)
                    address = recorded.api_fqdn if isinstance(recorded, Refs) and \
                        recorded.service_uuid == service.uuid else None
                    # a summary has no fqdn: the recorded one spares endpoints a request per project
                    refs = Refs(project.uuid, environment.uuid, service.uuid, address)
                    view = self.finder.get_service(service.uuid) if full else service
                    found[short] = observation(view or service, refs)
        return found

    def doctor(self, probe: DoctorProbe) -> list[Check]:
        """`provision doctor`'s checks of this Coolify (doctor.py next to this module)."""
        return doctor.coolify_checks(self, probe)


def volume_name(service_uuid: str, key: str) -> str:
    """The Docker volume Coolify makes for the compose volume `key` of a service: `<uuid>_<Str::slug(key, '-')>`
    (bootstrap/helpers/parsers.php:2253-2254), e.g. `pgdata_pg17_x` -> `<uuid>_pgdata-pg17-x`. Laravel's slug:
    ASCII, `_` runs and `@` (as `at`) become the separator, lower case, anything but letters, digits, separators
    and spaces dropped, separator and space runs one separator, trimmed."""
    text = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode()
    text = re.sub(r"_+", "-", text).replace("@", "-at-").lower()
    text = re.sub(r"[^a-z0-9\-\s]+", "", text)
    return service_uuid + "_" + re.sub(r"[-\s]+", "-", text).strip("-")


def _volume_keys(compose: str | None) -> list[str]:
    """The named volumes a compose text declares (its top-level `volumes:` keys); [] when unknown or unreadable."""
    if not compose:
        return []
    try:
        volumes = parse_compose(compose).get("volumes")
    except ProvisionError:
        return []
    return [str(key) for key in volumes] if isinstance(volumes, dict) else []



def _implements_the_protocol(backend: CoolifyBackend) -> Backend:
    """Never called: mypy checks here that CoolifyBackend has every verb of the Backend protocol."""
    return backend
