"""The Coolify backend: a project becomes a Coolify project, an env one of its environments,
and the stack one compose Service in it, all found again by name from any machine.

What this tool last pushed is recorded in the service's description (`provision=<hash>`, marks.py),
because Coolify rewrites the YAML it stores. Secrets live in the service's environment
variables and are read back (the token needs `read:sensitive`); they are generated once.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import re
import secrets
import shutil
import threading
import time
import unicodedata
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from ... import hints, interrupts, roles
from ...clock import utc_now
from ...commands import SubprocessRunner
from ...config import EnvConfig, ProjectSpec
from ...database import major_of, psql_in_container
from ...doctor import Check, DoctorProbe
from ...errors import (
    AmbiguousResult,
    BackendUnavailable,
    CommandFailed,
    ConfigError,
    CoolifyAPIError,
    CoolifyAuthError,
    CoolifyNotFound,
    HealthTimeout,
    Interrupted,
    InvalidName,
    LockLost,
    LockTimeout,
    NotSupported,
    ProjectConflict,
    ProvisionError,
    ServersFull,
    StateError,
    tail,
)
from ...model import (
    NO_ENDPOINTS,
    ControlVerb,
    Destroyed,
    Endpoints,
    Handle,
    LockInfo,
    Observed,
    Prepared,
    ServiceState,
    Target,
    Usage,
    db_url,
)
from ...placement import ServerLoad, place
from ...planner import Action, Plan
from ...probes import http_probe, postgres_probe, wait_for
from ...render import (
    DEFAULT_DB_VOLUME,
    RenderedStack,
    hash_services,
    parse_compose,
    stack_hash,
    without_hash_labels,
)
from ...secrets import GENERATED_SECRETS, Secret, generate_missing
from ...state import holder_record
from ..base import Adopted, Backend
from . import marks
from .client import CoolifyClient, answered

# what provision writes into descriptions, and reads back in both forms, is marks.py's
_UUID = re.compile(r"^[a-z0-9]{20,40}$")
API_PORT = 3000
LOG_LINES = 40
FOLLOW_INTERVAL = 2.0  # seconds between two asks for new log lines (`logs --follow`)
FOLLOW_LINES = 500  # lines asked for each time while following
TASK_FREQUENCY = "0 0 1 1 *"  # a one-off task's cron: it is disabled and only ever run through /execute
TASK_QUEUE_SLACK = 120.0  # seconds a task may wait for a queue worker, on top of its own timeout
TASK_FIRST_POLL = 0.5  # seconds between POST .../execute and the first look at the runs (a queued job)
# scheduled_tasks.command is `$table->string('command')` = varchar(255) on PostgreSQL
# (database/migrations/2023_12_31_173041_create_scheduled_tasks_table.php:19, never altered), and the API's rule has
# no maximum (app/Http/Controllers/Api/ScheduledTasksController.php:62, :138): a longer one is a 500 (SQLSTATE 22001)
TASK_COMMAND_MAX = 255
TASK_NAME_MAX = 255  # `name`: required|string|max:255 (ScheduledTasksController.php:61), varchar(255) (migration :18)
# a task runs in the only running container whatever `container` says (app/Jobs/ScheduledTaskJob.php:130-152): this
# refuses any container without psql, i.e. the api's
_PSQL_GUARD = "command -v psql>/dev/null||{ echo PROVISION_WRONG_CONTAINER;exit 97;};"
_RC = "rc=$?;echo PROVISION_RC=$rc;exit $rc"
# The db container's copy of the script that makes the roles (the template's db environment references it):
# the roles task is then one short command, not the dozen a 5 KB script takes in 255-character pieces
ROLES_ENV = "PROVISION_ROLES"
_STALE_ENV = "PROVISION_STALE_ENV"
# project shared variables (the run lock: routes/api.php:99-102) and POST .../scheduled-tasks/{task}/execute
# (:421) first appear in v4.3.0 (routes/api.php at tags v4.2.0 and v4.3.0)
MIN_COOLIFY_VERSION = (4, 3, 0)
MIN_LOCK_TTL = 600.0  # seconds a lock whose comment names no expiry (edited by hand) lives from its creation
# A held lock is renewed by a heartbeat (its comment gets a new expiry), so it never expires under a live run
# however long a data verb takes, and a run that died stops blocking the others LOCK_TTL after its last renewal.
LOCK_TTL = 300.0  # seconds from a renewal to the expiry it records
LOCK_RENEW = 60.0  # seconds between two renewals; a failed one is tried again every LOCK_RETRY seconds
LOCK_RETRY = 10.0
# a holder changes nothing within this many seconds of its recorded expiry (clock skew between runners, a
# renewal that came too late): past it the lock counts as lost for good, whatever a late renewal says
LOCK_MARGIN = 60.0
LOCK_POLL = (1.0, 5.0)  # seconds between two looks at a lock another run holds: the first, the longest
START_GRACE = 0.5  # seconds between POST start and the first status poll
# Polling (API-NOTES §17-18): a status Coolify stores moves when a queued job runs (a restart's stop, the start
# activity: seconds after the POST) or when Coolify refreshes the containers' states (Sentinel's push or the
# server check, about once a minute: app/Console/Kernel.php). A poll faster than that learns nothing new and
# spends the run's request budget (client.RequestBudget), so polls back off to a few seconds:
JOB_POLL = (0.5, 2.0)  # what a job moves: the first pause, the longest (x1.5 each poll)
REFRESH_POLL = (0.25, 5.0, 0.15)  # what only a refresh moves: the first pause, the longest, the share of the time
# waited so far (a return comes at most ~15% after the refresh; a minute's wait is 35 requests, not 53)


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


class CoolifyBackend:
    """Runs each project as one compose Service on a Coolify server, through its API."""

    name = "coolify"

    def __init__(self, client: CoolifyClient, config: EnvConfig) -> None:
        self.client = client
        self.config = config
        self.owner = config.owner or ""
        # a lock outlives its holder's last renewal at most this long (a run that died is not waited on forever)
        self.lock_ttl, self.lock_renew, self.lock_retry, self.lock_margin = LOCK_TTL, LOCK_RENEW, LOCK_RETRY, LOCK_MARGIN
        self._locks_held = threading.local()  # this thread's shared locks (re-entrant within one run's thread)
        client.guard = self._check_locks  # nothing changes once a held lock may have expired
        # how long a create whose answer was lost is looked for before it is sent again
        self.create_grace = max(10.0, 2 * config.coolify.request_timeout)
        # how long a create Coolify never answered is looked for before the run stops (it is never sent twice)
        self.create_patience = max(self.create_grace, config.health.timeout)
        self._lock = threading.Lock()
        # held from choosing a server until the service exists (coolify.servers): a run's creates never race
        # for a server's last place
        self._placement_lock = threading.Lock()
        self._version_lock = threading.Lock()
        self._version: str | None = None  # GET /version's answer, asked once (_check_version)
        self._servers: list[dict[str, Any]] | None = None  # GET /servers, when coolify.servers needs addresses
        self._holders: dict[str, str] | None = None  # service uuid -> listed server, for services not marked placed=
        # the env's server, looked up once from config: a read-through cache of configuration, not of any
        # project's state (every project verb works on a fresh instance)
        self._server: dict[str, Any] | None = None

    def describe(self) -> str:
        return f"Coolify provider ({str(self.client.http.base_url).rstrip('/')})"

    def load_handle(self, data: Mapping[str, Any]) -> Refs | None:
        return Refs.from_dict(data)

    # --- naming -----------------------------------------------------------------------------
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

    def _find_project(self, target: Target, projects: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        name = self.coolify_project_name(target.project)
        listed = self.client.request_list("GET", "/projects") if projects is None else projects
        matches = [p for p in listed if p.get("name") == name]
        if len(matches) > 1:
            uuids = ", ".join(str(p.get("uuid")) for p in matches)
            raise ProvisionError(
                f"Coolify has {len(matches)} projects named {name!r} ({uuids}): names are not unique in Coolify, "
                f"so rename or delete the extra ones in its UI"
            )
        return matches[0] if matches else None

    def _find_environment(self, project_uuid: str, env: str) -> dict[str, Any] | None:
        try:
            return self.client.request_object("GET", f"/projects/{project_uuid}/{quote(env, safe='')}", keys=("uuid",))
        except CoolifyNotFound:
            return None

    def _service_in(self, environment: Mapping[str, Any], target: Target) -> dict[str, Any] | None:
        """The project's service in `environment`; an error when the name is taken by something else or
        when several services carry it (names are not unique in Coolify: the user must pick one)."""
        name = self.service_name(target)
        matches = [service for service in _objects(environment.get("services")) if service.get("name") == name]
        if len(matches) > 1:
            uuids = ", ".join(str(m["uuid"]) for m in matches)
            raise ProvisionError(
                f"Coolify has {len(matches)} services named {name!r} in project "
                f"{self.coolify_project_name(target.project)!r}, environment {target.env!r} ({uuids}): provision "
                f"cannot tell which one holds the data. Keep the one whose database you need, delete the others in "
                f"Coolify's UI (without deleting volumes if unsure), then run provision again"
            )
        for service in matches:
            if not self._ours(service):
                raise ProjectConflict(self._foreign(service, target))
            return dict(service)
        return None

    def _ours(self, resource: Mapping[str, Any]) -> bool:
        """Made by this repository: the description carries provision's marker and exactly this env's owner id."""
        found = marks.parse(str(resource.get("description") or ""))
        return found.marked and found.owner == self.owner

    def _foreign(self, service: Mapping[str, Any], target: Target) -> str:
        found = marks.parse(str(service.get("description") or ""))
        owner = found.owner
        if not found.marked:
            whose = "was not made by provision"
        elif owner is None:
            whose = "was made by provision before owner ids existed (or by hand), without an owner id"
        else:
            whose = f"belongs to another checkout or team (owner {owner}, this env's owner is {self.owner})"
        return (f"a service named {self.service_name(target)!r} ({service.get('uuid')}) exists in Coolify project "
                f"{self.coolify_project_name(target.project)!r}, environment {target.env!r}, and {whose}: provision "
                f"will not change or delete it. Choose another project name, or take it over with "
                f"{hints.command('adopt', '--yes', env=target.env, project=target.project)}")

    def _look_for(self, find: Callable[[], str | None], what: str, *, timeout: float | None = None) -> str | None:
        """After a create whose answer was lost: look for its result for a grace period (Coolify may still be
        processing the request that timed out) before anything is created again."""
        found: list[str] = []

        def look() -> str | None:
            uuid = find()
            if uuid is not None:
                found.append(uuid)
                return None
            return f"no {what} yet"

        wait_for({"created": look}, timeout=self.create_grace if timeout is None else timeout,
                 interval=1.0, max_interval=2.0)
        return found[0] if found else None

    def _made_anyway(self, exc: AmbiguousResult, find: Callable[[], str | None], what: str) -> str | None:
        """After a create whose outcome is unknown (`exc`): the uuid of what it made, found by name (and, for
        services, this owner's mark), or None when it made nothing and a second create is safe. Coolify keeps no
        name unique, so a create is never sent twice while the first may still land: when Coolify answered (its
        500, or a body cut short) the request has ended and one look tells; without an answer (a timeout, a lost
        connection, a gateway's 502/503/504) it is looked for up to `create_patience`, and when it never shows the
        run stops without sending it again (the next run finds it, or makes it if it never happened)."""
        if answered(exc):
            return find()
        uuid = self._look_for(find, what, timeout=self.create_patience)
        if uuid is None:
            raise AmbiguousResult(
                f"Coolify did not answer the create of {what} and it has not appeared in {self.create_patience:.0f} s; "
                f"provision will not send it again, since Coolify does not keep names unique and a second create "
                f"could make a duplicate. Run provision again once Coolify answers: it finds the {what} if Coolify "
                f"made it after all, or creates it ({exc})") from exc
        return uuid

    def _get_service(self, uuid: str) -> dict[str, Any] | None:
        try:
            return self.client.request_object("GET", f"/services/{uuid}", keys=("uuid",))
        except CoolifyNotFound:
            return None

    def _locate(self, target: Target, known: Handle | None) -> tuple[Refs, dict[str, Any] | None]:
        """The project's refs and its service (full view), from the recorded uuid or by name."""
        cached = known if isinstance(known, Refs) else Refs()
        if cached.service_uuid:
            service = self._get_service(cached.service_uuid)
            if service is not None and service.get("name") == self.service_name(target) and self._ours(service):
                return replace(cached, api_fqdn=_fqdn(service, "api")), service
        projects = self.client.request_list("GET", "/projects")
        # the same listing spares the lock a request, and a create the GET /servers
        locks = self._lock_project_in(projects) or {}
        remembered = None if self.config.coolify.server else marks.parse(str(locks.get("description") or "")).server
        base = Refs(lock_project=str(locks["uuid"]) if locks else None,
                    new_server=remembered)
        project = self._find_project(target, projects)
        if project is None:
            return base, None
        environment = self._find_environment(project["uuid"], target.env)
        if environment is None:
            return replace(base, project_uuid=str(project["uuid"])), None
        refs = replace(base, project_uuid=str(project["uuid"]), environment_uuid=str(environment["uuid"]))
        summary = self._service_in(environment, target)
        if summary is None:
            return refs, None
        service = self._get_service(str(summary["uuid"]))
        return replace(refs, service_uuid=str(summary["uuid"]), api_fqdn=_fqdn(service or {}, "api")), service

    # --- observe / prepare ------------------------------------------------------------------
    def observe(self, target: Target, known: Handle | None) -> Observed:
        refs, service = self._locate(target, known)
        if service is None:
            return Observed(exists=False, handle=refs if refs != Refs() else None)
        return _observed(service, refs)

    def prepare(self, target: Target, observed: Observed, stored: Mapping[str, Secret], *,
                create: bool = True) -> Prepared:
        """The service's secrets, read back from Coolify; without a service, the copy the service kept
        (after a destroy that kept the data) or, with `create`, new ones."""
        refs = observed.handle if isinstance(observed.handle, Refs) else None
        existing: dict[str, Secret] = dict(stored)
        if observed.exists and refs is not None and refs.service_uuid:
            existing = self._read_secrets(refs.service_uuid)
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

    def _read_secrets(self, service_uuid: str) -> dict[str, Secret]:
        envs = self.client.request_list("GET", f"/services/{service_uuid}/envs", keys=("key",))
        found: dict[str, Secret] = {}
        for item in envs:
            key = item.get("key")
            if key not in GENERATED_SECRETS:
                continue
            if item.get("is_shown_once") and not (item.get("value") or item.get("real_value")):
                # hidden from every token, read:sensitive and root too (ServicesController.php:74-76): no ability
                # helps, only un-marking it (PATCH .../envs takes is_shown_once, ServicesController.php:1469-1500)
                raise StateError(
                    f"the value of {key} of Coolify service {service_uuid} could not be read back because it is "
                    f"marked 'shown once': Coolify hides such a value from every API token, read:sensitive and root "
                    f"included, so no token ability helps, and provision will not give an existing database a new "
                    f"password. Set it again without "
                    f"'shown once', holding the value the stack was made with: PATCH "
                    f"/api/v1/services/{service_uuid}/envs with {{\"key\": \"{key}\", \"value\": \"<it>\", "
                    f"\"is_shown_once\": false}}, or delete and re-add it in Coolify's UI without 'shown once'; "
                    f"then run provision again")
            if "value" not in item and "real_value" not in item:
                raise CoolifyAuthError(
                    "GET", f"{self.client.http.base_url}services/{service_uuid}/envs", 200,
                    f"the value of {key} is hidden from this token",
                    hint="the token needs the read:sensitive ability (or root) so that the existing database "
                         "password can be read back; provision will not generate a new one for an existing database",
                )
            value = item.get("value") or item.get("real_value")
            if value:
                found[key] = Secret(str(value))
        return found

    # --- apply ------------------------------------------------------------------------------
    def preflight(self, target: Target, stack: RenderedStack) -> None:
        """Nothing: the Coolify server pulls the images and sizes the containers, and its API says nothing of
        either beforehand."""

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
                refs = self._create(target, known, stack, placing)
            self._set_secrets(refs, prepared)
            self._action(refs, "start")
            return refs
        refs = known if known.service_uuid else self._locate(target, known)[0]
        if refs.service_uuid is None:
            raise ProvisionError(f"{target.project!r} has no Coolify service in env {target.env!r} to {plan.action}")
        if plan.action in (Action.UPDATE, Action.DRIFT):
            body: dict[str, Any] = {"docker_compose_raw": _b64(stack.text),
                                    "description": _description(
                                        stack, self.owner, memory=target.spec.memory_limit,
                                        placed=observed.server or self._server_holding(refs.service_uuid))}
            urls = self._urls(target)
            if urls:
                body["urls"] = urls
            self.client.request("PATCH", f"/services/{refs.service_uuid}", body=body)
            self._set_secrets(refs, prepared)
            self._action(refs, "restart" if observed.any_running else "start", was_up=observed.ready,
                         running=_running(observed), restart_if_running=True)
        else:
            self._action(refs, "start")
        return refs

    def _create(self, target: Target, known: Refs, stack: RenderedStack,
                placing: contextlib.ExitStack | None = None) -> Refs:
        # observe() just looked both up by name (under this project's lock): create what it did not find
        project_uuid = known.project_uuid or self._ensure_project(target, look_first=False)
        environment_uuid = known.environment_uuid or self._ensure_environment(
            project_uuid, target.env, look_first=target.env == "production")  # Coolify makes 'production' itself
        placed: str | None = None
        if self.config.coolify.servers is not None:
            server, placed = self._placed_server(target, placing, known)
        else:
            server = {"uuid": known.new_server, "name": known.new_server} if known.new_server else self._choose_server()
            if not self.config.coolify.server and not known.new_server:
                self._remember_server(known.lock_project, str(server["uuid"]))
        body: dict[str, Any] = {
            "name": self.service_name(target),
            "description": _description(stack, self.owner, memory=target.spec.memory_limit, placed=placed),
            "project_uuid": project_uuid,
            "environment_uuid": environment_uuid,
            "server_uuid": server["uuid"],
            "docker_compose_raw": _b64(stack.text),
            "instant_deploy": False,
            "tags": ["provision", f"provision-{target.env}"],
        }
        destination = self._destination(server)
        if destination:
            body["destination_uuid"] = destination
        urls = self._urls(target)
        if urls:
            body["urls"] = urls
        for _ in range(3):
            try:
                created = self.client.request_object("POST", "/services", body=body, keys=("uuid",))
                domains = [d for d in created.get("domains") or [] if isinstance(d, str)]
                # only the api has a URL in the stack: Coolify's one domain is the api's
                return Refs(project_uuid, environment_uuid, str(created["uuid"]),
                            domains[0] if len(domains) == 1 else None, lock_project=known.lock_project, server=placed,
                            server_uuid=str(server["uuid"]))
            except AmbiguousResult as exc:
                # the create may have happened, or may still happen: it is looked for, never sent twice blindly
                def service() -> str | None:
                    environment = self._find_environment(project_uuid, environment_uuid)
                    found = self._service_in(environment, target) if environment else None  # by name, ours only
                    return str(found["uuid"]) if found is not None else None

                uuid = self._made_anyway(exc, service, f"service {target.project!r}")
                if uuid is not None:
                    return Refs(project_uuid, environment_uuid, uuid, lock_project=known.lock_project, server=placed,
                                server_uuid=str(server["uuid"]))
            except CoolifyAPIError as exc:
                if exc.status == 400 and "multiple destinations" in exc.message:
                    raise self._destination_error(server) from exc
                if exc.status == 404 and "Server not found" in exc.message and known.new_server:
                    # the remembered server is gone: choose again, remember that one, and retry
                    server = self._choose_server()
                    self._remember_server(known.lock_project, str(server["uuid"]))
                    known = replace(known, new_server=None)
                    body["server_uuid"] = server["uuid"]
                    continue
                if exc.status == 404 and "Server not found" in exc.message:
                    servers = self.client.request_list("GET", "/servers")
                    raise ConfigError(f"{self.config.relpath}: coolify.server: no server {server['uuid']!r} in "
                                      f"Coolify; candidates: {_describe_servers(servers)}") from exc
                raise
        raise BackendUnavailable(f"could not create the Coolify service for {target.project!r}: Coolify kept failing; retry later")

    def _ensure_project(self, target: Target, *, look_first: bool = True) -> str:
        """The uuid of the project, created when missing; after a lost response it looks before creating again."""
        name = self.coolify_project_name(target.project)
        for attempt in range(3):
            project = self._find_project(target) if look_first or attempt else None
            if project is not None:
                return str(project["uuid"])
            try:
                created = self.client.request_object(
                    "POST", "/projects", body={"name": name, "description": marks.project_description(self.owner)},
                    keys=("uuid",))
                return str(created["uuid"])
            except AmbiguousResult as exc:
                def project_uuid() -> str | None:
                    found = self._find_project(target)
                    return str(found["uuid"]) if found is not None else None

                uuid = self._made_anyway(exc, project_uuid, f"project {name!r}")
                if uuid is not None:
                    return uuid
        raise BackendUnavailable(f"could not create the Coolify project {name!r}: Coolify kept failing; retry later")

    def _ensure_environment(self, project_uuid: str, env: str, *, look_first: bool = True) -> str:
        for attempt in range(3):
            found = self._find_environment(project_uuid, env) if look_first or attempt else None
            if found is not None:
                return str(found["uuid"])
            try:
                created = self.client.request(
                    "POST", f"/projects/{project_uuid}/environments", body={"name": env}, ok=(201, 409))
                if isinstance(created, dict) and isinstance(created.get("uuid"), str):
                    return str(created["uuid"])
                # 409: it exists (created concurrently): look it up on the next pass
            except AmbiguousResult:
                def environment() -> str | None:
                    found = self._find_environment(project_uuid, env)
                    return str(found["uuid"]) if found is not None else None

                uuid = self._look_for(environment, f"environment {env!r}")
                if uuid is not None:
                    return uuid
        raise BackendUnavailable(f"could not create the Coolify environment {env!r}: Coolify kept failing; retry later")

    # --- placement across coolify.servers ---------------------------------------------------------
    def server_loads(self) -> list[ServerLoad]:
        """What each server listed in coolify.servers holds now: its stacks (Coolify's own list of the server's
        resources) and their memory limits (the `mem=` of provision's service descriptions). One GET /servers,
        one GET /services, and one GET /servers/{uuid}/resources per usable listed server."""
        listed = self.config.coolify.servers or []
        servers = self.client.request_list("GET", "/servers")
        memory = {str(s.get("uuid")): marks.parse(str(s.get("description") or "")).memory
                  for s in self.client.request_list("GET", "/services")}
        loads = []
        for wanted in listed:
            server = _named(servers, wanted.name)
            if server is None:
                raise ConfigError(f"{self.config.relpath}: coolify.servers: no server {wanted.name!r} in Coolify; "
                                  f"candidates: {_describe_servers(servers)}")
            load = ServerLoad(wanted.name, wanted.max_stacks, wanted.memory, uuid=str(server["uuid"]))
            if _settings(server).get("is_build_server"):
                loads.append(replace(load, unusable="a build server (it cannot run stacks)"))
                continue
            if not server.get("is_reachable") or not server.get("is_usable"):
                why = "unreachable" if not server.get("is_reachable") else "not usable (Coolify has not validated it)"
                loads.append(replace(load, unusable=f"{why} (Coolify's last check)"))
                continue
            try:
                resources = self.client.request_list("GET", f"/servers/{server['uuid']}/resources")
            except BackendUnavailable as exc:
                loads.append(replace(load, unusable=f"its resources could not be listed: {exc}"))
                continue
            # every resource on the server counts against max_stacks: Coolify lists its applications,
            # standalone databases and services there (app/Models/Server.php:1001-1008, definedResources), each
            # with its `type` (`service`, `application`, `standalone-postgresql`...); memory counts provision's
            # services only (their `mem=`)
            held = {str(r.get("uuid")): str(r.get("type") or "") for r in resources}
            stacks = [u for u, kind in held.items() if kind == "service"]
            loads.append(replace(load, stacks=len(held), memory_used=sum(memory.get(u, 0) for u in stacks)))
        return loads

    def servers(self, config: EnvConfig) -> tuple[str, ...]:
        """The listed servers new stacks are spread over (coolify.servers); none without that list."""
        return tuple(s.name for s in config.coolify.servers or [])

    def place(self, config: EnvConfig, projects: Sequence[ProjectSpec]) -> dict[str, str]:
        """Where each of these new projects would go: {project: listed server name}; {} without coolify.servers.
        ServersFull when one of them fits on no server."""
        if self.config.coolify.servers is None or not projects:
            return {}
        return place(self.server_loads(), [(p.name, p.memory_limit) for p in projects])

    def _placed_server(self, target: Target, placing: contextlib.ExitStack | None = None,
                       known: Refs | None = None) -> tuple[dict[str, Any], str]:
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
                uuid = self._listed_server(name).get("uuid")
                if uuid:
                    project = self._held_locks().get(self._lock_key(target))
                    held.enter_context(self._hold(
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
                return {"uuid": load.uuid, "name": load.name}, load.name
            held.close()
            if placing is None or load.unusable:
                raise ServersFull(f"{load.name} cannot take {target.project!r}: {refusal}. Nothing was created")
            refused[load.name] = refusal  # another run took its last place meanwhile: the next best one
            name = None
        raise ServersFull(f"no server can take {target.project!r}: "
                          f"{'; '.join(f'{k}: {v}' for k, v in refused.items())}. Nothing was created")

    def _server_holding(self, service_uuid: str | None) -> str | None:
        """With coolify.servers, the listed server a service without a `placed=` mark runs on (one made before the
        env listed servers), from the listed servers' resources, read once per instance (such a service does
        not move: a move marks the new one); None otherwise."""
        if self.config.coolify.servers is None or service_uuid is None:
            return None
        with self._lock:
            if self._holders is None:
                self._holders = {}
                for listed in self.config.coolify.servers:
                    uuid = (_named(self._servers_listing(), listed.name) or {}).get("uuid")
                    for resource in self.client.request_list("GET", f"/servers/{uuid}/resources") if uuid else []:
                        self._holders.setdefault(str(resource.get("uuid")), listed.name)
            return self._holders.get(service_uuid)

    def _servers_listing(self) -> list[dict[str, Any]]:
        """GET /servers, once per instance (addresses and names: configuration); the caller holds `_lock`."""
        if self._servers is None:
            self._servers = self.client.request_list("GET", "/servers")
        return self._servers

    def _listed_server(self, name: str | None) -> dict[str, Any]:
        """The Coolify server of a name listed in coolify.servers (GET /servers once per instance: configuration)."""
        with self._lock:
            return _named(self._servers_listing(), name) or {}

    def _choose_server(self) -> dict[str, Any]:
        with self._lock:
            if self._server is not None:
                return self._server
            wanted = self.config.coolify.server
            if wanted and _UUID.match(wanted):
                self._server = {"uuid": wanted, "name": wanted}  # checked by POST /services (404 if unknown)
                return self._server
            servers = self._servers_listing()
            if wanted:
                found = _named(servers, wanted)
                if found is None:
                    raise ConfigError(
                        f"{self.config.relpath}: coolify.server: no server {wanted!r} in Coolify; "
                        f"candidates: {_describe_servers(servers)}"
                    )
                server = found
            else:
                usable = [s for s in servers if s.get("is_usable") and s.get("is_reachable")
                          and not _settings(s).get("is_build_server")]
                if len(usable) != 1:
                    raise ConfigError(
                        f"{self.config.relpath}: coolify.server is not set and Coolify has {len(usable)} usable "
                        f"servers: set coolify.server to one of {_describe_servers(usable or servers)}"
                    )
                server = usable[0]
            self._server = dict(server)
            return self._server

    def _destination(self, server: Mapping[str, Any]) -> str | None:
        wanted = self.config.coolify.destination
        if not wanted:
            return None
        destinations = self.client.request_list("GET", f"/servers/{server['uuid']}/destinations")
        for destination in destinations:
            if wanted in (destination.get("uuid"), destination.get("name"), destination.get("network")):
                return str(destination["uuid"])
        raise ConfigError(
            f"{self.config.relpath}: coolify.destination: no destination {wanted!r} on server "
            f"{server.get('name')!r}; candidates: {_describe_destinations(destinations)}"
        )

    def _destination_error(self, server: Mapping[str, Any]) -> ConfigError:
        destinations = self.client.request_list("GET", f"/servers/{server['uuid']}/destinations")
        return ConfigError(
            f"{self.config.relpath}: coolify.destination: server {server.get('name')!r} has several destinations; "
            f"set coolify.destination to one of {_describe_destinations(destinations)}"
        )

    def _urls(self, target: Target) -> list[dict[str, str]]:
        base = self._api_base(target)
        return [{"name": "api", "url": f"{base}:{API_PORT}"}] if base else []

    def _api_base(self, target: Target) -> str | None:
        domain = self.config.coolify.domain
        if not domain:
            return None
        scheme, _, host = domain.rpartition("://")
        return f"{scheme or 'https'}://{target.project}-{target.env}.{host}"

    # --- commands in the db container: one-off scheduled tasks ----------------------------------------
    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        """`sql` through psql in the service's db container, as one-off scheduled tasks (POST .../scheduled-tasks,
        POST .../execute, poll .../executions, DELETE: app/Http/Controllers/Api/ScheduledTasksController.php,
        app/Jobs/ScheduledTaskJob.php), each command at most TASK_COMMAND_MAX characters whatever the SQL
        (sql_task_commands); psql connects over the container's local socket as `user` (default POSTGRES_USER).
        The task is named `provision-<project>-<env>-<purpose>` (what Coolify's TaskFailed notification shows).
        Any read token can see a task's command and output, so callers put no plaintext secret in `sql`."""
        refs = observed.handle if isinstance(observed.handle, Refs) else None
        if refs is None or refs.service_uuid is None or not observed.exists:
            raise ProvisionError(f"{target.project!r} has no Coolify service in env {target.env!r}")
        name = f"provision-{target.project}-{target.env}-{purpose}"[:TASK_NAME_MAX]
        output = None
        if purpose == "roles" and user is not None:
            # the container's PROVISION_ROLES runs only when it is this very script (a container started before
            # the secrets last changed holds an older one): else the script is sent in pieces
            try:
                output = self._run_task(refs.service_uuid, "db", [roles_env_command(roles_env_payload(sql, user))],
                                        timeout=timeout, name=name)
            except ProvisionError as exc:
                if _STALE_ENV not in str(exc) or isinstance(exc, HealthTimeout):
                    raise
        if output is None:
            commands = sql_task_commands(sql, user, secrets.token_hex(5))
            output = self._run_task(refs.service_uuid, "db", commands, timeout=timeout, name=name)
        return "\n".join(line for line in output.splitlines() if not line.startswith("PROVISION_RC="))

    def _run_task(self, uuid: str, container: str, commands: Sequence[str], *, timeout: float, name: str) -> str:
        """Run `commands` one after the other as one disabled task (never due: it runs only through /execute):
        created with the first, PATCHed to each next one once the previous run finished (ScheduledTaskJob loads
        the task when it runs, so a command is never changed under a queued run), then deleted. Returns the
        last run's output; a failed run raises ProvisionError quoting it, after a best-effort task removes what
        earlier commands wrote (sql_task_commands' directory). A command longer than TASK_COMMAND_MAX is refused
        before any request."""
        for command in commands:
            if len(command) > TASK_COMMAND_MAX:
                raise ProvisionError(
                    f"a scheduled task command of {len(command)} characters is longer than the {TASK_COMMAND_MAX} "
                    f"Coolify stores (scheduled_tasks.command is varchar({TASK_COMMAND_MAX}): "
                    f"database/migrations/2023_12_31_173041_create_scheduled_tasks_table.php:19); nothing was sent")
        if not commands:
            raise ProvisionError("no command to run as a scheduled task")
        self._check_version()
        body = {"name": name, "command": commands[0], "frequency": TASK_FREQUENCY, "container": container,
                "timeout": max(1, int(timeout)), "enabled": False}
        task = self.client.request_object("POST", f"/services/{uuid}/scheduled-tasks", body=body, keys=("uuid",))
        path = f"/services/{uuid}/scheduled-tasks/{task['uuid']}"
        seen: set[str] = set()  # runs already read: the next run is the one with an unseen uuid
        directory = _task_directory(commands[0])
        done = 0
        try:
            message = ""
            for command in commands:
                if done:
                    self.client.request("PATCH", path, body={"command": command})
                try:
                    message = self._execute(path, container, timeout, seen)
                except ProvisionError as exc:
                    if done and directory and directory in str(exc) and not isinstance(exc, HealthTimeout):
                        # a later command found no directory (or no chunks) where the first made it: the
                        # container was replaced meanwhile (a restart); nothing ran, all can be sent again
                        raise ProvisionError(f"the {container} container was replaced while the task's commands "
                                             f"ran ({directory} is gone): {exc}") from exc
                    raise
                done += 1
            return message
        except ProvisionError as exc:
            if directory and 0 < done < len(commands) and not isinstance(exc, (HealthTimeout, Interrupted)):
                with contextlib.suppress(ProvisionError):  # best effort: the container's /tmp goes with it anyway
                    self.client.request("PATCH", path, body={"command": f"rm -rf {directory}"})
                    self._execute(path, container, min(timeout, 30.0), seen)
            raise
        finally:
            with contextlib.suppress(ProvisionError):
                self.client.request("DELETE", path)

    def _execute(self, path: str, container: str, timeout: float, seen: set[str]) -> str:
        """POST .../execute, then wait for the run it queued (a run whose uuid is not in `seen`, which it joins)
        to finish; its output, or ProvisionError quoting it. Runs are told apart by uuid, not position: the list
        is ordered by created_at, which has one-second resolution (ScheduledTask.php:73-76)."""
        self.client.request("POST", f"{path}/execute")
        self.client.sleep(TASK_FIRST_POLL)  # no worker runs it sooner: a poll at once would be wasted
        finished: list[dict[str, Any]] = []

        def ran() -> str | None:
            runs = [r for r in self.client.request_list("GET", f"{path}/executions") if str(r["uuid"]) not in seen]
            over = [r for r in runs if str(r.get("status")) != "running"]
            if over:
                finished.append(over[0])
                return None
            return f"run {runs[0].get('status')}" if runs else "not picked up by a worker yet"

        outcome = wait_for({"task": ran}, timeout=timeout + TASK_QUEUE_SLACK, interval=0.5, max_interval=3.0)
        if not outcome.ok:
            raise HealthTimeout(f"Coolify did not run the task in the {container} container within "
                                f"{timeout + TASK_QUEUE_SLACK:.0f} s ({outcome.failures['task']})")
        run = finished[0]
        seen.add(str(run["uuid"]))
        message = str(run.get("message") or "")
        if run.get("status") != "success" or "PROVISION_WRONG_CONTAINER" in message:
            raise ProvisionError(f"the task in the {container} container failed on Coolify: {message.strip()[-800:]}")
        return message

    def _check_version(self) -> None:
        """Refuse a Coolify older than MIN_COOLIFY_VERSION with one line naming both versions. GET /version
        (routes/api.php:66, api.ability:read; OtherController::version answers the bare version as text) is sent
        once per instance, before its first change (`lock`) or task: a no-op run sends none. A version that does
        not parse is let through (a format to come)."""
        with self._version_lock:
            if self._version is None:
                self._version = str(self.client.request("GET", "/version", text=True) or "").strip()
            found = self._version
        wanted = ".".join(map(str, MIN_COOLIFY_VERSION))
        parsed = _parse_version(found)
        if parsed is not None and parsed < MIN_COOLIFY_VERSION:
            where = str(self.client.http.base_url).rstrip("/")
            raise NotSupported(
                f"Coolify at {where} is version {found.split()[0]}; provision needs {wanted} or newer (project "
                f"shared variables and running a scheduled task on demand): upgrade Coolify")

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
        self._set_secrets(refs, Prepared(secrets=dict(secrets)))

    def _set_secrets(self, refs: Refs, prepared: Prepared) -> None:
        data = [
            {"key": key, "value": value.reveal(), "is_literal": True}
            for key, value in sorted(prepared.secrets.items())
        ]
        if prepared.roles_sql is not None:
            data.append({"key": ROLES_ENV, "value": roles_env_payload(prepared.roles_sql.reveal(), roles.ADMIN),
                         "is_literal": True})
        self.client.request("PATCH", f"/services/{refs.service_uuid}/envs/bulk", body={"data": data})

    def _action(self, refs: Refs, verb: str, *, was_up: bool = False, running: Collection[str] | None = None,
                restart_if_running: bool = False) -> bool:
        """POST start/stop/restart; Coolify's 'already running/stopped' counts as done (returns False).
        `was_up`: the service read up before the POST; `running`: its containers that read running then.

        A restart returns only once Coolify shows it under way: it only queues a job, and until the job
        runs (and while it stops the old containers first) the service keeps reading running:healthy,
        with the old containers still answering (app/Actions/Service/StartService.php, API-NOTES §17).

        A start or restart whose answer is lost (a timeout, a 5xx) is not sent again blindly: its job may be
        queued, and a second one would restart the stack after its success was reported. Coolify is watched for
        the job for a grace period, and the POST is sent again only when nothing shows. With `restart_if_running`,
        a start refused because the service reads running (`POST start` answers 400 when the status contains
        `running`, ServicesController.php:2092-2093; a refresh may have stored it so since the caller looked)
        becomes a restart: what was just PATCHed (a rollback, a put-back) must be what runs afterwards.
        """
        uuid = str(refs.service_uuid)
        path = f"/services/{uuid}/{verb}"
        if verb == "stop":  # a second stop job is harmless: retried like any idempotent call
            try:
                self.client.request("POST", path, idempotent=True)
            except CoolifyAPIError as exc:
                if exc.status == 400 and ("already running" in exc.message or "already stopped" in exc.message):
                    return False
                raise
            return True
        begun = False
        for attempt in range(3):
            try:
                self.client.request("POST", path, idempotent=False)
                break
            except AmbiguousResult:
                if verb == "restart" and (was_up or running is None or running):
                    begun = self._await_begun(uuid, was_up=was_up, running=running, timeout=self.create_grace,
                                              quiet=True)
                    if begun:
                        break
                elif self._started(uuid, timeout=self.create_grace):
                    begun = True  # nothing ran before: what runs from now on is the job's
                    break
            except CoolifyAPIError as exc:
                if exc.status == 400 and "already running" in exc.message:
                    if attempt:
                        break  # an earlier POST whose answer was lost started it after all
                    return self._restart_running(refs) if restart_if_running else False
                raise
        else:
            raise BackendUnavailable(f"Coolify did not take the {verb} of service {uuid}: three answers were lost "
                                     f"and the service never showed the job; retry later")
        if verb == "restart" and not begun:
            self._await_begun(uuid, was_up=was_up, running=running, timeout=self.config.health.timeout)
        elif verb == "start":
            interrupts.sleep(START_GRACE)  # a queued job: nothing can have moved yet, so the wait's polls start later
        return True

    def _restart_running(self, refs: Refs) -> bool:
        """A start Coolify refused as 'already running': restart what runs (restart has no such check,
        ServicesController.php:2286-2287), with what reads running now as the evidence to watch."""
        service = self._get_service(str(refs.service_uuid)) or {}
        running = [str(app["name"]) for app in _apps(service) if _app_state(app).running]
        return self._action(refs, "restart", was_up=bool(service) and _is_up(service), running=running)

    def _started(self, uuid: str, *, timeout: float) -> bool:
        """Whether Coolify shows, within `timeout`, a start under way or done: its activity (starting:…) or a
        running container. A start is sent only to a service that reads not running, and a queued job keeps the
        old status (API-NOTES §17), so either is the job's."""
        def moved() -> str | None:
            service = self._get_service(uuid)
            if service is None:
                return None  # deleted meanwhile: the wait that follows says so
            status = str(service.get("status") or "")
            if status.startswith("starting") or "running" in status or \
                    any(_app_state(app).running for app in _apps(service)):
                return None
            return f"status still {_describe_status(service)}"

        return wait_for({"start": moved}, timeout=timeout, interval=JOB_POLL[0], max_interval=JOB_POLL[1]).ok

    def _await_begun(self, uuid: str, *, was_up: bool, running: Collection[str] | None = None, timeout: float,
                     quiet: bool = False) -> bool:
        """Poll until Coolify shows the restart under way: evidence that the old containers are gone, so what
        answers afterwards is the new deployment. Evidence is the start activity (the aggregate reads starting:…,
        which only a running start job produces); a container that read running before the POST (`running`) now
        reading not running (StopService stores every container `exited` right after removing them, and that
        stays until the next refresh: app/Actions/Service/StopService.php:49-53, API-NOTES §18); or, for a service
        that read up before the POST, any status that no longer does. A stale not-up status read before the POST
        proves nothing. With nothing running before (`running` empty), nothing old can answer afterwards: no
        evidence is needed, as after a start. Raises HealthTimeout naming the statuses seen, or with `quiet`
        returns False when the restart never showed (True once it did).

        Seen by its activity alone, the containers' stored states may still be the old containers' (no refresh
        ran since they stopped), and would read running:healthy once the activity ends: so it then also waits
        for the next refresh, which moves a container's status or its last_online_at (GetContainersStatus
        stamps every container it finds; app/Actions/Docker/GetContainersStatus.php)."""
        if running is not None and not running and not was_up:
            interrupts.sleep(START_GRACE)
            return True
        before = set(running or ())
        seen: list[str] = []
        baseline: list[tuple[tuple[str, str, str], ...]] = []

        def begun() -> str | None:
            service = self._get_service(uuid)
            if service is None:
                return None  # deleted meanwhile: the wait that follows says so
            status = _describe_status(service)
            if not seen or seen[-1] != status:
                seen.append(status)
            if str(service.get("status") or "").startswith("starting"):
                if all(_app_state(app).ready for app in _apps(service)):
                    baseline.append(_marks(service))  # the old containers' states, maybe: wait for a refresh
                return None
            if any(not _app_state(app).running for app in _apps(service) if app["name"] in before):
                return None  # StopService stored the old containers exited
            if was_up and not _is_up(service):
                return None  # a refresh stored the old containers stopped
            return f"status still {status}"

        def refreshed() -> str | None:
            service = self._get_service(uuid)
            if service is None or _marks(service) != baseline[0]:
                return None
            return "Coolify has not refreshed the containers' states since the old ones stopped"

        started = time.monotonic()
        outcome = wait_for({"restart": begun}, timeout=timeout, interval=JOB_POLL[0], max_interval=JOB_POLL[1])
        if not outcome.ok and quiet:
            return False
        limit = max(timeout, self.config.health.timeout)
        if outcome.ok and baseline:
            outcome = wait_for({"refresh": refreshed}, timeout=max(1.0, limit - (time.monotonic() - started)),
                               interval=REFRESH_POLL[0], max_interval=REFRESH_POLL[1], pace=REFRESH_POLL[2])
        if not outcome.ok and baseline:
            raise HealthTimeout(f"Coolify restarted service {uuid} but has not refreshed its containers' states "
                                f"within {limit:.0f} s (statuses seen: {' -> '.join(seen)}); is its server check "
                                f"or Sentinel running?")
        if not outcome.ok:
            raise HealthTimeout(f"Coolify did not begin restarting service {uuid} within {timeout:.0f} s: its status "
                                f"stayed {' -> '.join(seen) or 'unknown'} (is its queue stuck? see the deployment "
                                f"logs in Coolify)")
        return True

    # --- wait -------------------------------------------------------------------------------
    def wait(self, target: Target, handle: Handle | None, prepared: Prepared, *, timeout: float,
             settled: Observed | None = None) -> Endpoints:
        """Until Coolify reports the stack running and it answers. After an action the old containers are gone
        (a restart was seen under way before this; a start or create had none running), so a running status
        from now on is the new deployment's, once Coolify's periodic refresh reports it; it is awaited, so that
        the next run's observation (and `status`) agrees. Without an action, a stack observed up (`settled`)
        needs only its probes."""
        started = time.monotonic()
        refs = handle if isinstance(handle, Refs) else Refs()
        if refs.service_uuid is None:
            refs, _ = self._locate(target, refs)
        uuid = refs.service_uuid
        if uuid is None:
            raise ProvisionError(f"{target.project!r} has no Coolify service to wait for")
        last: dict[str, Any] = {}

        def running() -> str | None:
            service = self._get_service(str(uuid))
            last.clear()
            last.update(service or {})
            if service is None:
                return "the service does not exist (any more)"
            return None if _is_up(service) else f"status {_describe_status(service)}"

        if settled is None or not settled.ready:
            # only the refresh that reports the new containers moves this (about once a minute): REFRESH_POLL
            outcome = wait_for({"coolify": running}, timeout=timeout, interval=REFRESH_POLL[0],
                               max_interval=REFRESH_POLL[1], pace=REFRESH_POLL[2])
            if not outcome.ok:
                raise self._health_timeout(uuid, last, f"{target.project} ({target.env}) is not running on Coolify "
                                                       f"after {outcome.elapsed:.0f} s: {outcome.failures['coolify']}")
            refs = replace(refs, api_fqdn=_fqdn(last, "api") or refs.api_fqdn)
        endpoints = self.endpoints(target, refs, prepared)
        probes = {}
        if endpoints.api_url:
            probes["api"] = http_probe(endpoints.api_url, timeout=5)
        if endpoints.db_url and endpoints.db_url_scope == "public":
            probes["db"] = postgres_probe(endpoints.db_url.reveal())
        remaining = max(1.0, timeout - (time.monotonic() - started))
        outcome = wait_for(probes, timeout=remaining, interval=0.25, max_interval=1.0)
        if not outcome.ok:
            reasons = "; ".join(f"{k}: {v}" for k, v in sorted(outcome.failures.items()))
            raise self._health_timeout(uuid, last, f"{target.project} ({target.env}) runs on Coolify but is "
                                                   f"not answering: {reasons}")
        return endpoints

    def _health_timeout(self, uuid: str, service: Mapping[str, Any], message: str) -> HealthTimeout:
        """A HealthTimeout with the log tail of the failing containers, or Coolify's reason for refusing it."""
        failing = [a["name"] for a in _apps(service) if not _app_state(a).ready] or [a["name"] for a in _apps(service)]
        try:
            logs = self._logs(uuid, failing, LOG_LINES, refusals=True)
        except ProvisionError as exc:
            logs = f"(could not read logs: {exc})"
        return HealthTimeout(message, logs=logs)

    # --- endpoints --------------------------------------------------------------------------
    def endpoints(self, target: Target, handle: Handle | None, prepared: Prepared) -> Endpoints:
        """From the handle alone when it knows the api's fqdn (or a domain is configured); else one GET."""
        refs = handle if isinstance(handle, Refs) else None
        if refs is None or refs.service_uuid is None:
            return NO_ENDPOINTS
        api_url = self._api_base(target)
        if api_url is None:
            fqdn = refs.api_fqdn
            if fqdn is None:
                service = self._get_service(refs.service_uuid)
                if service is None:
                    return NO_ENDPOINTS
                fqdn = _fqdn(service, "api")
            api_url = _public_url(fqdn)
        variables = target.spec.variables
        password = prepared.secrets.get("DB_PASSWORD")
        user, database = variables["db_user"], variables["db_name"]
        public_port = variables.get("db_public_port")
        if public_port:
            host = self._db_host(refs)
            return Endpoints(api_url, db_url(user, password, host, public_port, database), "public")
        return Endpoints(api_url, db_url(user, password, f"db-{refs.service_uuid}", 5432, database), "internal")

    def _db_host(self, refs: Refs) -> str:
        """The host of a published db: the `ip` of the server the service runs on (only GET /servers and
        /servers/{uuid} show it: app/Http/Controllers/Api/ServersController.php:88-109), or the API's own host for
        the server Coolify runs on (`ip: host.docker.internal`). Never the server new services would go to now."""
        ip = str(self._server_of(refs).get("ip") or "")
        if not ip or ip == "host.docker.internal":
            return urlsplit(str(self.client.http.base_url)).hostname or "localhost"
        return ip

    def _server_of(self, refs: Refs) -> dict[str, Any]:
        """The Coolify server an existing service runs on, whatever the env file names now and whatever servers
        were added since: the one its create or view recorded (`server_uuid`), else its `placed=` mark
        (coolify.servers), else the one its view names (`destination.server`, else `server_id`). One GET /servers
        per instance, and a GET of the service only when the handle knows neither."""
        if refs.server_uuid:
            with self._lock:
                found = _named(self._servers_listing(), refs.server_uuid)
            if found is not None:
                return found
        if refs.server and self.config.coolify.servers is not None:
            found = self._listed_server(refs.server) or None
            if found is not None:
                return found
        service = self._get_service(str(refs.service_uuid)) or {}
        nested = _destination_server(service)
        with self._lock:
            listing = self._servers_listing()
        found = (_named(listing, str(nested["uuid"])) if nested else None) or (
            nested if nested and nested.get("ip") else None) or _server_with_id(listing, service.get("server_id"))
        if found is None:
            raise ProvisionError(
                f"Coolify's answers name no server for service {refs.service_uuid} (no destination.server, and no "
                f"server of its server_id {service.get('server_id')!r} in GET /servers): provision cannot tell the host "
                f"of its published database. Check the service in Coolify's UI; Coolify's servers: "
                f"{_describe_servers(listing)}")
        return found

    # --- lifecycle --------------------------------------------------------------------------
    def control(self, target: Target, observed: Observed, verb: ControlVerb, *,
                prepared: Prepared | None = None) -> bool:
        refs = observed.handle if isinstance(observed.handle, Refs) else Refs()
        if not observed.exists or refs.service_uuid is None:
            raise ProvisionError(
                f"{target.project!r} has no Coolify service in env {target.env!r}: "
                f"run {hints.command('provision', env=target.env, project=target.project)} first"
            )
        changed = self._action(refs, verb, was_up=observed.ready, running=_running(observed))
        if verb == "stop" and changed:
            self._await_status(refs, lambda s: not s.startswith(("running", "starting", "restarting")),
                               "stopped", timeout=self.config.health.timeout)
        return changed

    def _await_status(self, refs: Refs, predicate: Any, wanted: str, *, timeout: float) -> None:
        def check() -> str | None:
            service = self._get_service(str(refs.service_uuid))
            status = str(service.get("status")) if service else "deleted"
            return None if predicate(status) else f"status {status}"

        outcome = wait_for({"status": check}, timeout=timeout, interval=1.0, max_interval=5.0)
        if not outcome.ok:
            raise HealthTimeout(f"the Coolify service did not become {wanted} in {timeout:.0f} s "
                                f"({outcome.failures['status']})")

    def destroy(self, target: Target, observed: Observed, *, delete_data: bool,
                prepared: Prepared | None = None) -> Destroyed:
        refs = observed.handle if isinstance(observed.handle, Refs) else Refs()
        done: list[str] = []
        kept: dict[str, Secret] | None = None
        if refs.service_uuid and observed.exists:
            if not delete_data:
                kept = self._read_secrets(refs.service_uuid) or None
            volumes = "true" if delete_data else "false"
            self.client.request("DELETE", f"/services/{refs.service_uuid}",
                                params={"delete_volumes": volumes})
            self._await_gone(refs.service_uuid)
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

    def _await_gone(self, uuid: str) -> None:
        outcome = wait_for({"gone": lambda: None if self._get_service(uuid) is None else "still present"},
                           timeout=self.config.health.timeout, interval=0.5, max_interval=5.0)
        if not outcome.ok:
            raise HealthTimeout(f"Coolify did not finish deleting service {uuid} in {self.config.health.timeout:.0f} s")

    def _remove_if_empty(self, project_uuid: str, env: str) -> list[str]:
        """Delete the env and then the project when they hold nothing; Coolify refuses otherwise."""
        done: list[str] = []
        try:
            project = self.client.request_object("GET", f"/projects/{project_uuid}")
            if not self._ours(project):
                return done  # made by hand or by another checkout: never deleted here
            environment = self._find_environment(project_uuid, env)
            if environment is not None and not _has_resources(environment):
                self.client.request("DELETE", f"/projects/{project_uuid}/environments/{environment['uuid']}")
                done.append(f"removed the empty Coolify environment {env!r}")
            for other in _objects(project.get("environments")):
                details = self._find_environment(project_uuid, str(other.get("uuid")))
                if details is not None and _has_resources(details):
                    return done
            self.client.request("DELETE", f"/projects/{project_uuid}")
            done.append(f"removed the empty Coolify project {project.get('name')!r}")
        except CoolifyAPIError as exc:
            if exc.status not in (400, 404):
                raise
        return done

    # --- the lock every runner sees: a shared variable of the owner's lock project -----------------------
    # Coolify answers 409 to a second project variable of one key, and the table's unique (key, project_id,
    # team_id) index holds even for two racing creates (the loser gets a 500)
    # (app/Http/Controllers/Api/SharedEnvironmentVariablesController.php, createEnv;
    # database/migrations/2024_01_23_113129_create_shared_environment_variables_table.php). So creating it is an
    # atomic "take the lock if free", and its comment records the holder in that same request.
    def _lock_project(self, *, create: bool) -> str | None:
        """The uuid of this owner's lock project; created when `create`. Two runners may create it at the same
        time (project names are not unique): every runner then uses the oldest."""
        name = self._lock_project_name()

        def oldest() -> str | None:
            found = self._lock_project_in(self.client.request_list("GET", "/projects"))
            return str(found["uuid"]) if found is not None else None

        found = oldest()
        if found is not None or not create:
            return found
        for _ in range(3):
            try:
                self.client.request_object("POST", "/projects",
                                           body={"name": name, "description": self._lock_project_description()},
                                           keys=("uuid",))
            except AmbiguousResult as exc:
                # looked for (by name and this owner's mark) like any create, never sent twice while it may land
                if self._made_anyway(exc, oldest, f"project {name!r}") is None:
                    continue  # Coolify answered and made nothing: a second create is safe
            found = oldest()  # another runner's may be older: every runner uses the oldest
            if found is not None:
                return found
            break
        raise BackendUnavailable(f"could not create the Coolify project {name!r} that holds provision's locks")

    def _lock_project_name(self) -> str:
        return f"provision-locks-{self.owner}"

    def _lock_project_description(self, server_uuid: str | None = None) -> str:
        """The lock project's description: this owner's marker and, once chosen, the server for new services."""
        return marks.lock_project_description(self.owner, server_uuid)

    def _lock_project_in(self, projects: list[dict[str, Any]]) -> dict[str, Any] | None:
        name = self._lock_project_name()
        mine = [p for p in projects if p.get("name") == name and self._ours(p)]
        return min(mine, key=lambda p: (int(p.get("id") or 0), str(p["uuid"]))) if mine else None

    def _remember_server(self, lock_project: str | None, server_uuid: str) -> None:
        """Record on the lock project the server chosen for new services (when coolify.server is unset), so
        that later creates skip GET /servers; a failure to record costs only that request next time."""
        if lock_project is None:
            return
        with contextlib.suppress(ProvisionError):
            self.client.request("PATCH", f"/projects/{lock_project}",
                                body={"description": self._lock_project_description(server_uuid)})

    @staticmethod
    def _lock_key(target: Target) -> str:
        # Coolify keys allow letters, digits, '_' and '.'; names are [a-z0-9-]: '-' -> '_' stays unambiguous
        return f"lock.{target.env}.{target.project}".replace("-", "_")

    def lock(self, target: Target, known: Handle | None, *, timeout: float) -> contextlib.AbstractContextManager[None]:
        """The project's lock every runner sees, held until the block ends (renewed meanwhile: `_hold`);
        re-entrant within one thread, so a data verb's own converge does not wait for its own lock."""
        where = f"project {target.project!r} in env {target.env!r}"
        hint = (f"{hints.command('lock', env=target.env)} shows holders, "
                f"{hints.command('unlock', '--yes', env=target.env, project=target.project)} breaks a stale one")
        return self._hold(self._lock_key(target), known, timeout=timeout, where=where, hint=hint,
                          shown=(target.env, target.project))

    def holds_lock(self, target: Target) -> bool:
        """True while this thread holds the project's lock (and has not lost it)."""
        entry = self._held_locks().get(self._lock_key(target))
        return entry is not None and self._lock_problem(entry) is None

    def _held_locks(self) -> dict[str, _HeldLock]:
        held: dict[str, _HeldLock] | None = getattr(self._locks_held, "locks", None)
        if held is None:
            held = self._locks_held.locks = {}
        return held

    @contextlib.contextmanager
    def _hold(self, key: str, known: Handle | None, *, timeout: float, where: str, hint: str,
              shown: tuple[str, str]) -> Iterator[None]:
        """Hold the shared variable `key` of this owner's lock project for the block: taken (waiting up to
        `timeout` s), renewed every `lock_renew` s by a heartbeat thread, released at the end. Already held by
        this thread: nothing more (the outer block releases it). While held, `_check_locks` stops every change
        once a renewal failed for too long (LockLost); the heartbeat stops before the release."""
        held = self._held_locks()
        if key in held:
            yield
            return
        self._check_version()  # every change takes a lock first: the one place a change asks GET /version
        recorded = known.lock_project if isinstance(known, Refs) and known.lock_project else None
        project_uuid = recorded or str(self._lock_project(create=True))
        try:
            variable, since, expires, take = self._acquire_key(project_uuid, key, timeout, where=where, hint=hint,
                                                               shown=shown)
        except CoolifyNotFound:
            if recorded is None:
                raise
            project_uuid = str(self._lock_project(create=True))  # the recorded one was deleted: find or make it
            variable, since, expires, take = self._acquire_key(project_uuid, key, timeout, where=where, hint=hint,
                                                               shown=shown)
        entry = _HeldLock(key, where, project_uuid, variable, since, expires, timeout, take)
        heartbeat = threading.Thread(target=self._heartbeat, args=(entry,), name=f"lock-heartbeat-{key}", daemon=True)
        held[key] = entry
        heartbeat.start()
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            held.pop(key, None)
            entry.stop.set()
            heartbeat.join(timeout=self.config.coolify.request_timeout + 5)  # no renewal after the release
            try:
                self.client.request("DELETE", f"/projects/{project_uuid}/envs/{variable}", ok=(200, 404),
                                    guarded=False)
            except ProvisionError:
                if not failed:
                    raise  # else the run's own error is the one to show; the lock expires by itself

    def _acquire(self, project_uuid: str, target: Target, timeout: float) -> int:
        """Take the project's lock variable once (no heartbeat: `lock` renews what it holds); its id."""
        where = f"project {target.project!r} in env {target.env!r}"
        return self._acquire_key(project_uuid, self._lock_key(target), timeout, where=where, hint="",
                                 shown=(target.env, target.project))[0]

    def _acquire_key(self, project_uuid: str, key: str, timeout: float, *, where: str, hint: str,
                     shown: tuple[str, str]) -> tuple[int, float, float, str]:
        """Create the lock variable with the holder in its comment (201: ours; 409: held); (its id, since,
        expiry, the acquisition's nonce). While another run holds it, only look (one GET each time, backing off
        to LOCK_POLL[1] s: the request budget is the run's); a stale one (past its recorded expiry) is broken.
        After a lost answer, a variable whose comment is exactly ours (the nonce included) is ours."""
        deadline = time.monotonic() + timeout
        pause = LOCK_POLL[0]
        while True:
            interrupts.check()
            since = time.time()
            expires = since + self.lock_ttl
            take = secrets.token_hex(4)
            holder = _holder_description(since, expires, take)
            try:
                created = self.client.request("POST", f"/projects/{project_uuid}/envs",
                                              body={"key": key, "value": "held", "comment": holder}, ok=(201, 409))
            except AmbiguousResult:
                created = None
            if isinstance(created, dict) and isinstance(created.get("id"), int):
                return int(created["id"]), since, expires, take
            while True:
                held = self._lock_variable(project_uuid, key)
                if held is None:
                    break  # released: take it
                if held.get("comment") == holder:
                    return int(held["id"]), since, expires, take  # our create went through; its answer was lost
                info = _lock_info(held, *shown)
                if info.stale:
                    self.client.request("DELETE", f"/projects/{project_uuid}/envs/{held['id']}", ok=(200, 404))
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeout(
                        f"another run holds the Coolify lock of {where} ({info.holder} since {info.since}; it "
                        f"renews it while it runs, now until {info.expires}); waited {timeout:g} s. Wait for it to "
                        f"finish or raise --lock-timeout" + (f"; {hint}" if hint else "")
                    )
                interrupts.sleep(min(pause, remaining))
                pause = min(pause * 2, LOCK_POLL[1])

    def _heartbeat(self, entry: _HeldLock) -> None:
        """Renew `entry` every `lock_renew` s (PATCH its comment with a new expiry:
        app/Http/Controllers/Api/SharedEnvironmentVariablesController.php:208-256, `comment` alone may change)
        until its holder releases it. A renewal that fails is tried again every `lock_retry` s; once the
        lock is within `lock_margin` s of its recorded expiry, or its variable is gone (broken), it is lost for
        good: `_check_locks` then stops the run's changes."""
        wait = self.lock_renew
        while not entry.stop.wait(wait):
            now = time.time()
            if now >= entry.expires - self.lock_margin:
                entry.lost = (f"it was not renewed in time (the last renewal recorded {utc_now(entry.expires)}): "
                              f"another run may have broken it as stale")
                return
            expires = now + self.lock_ttl
            try:
                self.client.request("PATCH", f"/projects/{entry.project_uuid}/envs/{entry.variable}",
                                    body={"comment": _holder_description(entry.since, expires, entry.take)},
                                    guarded=False,
                                    wait=max(1.0, entry.expires - self.lock_margin - now))
            except CoolifyNotFound:
                entry.lost = f"its variable is gone: it was broken ({hints.command('unlock')}, or as stale by another run)"
                return
            except ProvisionError as exc:
                entry.failures.append(str(exc))
                wait = self.lock_retry
                continue
            entry.expires, wait = expires, self.lock_renew
            entry.failures.clear()

    def _check_locks(self) -> None:
        """LockLost when a lock this thread holds may have expired (a renewal failed for too long, or it was
        broken): nothing more is sent that changes anything, since another run may hold it now."""
        for entry in self._held_locks().values():
            reason = self._lock_problem(entry)
            if reason is not None:
                last = f"; the last renewal failed: {entry.failures[-1]}" if entry.failures else ""
                raise LockLost(f"the Coolify lock of {entry.where} is lost: {reason}{last}. This run sent nothing "
                               f"more that changes anything; the next run converges from what is there")

    def _lock_problem(self, entry: _HeldLock) -> str | None:
        """Why `entry` may be held by another run now (its heartbeat's finding, or its recorded expiry close by
        this machine's clock: a heartbeat late for any reason), or None while it is surely this run's."""
        if entry.lost is not None:
            return entry.lost
        if time.time() >= entry.expires - self.lock_margin:
            return f"it was not renewed in time (it expires at {utc_now(entry.expires)})"
        return None

    def _lock_variables(self, project_uuid: str) -> list[dict[str, Any]]:
        found = self.client.request_list("GET", f"/projects/{project_uuid}/envs", keys=())
        return [v for v in found if isinstance(v.get("id"), int)
                and str(v.get("key") or "").startswith(("lock.", "place."))]

    def _lock_variable(self, project_uuid: str, key: str) -> dict[str, Any] | None:
        return next((v for v in self._lock_variables(project_uuid) if v.get("key") == key), None)

    def locks(self, config: EnvConfig) -> list[LockInfo]:
        self._check_version()  # project shared variables: 4.3.0
        project_uuid = self._lock_project(create=False)
        if project_uuid is None:
            return []
        prefix = f"lock.{config.name}.".replace("-", "_")
        found = []
        for variable in self._lock_variables(project_uuid):
            key = str(variable["key"])
            if key.startswith(prefix):
                name = key.removeprefix(prefix).replace("_", "-")
                found.append(_lock_info(variable, config.name, name))
        return sorted(found, key=lambda info: info.project)

    def unlock(self, target: Target) -> bool:
        self._check_version()
        project_uuid = self._lock_project(create=False)
        held = self._lock_variable(project_uuid, self._lock_key(target)) if project_uuid else None
        if held is None:
            return False
        self.client.request("DELETE", f"/projects/{project_uuid}/envs/{held['id']}", ok=(200, 404))
        return True

    def adopt(self, target: Target) -> Adopted:
        """Take over the same-named service (made before owner ids, by hand or by another checkout): its
        description gets this env's owner id. Returns what was done (nothing when it is ours already)."""
        project = self._find_project(target)
        environment = self._find_environment(str(project["uuid"]), target.env) if project else None
        name = self.service_name(target)
        matches = [s for s in _objects((environment or {}).get("services")) if s.get("name") == name]
        if not matches:
            raise ProvisionError(f"no Coolify service named {name!r} in project "
                                 f"{self.coolify_project_name(target.project)!r}, environment {target.env!r} to adopt")
        if len(matches) > 1:
            self._service_in(environment or {}, target)  # raises: which uuids, and what to do
        service = matches[0]
        done: list[str] = []
        if not self._ours(service):
            # its marks (either form) with this owner id, written in the form Coolify accepts
            description = replace(marks.parse(str(service.get("description") or "")), owner=self.owner).render()
            self.client.request("PATCH", f"/services/{service['uuid']}", body={"description": description})
            done.append(f"adopted Coolify service {service['uuid']}: it now carries owner {self.owner}")
        legacy = str((project or {}).get("description") or "")
        if project is not None and not self._ours(project) and (
                marks.parse(legacy).marked or marks.is_legacy_project(legacy)):
            body = {"description": marks.project_description(self.owner)}
            self.client.request("PATCH", f"/projects/{project['uuid']}", body=body)
            done.append(f"adopted Coolify project {project.get('name')!r}")
        return Adopted(changed=bool(done), messages=tuple(done))

    def logs(self, target: Target, observed: Observed, *, service: str | None, tail: int,
             since: datetime | None = None, follow: bool = False) -> Iterator[str]:
        """Coolify's `GET /services/{uuid}/logs` returns a container's last N lines and nothing newer on its own:
        `since` filters them by their Docker timestamps (`show_timestamps`), and `follow` asks again every
        FOLLOW_INTERVAL seconds, printing only lines newer than the last one printed (a container that writes
        more than FOLLOW_LINES lines between two asks loses the excess)."""
        refs = observed.handle if isinstance(observed.handle, Refs) else None
        if refs is None or refs.service_uuid is None or not observed.exists:
            raise ProvisionError(f"{target.project!r} has no Coolify service in env {target.env!r}")
        names = [service] if service else sorted(observed.services)
        if not follow and since is None:
            yield self._logs(refs.service_uuid, names, tail)
            return
        newest = {name: _docker_stamp(since) if since is not None else "" for name in names}
        lines = tail
        while True:
            for name in names:
                data = self.client.request_object("GET", f"/services/{refs.service_uuid}/logs", params={
                    "sub_service_name": name, "lines": lines, "show_timestamps": "true"})
                for line in str(data.get("logs") or "").splitlines():
                    stamp, _, text = line.partition(" ")
                    if stamp and stamp <= newest[name]:
                        continue
                    newest[name] = stamp
                    yield f"{name} | {text}\n"
            if not follow:
                return
            lines = FOLLOW_LINES
            interrupts.sleep(FOLLOW_INTERVAL)

    def image_major(self, image: str) -> int:
        """Coolify's API cannot run an image; this machine's Docker Engine can, when it has one and the image."""
        docker = shutil.which("docker")
        if docker is None:
            raise NotSupported(f"Coolify's API cannot run {image!r} to ask its PostgreSQL version, and this machine "
                               f"has no docker CLI to ask it here")
        argv = [docker, "run", "--rm", "--network", "none", "--entrypoint", "postgres", image, "--version"]
        try:
            result = SubprocessRunner().run(argv, timeout=120)
        except CommandFailed as exc:  # the runner's timeout
            raise NotSupported(f"`postgres --version` in {image!r} did not answer here in 120 s") from exc
        if result.returncode != 0:
            raise NotSupported(f"cannot run {image!r} on this machine to ask its PostgreSQL version "
                               f"({tail(result.stderr, 2)}): pull it here first")
        return major_of(result.stdout)

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

    def _logs(self, uuid: str, names: list[str], tail: int, *, refusals: bool = False) -> str:
        """Each container's last `tail` lines. With `refusals`, a container whose logs Coolify refuses (400
        "Container is not running.", 404 "Container not found.") gets Coolify's message quoted instead."""
        chunks = []
        for name in names:
            try:
                data = self.client.request_object("GET", f"/services/{uuid}/logs",
                                                  params={"sub_service_name": name, "lines": tail})
            except CoolifyAPIError as exc:
                if not refusals or exc.status not in (400, 404):
                    raise
                chunks.append(f"({name}: no logs, Coolify answered {exc.status} {exc.message!r})")
                continue
            text = str(data.get("logs") or "").rstrip()
            chunks.append("\n".join(f"{name} | {line}" for line in text.splitlines()) or f"({name} printed no logs)")
        return "\n".join(chunks)

    # --- move to another server: the old stack set aside until --finalize --------------------------
    def set_aside(self, target: Target, observed: Observed, label: str) -> tuple[str, dict[str, Secret]]:
        """Stop the project's service and rename it `<project>-moved-<label>` (marked `aside-of=<project>`), so
        that a new service of the project's name can be made elsewhere while this one keeps its volume; returns
        the new name and the service's secrets (the new stack reuses them). Coolify's own
        POST /services/{uuid}/migrate answers 404 outside its dev mode (API-NOTES §4), hence this."""
        refs = observed.handle if isinstance(observed.handle, Refs) else Refs()
        if not observed.exists or refs.service_uuid is None:
            raise ProvisionError(f"{target.project!r} has no Coolify service in env {target.env!r} to move")
        secrets_ = self._read_secrets(refs.service_uuid)
        service = self._get_service(refs.service_uuid) or {}
        name = f"{self.service_name(target)}-moved-{label}"
        # written before the stop: a description that cannot be written stops nothing
        description = replace(marks.parse(str(service.get("description") or "")), aside_of=target.project).render()
        self.control(target, observed, "stop")
        self.client.request("PATCH", f"/services/{refs.service_uuid}", body={"name": name, "description": description})
        return name, secrets_

    def _set_aside(self, target: Target) -> list[dict[str, Any]]:
        """The project's services set aside by a move (in its Coolify project's env), oldest first."""
        project = self._find_project(target)
        environment = self._find_environment(project["uuid"], target.env) if project else None
        return [s for s in _objects((environment or {}).get("services"))
                if marks.parse(str(s.get("description") or "")).aside_of == target.project and self._ours(s)]

    def put_back(self, target: Target, name: str) -> None:
        """Undo set_aside: the service set aside as `name` gets the project's name back and is started."""
        found = [s for s in self._set_aside(target) if s.get("name") == name]
        if not found:
            raise ProvisionError(f"no service {name!r} set aside for {target.project!r} in env {target.env!r}")
        uuid = str(found[0]["uuid"])
        description = replace(marks.parse(str(found[0].get("description") or "")), aside_of=None).render()
        self.client.request("PATCH", f"/services/{uuid}", body={"name": self.service_name(target),
                                                               "description": description})
        # a refresh may store it running before the start (then Coolify refuses it): restarted then
        self._action(Refs(service_uuid=uuid), "start", restart_if_running=True)

    def drop_set_aside(self, target: Target) -> list[str]:
        """Delete every service a move set aside for the project, with its volumes; their names."""
        dropped = []
        for service in self._set_aside(target):
            self.client.request("DELETE", f"/services/{service['uuid']}", params={"delete_volumes": "true"})
            self._await_gone(str(service["uuid"]))
            dropped.append(str(service.get("name")))
        return dropped

    def usage(self, config: EnvConfig, projects: Collection[str] | None) -> dict[str, dict[str, Usage]]:
        """Nothing: Coolify's API v1 (openapi.yaml) has no route for a container's memory or CPU."""
        return {}

    def observe_env(self, config: EnvConfig, known: Mapping[str, Handle], *,
                    full: bool = False) -> dict[str, Observed]:
        prefix = config.coolify.project_prefix
        found: dict[str, Observed] = {}
        for project in self.client.request_list("GET", "/projects"):
            name = str(project.get("name") or "")
            if not name.startswith(prefix):
                continue
            short = name[len(prefix):]
            environment = self._find_environment(str(project["uuid"]), config.name)
            if environment is None:
                continue
            for service in _objects(environment.get("services")):
                if service.get("name") == short and self._ours(service):
                    recorded = known.get(short)
                    fqdn = recorded.api_fqdn if isinstance(recorded, Refs) and \
                        recorded.service_uuid == service["uuid"] else None
                    # a summary has no fqdn: the recorded one spares endpoints a request per project
                    refs = Refs(str(project["uuid"]), str(environment["uuid"]), str(service["uuid"]), fqdn)
                    view = self._get_service(str(service["uuid"])) if full else service
                    found[short] = _observed(view or service, refs)
        return found

    def doctor(self, probe: DoctorProbe) -> list[Check]:
        """`provision doctor`'s checks of this Coolify (doctor.py next to this module)."""
        from .doctor import coolify_checks

        return coolify_checks(self, probe)



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


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# Up to 60 s for the server the container keeps: on a first start the image's entrypoint runs a temporary one on
# the socket only (listen_addresses='') and stops it when initdb is done, cutting off whoever connected to it
_AWAIT_SERVER = "i=0;until pg_isready -q -h 127.0.0.1||[ $i -ge 120 ];do i=$((i+1));sleep 0.5;done\n"


def _psql_script(sql: str, user: str | None, tag: str) -> str:
    """A shell script that waits for the container's lasting server, then runs `sql` with psql as `user` (the
    SQL in a quoted here-document)."""
    delimiter = f"PROVISION_SQL_{tag}"
    while delimiter in sql.splitlines():
        delimiter += "_"
    return f"{_AWAIT_SERVER}{psql_in_container(user)} <<'{delimiter}'\n{sql}\n{delimiter}\n"


def _packed(script: str) -> str:
    return base64.b64encode(gzip.compress(script.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def roles_env_payload(sql: str, user: str) -> str:
    """What PROVISION_ROLES holds: a psql script running `sql` as `user`, gzip-compressed and base64-encoded
    (one line of [A-Za-z0-9+/=]: nothing in it for a .env file or a shell to interpret)."""
    return _packed(_psql_script(sql, user, "ROLES"))


def roles_env_command(payload: str) -> str:
    """One task command (at most TASK_COMMAND_MAX characters) that runs the container's PROVISION_ROLES when
    it is `payload` (its sha256 compared), and otherwise fails at once, naming _STALE_ENV, having run nothing."""
    digest = hashlib.sha256((payload + "\n").encode()).hexdigest()[:32]
    return (f'E=${ROLES_ENV};[ "$(echo "$E"|sha256sum|cut -c1-32)" = {digest} ]||{{ echo {_STALE_ENV};exit 96;}};'
            f'echo "$E"|base64 -d|gunzip|sh;{_RC}')


def sql_task_commands(sql: str, user: str | None, tag: str) -> list[str]:
    """Shell commands, each at most TASK_COMMAND_MAX characters, that run `sql` (any text) with psql as `user` in
    the db container when run in order as scheduled tasks; the last prints psql's output and PROVISION_RC=<exit>.

    SQL that fits runs in one command (`echo <base64>|base64 -d|psql`). Else a psql script (the SQL in a quoted
    here-document) travels gzip-compressed and base64-encoded in chunks as large as fit: the first command (psql
    guard) makes the directory /tmp/provision.<tag> with mode 0700 (mkdir fails if it exists: nothing another
    process prepared is used, and no other user can add to it) and writes chunk 0; each next one writes one chunk
    (and fails in any other container, where the directory does not exist); the last (psql guard) joins them,
    checks them (gunzip verifies CRC and length: with a chunk lost or cut short nothing runs; a chunk written
    twice is the same file), runs the script and removes the directory, whatever psql did. `tag`: hex, unique
    per call."""
    psql = psql_in_container(user)
    single = f"{_PSQL_GUARD}echo {_b64(sql)}|base64 -d|{psql};{_RC}"
    if len(single) <= TASK_COMMAND_MAX:
        return [single]
    payload = _packed(_psql_script(sql, user, tag))
    directory = f"/tmp/provision.{tag}"
    run = (f"D={directory};{_PSQL_GUARD}cat $D/[0-9]*|base64 -d|gunzip>$D/s&&sh $D/s;rc=$?;rm -rf $D;"
           f"echo PROVISION_RC=$rc;exit $rc")
    width = 1
    while True:  # the chunk names' width (equal for all: the glob sorts them) sets the room left for a chunk
        first = f"{_PSQL_GUARD}mkdir -m700 {directory}&&echo >{directory}/{0:0{width}}"
        first_room = (TASK_COMMAND_MAX - len(first)) // 4 * 4  # whole base64 quanta: each line decodes alone
        room = (TASK_COMMAND_MAX - len(f"echo >{directory}/{0:0{width}}")) // 4 * 4
        if first_room < 4:
            raise ProvisionError(f"the scheduled task directory {directory!r} leaves no room for the SQL")
        chunks = [payload[:first_room]] + [payload[i:i + room] for i in range(first_room, len(payload), room)]
        if len(str(len(chunks) - 1)) <= width:
            break
        width += 1
    commands = [f"{_PSQL_GUARD}mkdir -m700 {directory}&&echo {chunks[0]}>{directory}/{0:0{width}}"]
    commands += [f"echo {chunk}>{directory}/{n:0{width}}" for n, chunk in enumerate(chunks[1:], start=1)]
    return [*commands, run]


def _task_directory(first_command: str) -> str | None:
    """The directory the first of sql_task_commands makes (None for a single command)."""
    found = re.search(r"mkdir -m700 (/tmp/provision\.[0-9a-f]+)&&", first_command)
    return found.group(1) if found else None


def _parse_version(text: str) -> tuple[int, int, int] | None:
    """`4.3.11` (also `v4.3.11`, `4.0.0-beta.420.7`, `4.3`) as (4, 3, 11); None when it does not read as one."""
    found = re.match(r"""["']?v?(\d+)\.(\d+)(?:\.(\d+))?""", text.strip())
    return (int(found.group(1)), int(found.group(2)), int(found.group(3) or 0)) if found else None


def _description(stack: RenderedStack, owner: str, *, memory: int = 0, placed: str | None = None) -> str:
    """The service description (marks.service_description) of this stack."""
    return marks.service_description(stack.config_hash, compose_hash(stack.text), owner, memory=memory, placed=placed)


def compose_hash(text: str) -> str:
    """A hash of a compose text's structure, without secrets: equal for Coolify's re-dumped copy."""
    hashes, _ = hash_services(without_hash_labels(parse_compose(text)), None)
    return stack_hash(hashes)


def _apps(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The service's sub-resources (containers) that carry a name; anything else Coolify sent is skipped."""
    items = [*_listed(service.get("applications")), *_listed(service.get("databases"))]
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)]


def _listed(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _app_state(app: Mapping[str, Any]) -> ServiceState:
    state, _, rest = str(app.get("status") or "exited").partition(":")
    return ServiceState(state, rest.split(":")[0])


def _docker_stamp(moment: datetime) -> str:
    """`moment` written as Docker writes log timestamps (RFC 3339, nanoseconds, UTC), so the two compare as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


_HOLDER = re.compile(r"holder=(\S+) pid=(\d+) since=(\S+) expires=(\S+)")


@dataclass
class _HeldLock:
    """A shared lock this process holds: where its variable is, and the expiry last recorded in Coolify (wall
    clock: what every runner compares). `lost` says why it may be held by another run now (the heartbeat's)."""

    key: str
    where: str
    project_uuid: str
    variable: int
    since: float
    expires: float
    timeout: float
    take: str = ""
    lost: str | None = None
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def _epoch(iso: str) -> float | None:
    import datetime

    try:
        return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _holder_description(since: float, expires: float, take: str = "") -> str:
    """A lock variable's comment: who holds it, since when, until when (renewals move `expires`), and `take`: a
    nonce of this acquisition, so that no other taker (another thread of this process in the same second)
    mistakes the comment for its own after a lost answer."""
    who = holder_record()
    return (f"provision lock holder={who['user']}@{who['host']} pid={who['pid']} since={utc_now(since)} "
            f"expires={utc_now(expires)}" + (f" take={take}" if take else ""))


def _lock_info(variable: Mapping[str, Any], env: str, project: str) -> LockInfo:
    """What a lock variable's comment says of its holder; stale past its expiry. A comment in no form
    provision writes (edited by hand) counts from the variable's creation, with the shortest ttl."""
    found = _HOLDER.search(str(variable.get("comment") or ""))
    now = time.time()
    if found is None:
        created = _epoch(str(variable.get("created_at") or "")) or now
        return LockInfo(env, project, "unknown (no holder recorded)", utc_now(created),
                        utc_now(created + MIN_LOCK_TTL), now > created + MIN_LOCK_TTL)
    holder, pid, since, expires = found.groups()
    return LockInfo(env, project, f"{holder} pid {pid}", since, expires, (_epoch(expires) or 0.0) < now)


def _marks(service: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """Each container's stored status and last refresh stamp: they move only when Coolify refreshes them."""
    return tuple(sorted((str(a["name"]), str(a.get("status")), str(a.get("last_online_at"))) for a in _apps(service)))


def _describe_status(service: Mapping[str, Any]) -> str:
    """Coolify's own status strings: the aggregate, then each container's, e.g. 'running:healthy (db: exited)'."""
    parts = [f"{a['name']}: {a.get('status') or 'unknown'}" for a in _apps(service)]
    return str(service.get("status") or "unknown") + (f" ({', '.join(parts)})" if parts else "")


def _running(observed: Observed) -> list[str]:
    """The containers an observation saw running: a restart is under way once one of them no longer does."""
    return [name for name, state in observed.services.items() if state.running]


def _is_up(service: Mapping[str, Any]) -> bool:
    """Coolify's aggregate status says running (healthy, or unknown where a container has no
    healthcheck) and so does every sub-resource; a pending start/restart reads starting:unhealthy."""
    aggregate = _app_state({"status": service.get("status") or "missing"})
    return aggregate.ready and all(_app_state(app).ready for app in _apps(service))


def _observed(service: Mapping[str, Any], refs: Refs) -> Observed:
    found = marks.parse(str(service.get("description") or ""))
    placed = found.placed
    apps = _apps(service)
    if apps:
        services = {str(a["name"]): _app_state(a) for a in apps}
    else:  # summary views carry only the aggregate status
        services = {"stack": _app_state({"status": service.get("status")})}
    raw = service.get("docker_compose_raw")  # present only for tokens with read:sensitive
    return Observed(
        exists=True,
        config_hash=found.config_hash,
        services=services,
        handle=Refs(refs.project_uuid, refs.environment_uuid, str(service.get("uuid")),
                    _fqdn(service, "api") or refs.api_fqdn, server=placed,
                    server_uuid=_server_uuid_of(service) or (
                        refs.server_uuid if refs.service_uuid == service.get("uuid") else None)),
        applied_text=str(raw) if raw else None,
        drift=_drift(service, str(raw) if raw else None),
        server=placed,
    )


def _drift(service: Mapping[str, Any], raw: str | None) -> str | None:
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


def _fqdn(service: Mapping[str, Any], app: str) -> str | None:
    for item in _apps(service):
        if item.get("name") == app and item.get("fqdn"):
            return str(item["fqdn"]).split(",")[0].strip()
    return None


def _public_url(fqdn: str | None) -> str | None:
    """The public URL of an fqdn: scheme://host[/path]; a :port there is the container port."""
    if not fqdn:
        return None
    parts = urlsplit(fqdn if "://" in fqdn else f"http://{fqdn}")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.hostname}{path}"


def _has_resources(environment: Mapping[str, Any]) -> bool:
    kinds = ("applications", "postgresqls", "redis", "mongodbs", "mysqls", "mariadbs", "services",
             "keydbs", "dragonflies", "clickhouses")
    return any(environment.get(kind) for kind in kinds)


def _describe_servers(servers: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s.get('name')} ({s.get('uuid')})" for s in servers) or "none"


def _named(servers: list[dict[str, Any]], wanted: str | None) -> dict[str, Any] | None:
    """The server `wanted` names (its uuid or its name, as the env file may give either), or None."""
    return next((s for s in servers if wanted in (s.get("uuid"), s.get("name"))), None)


def _destination_server(service: Mapping[str, Any]) -> dict[str, Any] | None:
    """The server of a service's view (`destination.server`, with its `ip`): GET /services/{uuid} loads it for a
    token that may read sensitive data (app/Http/Controllers/Api/ServicesController.php:832-837)."""
    destination = service.get("destination")
    server = destination.get("server") if isinstance(destination, dict) else None
    return server if isinstance(server, dict) and isinstance(server.get("uuid"), str) and server["uuid"] else None


def _server_uuid_of(service: Mapping[str, Any]) -> str | None:
    server = _destination_server(service)
    return str(server["uuid"]) if server else None


def _server_with_id(servers: list[dict[str, Any]], server_id: object) -> dict[str, Any] | None:
    """The server of a service's `server_id` (every view has it, app/Models/Service.php:62): GET /servers hides
    servers' `id` (ServersController.php:41-44) but shows it as `settings.server_id`."""
    if not isinstance(server_id, int) or isinstance(server_id, bool):
        return None
    return next((s for s in servers if _settings(s).get("server_id") == server_id), None)


def _describe_destinations(destinations: list[dict[str, Any]]) -> str:
    return ", ".join(f"{d.get('name')} ({d.get('uuid')}, network {d.get('network')})" for d in destinations) or "none"


def _settings(server: Mapping[str, Any]) -> Mapping[str, Any]:
    settings = server.get("settings")
    return settings if isinstance(settings, dict) else {}


def _objects(items: object) -> list[dict[str, Any]]:
    """The objects of a list Coolify nested in an answer, skipping anything that is not one with a uuid."""
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("uuid"), str)]


def _implements_the_protocol(backend: CoolifyBackend) -> Backend:
    """Never called: mypy checks here that CoolifyBackend has every verb of the Backend protocol."""
    return backend
