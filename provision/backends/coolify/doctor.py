"""`provision doctor` on a Coolify env: what the emulator cannot promise about a real Coolify, checked through
the backend's own code paths, so that what is checked is what provision sends.

1. version: GET /version answers (token, API switch, allowed IPs) with 4.3.0 or newer (`_check_version`).
2. abilities: read, write, deploy and read:sensitive, told apart without changing anything (`_abilities`).
3. server(s): each server provision would put a new stack on exists, is reachable and usable in Coolify's own
   last check, has an `ip`, and a destination provision can pick (`_servers`).
4. lock project: a throwaway project `provision-doctor-<hex>` is created as provision creates a project, gets
   the lock project's description (with the server mark), a lock is taken and released in it, and a second
   taker is refused; it is removed at the end. This proves Coolify accepts provision's descriptions.
5. task: in that project a throwaway service (provision's own create, never started) gets provision's own
   one-off task (`run_sql`'s first command), which Coolify must accept; it is deleted without ever running,
   then the service goes (DELETE, volumes too: it never had any).

A scheduled task belongs to an application or a service (routes/api.php:410-422), so check 5 needs a service.
It makes its own in the throwaway project rather than borrow a deployed project's: that would change a user's
stack (a task on it, however briefly), and a first run has none. Nothing of a user's is changed; state is not
written. An interrupted doctor may leave its throwaway project behind: the next one names it.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ...core.config import EnvConfig
from ...core.errors import CoolifyAPIError, CoolifyAuthError, CoolifyNotFound, LockTimeout, ProvisionError
from ...core.model import Destroyed, Handle, Observed, Target
from ...infra import doctor as checks
from ...infra import interrupts
from .client import CoolifyClient
from .context import MIN_COOLIFY_VERSION, Context, parse_version
from .create import Creator
from .finder import Finder
from .lock import Locks, lock_info
from .models import Refs, Server, servers
from .servers import Servers, describe_destinations, describe_servers, named

LOCK_WAIT = 10.0  # seconds to take the throwaway project's lock (nobody else knows it)
PLACEHOLDER = "provision-doctor"  # the {uuid} of GET /servers/{uuid}/validate when no server is known


class _NotRun(Exception):
    """Raised instead of sending POST .../execute: a doctor never runs a task."""


class _Recording(CoolifyClient):
    """The env's client (same connection, token and retries), which keeps every Coolify error it raised (so a
    request the backend sends best-effort still says why it failed), the scheduled tasks sent, and refuses to
    run a task: POST .../scheduled-tasks/{uuid}/execute raises _NotRun and sends nothing."""

    def __init__(self, client: CoolifyClient) -> None:  # a copy of `client`, so no super().__init__
        vars(self).update(vars(client))  # its connection, token, retries and request budget, whatever it holds
        self.guard = None  # the throwaway backend sets its own
        self.log = []
        self.errors: list[CoolifyAPIError] = []
        self.tasks: list[dict[str, Any]] = []  # the bodies of POST .../scheduled-tasks Coolify accepted

    def request(self, method: str, path: str, **options: Any) -> Any:
        relative = path.strip("/")
        if method.upper() == "POST" and "/scheduled-tasks/" in relative and relative.endswith("/execute"):
            raise _NotRun(path)
        try:
            answer = super().request(method, path, **options)
        except CoolifyAPIError as exc:
            self.errors.append(exc)
            raise
        if method.upper() == "POST" and relative.endswith("/scheduled-tasks"):
            self.tasks.append(dict(options.get("body") or {}))
        return answer

    def last_error(self, method: str, fragment: str) -> CoolifyAPIError | None:
        return next((e for e in reversed(self.errors) if e.method == method and fragment in e.url), None)


class Coolify(Protocol):
    """What the checks use of the Coolify backend: its parts, and the verbs a throwaway project goes through."""

    @property
    def client(self) -> CoolifyClient: ...
    @property
    def config(self) -> EnvConfig: ...
    @property
    def ctx(self) -> Context: ...
    @property
    def finder(self) -> Finder: ...
    @property
    def servers(self) -> Servers: ...
    @property
    def locking(self) -> Locks: ...
    @property
    def creator(self) -> Creator: ...

    def variant(self, client: CoolifyClient, *, lock_project: str) -> Coolify: ...
    def lock(self, target: Target, known: Handle | None, *, timeout: float) -> AbstractContextManager[None]: ...
    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str: ...
    def observe(self, target: Target, known: Handle | None) -> Observed: ...
    def destroy(self, target: Target, observed: Observed, *, delete_data: bool) -> Destroyed: ...


@dataclass(frozen=True)
class _Throwaway:
    """The env's backend with the throwaway project as its lock project (so `lock`, `remember_server` and their
    descriptions are provision's own) and a client that never runs a task (`recording`)."""

    backend: Coolify
    recording: _Recording
    name: str

    @classmethod
    def of(cls, backend: Coolify, target: Target) -> _Throwaway:
        recording = _Recording(backend.client)
        name = backend.finder.coolify_project_name(target.project)
        return cls(backend.variant(recording, lock_project=name), recording, name)


def coolify_checks(backend: Coolify, probe: checks.DoctorProbe) -> list[checks.Check]:
    """The five checks, in order; a check that cannot run after an earlier one failed is skipped (not ok)."""
    version = _version(backend)
    if not version.ok:
        why = "not run: the API must answer with Coolify 4.3.0 or newer first (see version)"
        return [version, *(checks.skipped(name, why, applies=True)
                           for name in ("abilities", "server", "lock project", "task"))]
    try:
        listing = servers(backend.client.request_list("GET", "/servers"))
    except ProvisionError as exc:
        why = "not run: Coolify's servers could not be listed (see server)"
        return [version, checks.skipped("abilities", why, applies=True),
                checks.from_error("server", exc, "could not list Coolify's servers"),
                *(checks.skipped(name, why, applies=True) for name in ("lock project", "task"))]
    found_servers, usable = _servers(backend, probe.target, listing)
    abilities, can_write = _abilities(backend, listing, usable[0] if usable else None)
    found = [version, abilities, *found_servers]
    if not can_write:
        why = "not run: it creates a throwaway project, which needs the write ability (see abilities)"
        return [*found, checks.skipped("lock project", why, applies=True), checks.skipped("task", why, applies=True)]
    return [*found, *_throwaway(backend, probe, usable[0] if usable else None)]


# --- 1. version ----------------------------------------------------------------------------------------
def _version(backend: Coolify) -> checks.Check:
    """GET /version (routes/api.php:66, ability read): the answer proves the URL, the token, the API switch and
    the allowed IPs, all at once; the version must be MIN_COOLIFY_VERSION or newer (the backend's own gate)."""
    wanted = ".".join(map(str, MIN_COOLIFY_VERSION))
    where = str(backend.client.http.base_url).rstrip("/")
    try:
        backend.ctx.check_version()
    except CoolifyAPIError as exc:  # its message and hint say what is wrong: token, API switch, IPs, ability
        return checks.from_error("version", exc)
    except ProvisionError as exc:
        text = backend.ctx.known_version()
        if text is None:  # no answer at all (connection, timeout)
            return checks.from_error("version", exc)
        return checks.failed("version", f"Coolify {text} answers at {where}; provision needs {wanted} or newer",
                             f"upgrade Coolify to {wanted} or newer (Settings → Update): provision uses its project "
                             f"shared variables (locks) and runs scheduled tasks on demand, both new in 4.3.0")
    text = backend.ctx.known_version() or ""
    if parse_version(text) is None:  # the gate lets an unknown format through; a doctor says so
        shown = " ".join(text.split())[:60] or "(empty)"
        return checks.failed("version", f"GET /version answered {shown!r}, which is not a Coolify version",
                             "point COOLIFY_API_URL at Coolify's API, e.g. https://coolify.example.com/api/v1 "
                             "(a proxy or login page may be answering instead)")
    return checks.passed("version", f"Coolify {text} answers at {where} ({wanted} or newer)")


# --- 2. abilities --------------------------------------------------------------------------------------
def _abilities(backend: Coolify, listing: list[Server], server: Server | None) -> tuple[checks.Check, bool]:
    """Each ability by a request that changes nothing:

    - read: GET /version and GET /servers answered (api.ability:read, routes/api.php:66, 151).
    - write: GET /servers/{uuid}/validate answers 405 "use POST" once api.ability:write let it through
      (routes/api.php:185, OtherController::post_required), 403 "Missing required permissions: write" otherwise
      (app/Http/Middleware/ApiAbility.php). Proves the ability, not that every create is allowed: check 4 creates.
    - deploy: GET /deploy, the same way (routes/api.php:144). Proves the ability; nothing is started, so it says
      nothing of the server running a stack.
    - read:sensitive: GET /servers shows a server's settings.sentinel_token, hidden by default
      (app/Models/ServerSetting.php:136-137) and shown only when ApiSensitiveData grants can_read_sensitive
      (root or read:sensitive, and a team admin/owner: app/Http/Middleware/ApiSensitiveData.php:12-20;
      ServersController.php:25-37). The same flag shows a service's variable values, which is how provision reads
      back DB_PASSWORD; a variable marked "shown once" stays hidden all the same.

    Returns the check and whether the write ability was seen."""
    have: list[str] = ["read"]
    missing: list[str] = []
    unknown: list[str] = []
    for ability, path in (("write", f"/servers/{(server.uuid if server else None) or PLACEHOLDER}/validate"),
                          ("deploy", "/deploy")):
        answer = _gate(backend, path, ability)
        (have if answer is True else missing if answer is False else unknown).append(
            ability if isinstance(answer, bool) else f"{ability} ({answer})")
    if not listing:
        unknown.append("read:sensitive (Coolify lists no server to tell it by)")
    elif any(s.shows_sensitive for s in listing):
        have.append("read:sensitive")
    else:
        missing.append("read:sensitive")
    can_write = "write" in have
    if not missing and not unknown:
        return checks.passed("abilities", "read, write, deploy and read:sensitive (or root)"), can_write
    needs = {"write": "create and change projects, services, variables and locks",
             "deploy": "start, stop and restart stacks",
             "read:sensitive": "read back a stack's DB_PASSWORD and JWT_SECRET"}
    parts = [f"missing {a}: provision cannot {needs[a]}" for a in missing]
    parts += [f"could not tell {a}" for a in unknown]
    detail = f"has {', '.join(have)}; " + "; ".join(parts)
    fix = ("create a token with root, or read + write + deploy + read:sensitive (Keys & Tokens → API tokens), as "
           "an admin or owner of the team, and set COOLIFY_API_TOKEN")
    return checks.failed("abilities", detail, fix), can_write


def _gate(backend: Coolify, path: str, ability: str) -> bool | str:
    """True when the route's ability check let the GET through (405), False when it refused for `ability`,
    else what Coolify said."""
    try:
        backend.client.request("GET", path, ok=(405,))
        return True
    except CoolifyAuthError as exc:
        if exc.status == 403 and "missing required permissions" in exc.message.lower():
            return False
        return exc.message
    except ProvisionError as exc:
        return str(exc).splitlines()[0]


# --- 3. servers ----------------------------------------------------------------------------------------
def _servers(backend: Coolify, target: Target,
             listing: list[Server]) -> tuple[list[checks.Check], list[Server]]:
    """The servers provision would put a new stack on: coolify.servers, coolify.server, else the one the lock
    project remembers (`server:` mark), else the one usable server (`_choose_server`). Returns a check per
    server and the usable ones. Coolify's own periodic check (over SSH) sets is_reachable and is_usable; doctor
    does not connect to a server itself, so a server that failed since that check is not seen, nor its disk,
    memory or proxy."""
    cfg = backend.config.coolify
    wanted: list[tuple[str, str]]
    if cfg.servers is not None:
        wanted = [(s.name, "coolify.servers") for s in cfg.servers]
    elif cfg.server:
        wanted = [(cfg.server, "coolify.server")]
    else:
        try:
            remembered = backend.finder.locate(target, None)[0].new_server
            chosen = remembered or backend.servers.choose_server().uuid
        except ProvisionError as exc:
            return [checks.from_error("server", exc)], []
        wanted = [(chosen, "remembered in the lock project" if remembered else "the only usable server")]
    results: list[checks.Check] = []
    usable: list[Server] = []
    for name, source in wanted:
        label = f"server {name}" if cfg.servers is not None else "server"
        check, server = _server(backend, label, name, source, listing)
        results.append(check)
        if server is not None:
            usable.append(server)
    return results, usable


def _server(backend: Coolify, label: str, wanted: str, source: str,
            listing: list[Server]) -> tuple[checks.Check, Server | None]:
    found = named(listing, wanted)
    if found is None:
        return checks.failed(label, f"Coolify has no server {wanted!r} ({source})",
                             f"set {source if source.startswith('coolify.') else 'coolify.server'} to one of: "
                             f"{describe_servers(listing)}"), None
    uuid = found.uuid
    try:  # the full view: app/Http/Controllers/Api/ServersController.php:149-183
        server = backend.client.request_object("GET", f"/servers/{uuid}", keys=("uuid",))
    except ProvisionError as exc:
        return checks.from_error(label, exc), None
    settings = server.get("settings")
    settings = settings if isinstance(settings, dict) else {}
    name = f"{server.get('name')} ({uuid})"

    def flag(key: str) -> bool:  # ServerSetting's columns; GET /servers copies them up (ServersController.php:95-96)
        return bool(settings[key] if key in settings else server.get(key))

    problems: list[tuple[str, str]] = []
    if not flag("is_reachable"):
        problems.append(("unreachable in Coolify's last check",
                         "make the server reachable from Coolify over SSH, then validate it in Coolify (Servers → "
                         f"{server.get('name')} → Validate Server)"))
    elif not flag("is_usable"):
        problems.append(("not usable: Coolify has not validated it (Docker, network)",
                         f"validate it in Coolify (Servers → {server.get('name')} → Validate Server)"))
    if settings.get("is_build_server"):
        problems.append(("a build server, which cannot run stacks", "choose another server in the env file"))
    ip = str(server.get("ip") or "")
    if not ip:
        problems.append(("has no ip (the host of a published db)", "set the server's IP address in Coolify"))
    parsed = Server.parse(server) or found
    destination, trouble = _destination(backend, parsed)
    if trouble:
        problems.append(trouble)
    if problems:
        return checks.failed(label, f"{name}: " + "; ".join(p for p, _ in problems),
                             " ".join(dict.fromkeys(f for _, f in problems))), None
    where = f"{ip} (the Coolify host itself)" if ip == "host.docker.internal" else ip
    return checks.passed(label, f"{name}, {source}: reachable and usable, ip {where}, destination "
                                f"{destination}"), parsed


def _destination(backend: Coolify, server: Server) -> tuple[str, tuple[str, str] | None]:
    """The destination a create would use (coolify.destination through the backend's own lookup, else the only
    one), or why there is none: POST /services answers 400 for a server without destinations or with several
    and no destination_uuid (API-NOTES §3)."""
    try:
        listed = backend.servers.destinations(server)
        if backend.config.coolify.destination:
            chosen = backend.servers.destination(server)
            return next((f"{d.name} ({d.network})" for d in listed if d.uuid == chosen),
                        str(chosen)), None
    except ProvisionError as exc:
        first, _, rest = str(exc).partition("\n")
        return "", (first, rest.strip() or "check coolify.destination in the env file")
    if not listed:
        return "", ("has no destination (Docker network), so Coolify refuses services on it",
                    "add a destination to the server in Coolify")
    if len(listed) > 1:
        return "", (f"has {len(listed)} destinations and coolify.destination is not set",
                    f"set coolify.destination to one of {describe_destinations(listed)}")
    return f"{listed[0].name} ({listed[0].network})", None


# --- 4 and 5. the throwaway project, its lock, service and task --------------------------------------------
def _throwaway(backend: Coolify, probe: checks.DoctorProbe,
               server: Server | None) -> list[checks.Check]:
    target = probe.target
    trial = _Throwaway.of(backend, target)
    name = trial.name
    leftovers = _leftovers(trial)
    project_uuid: str | None = None
    lock_check: checks.Check | None = None
    task_check: checks.Check
    refs: Refs | None = None
    try:
        try:  # as provision creates every project (POST /projects with its description)
            project_uuid = trial.backend.finder.ensure_project(target, look_first=False)
        except ProvisionError as exc:
            return [_refused("lock project", exc, f"Coolify refused to create the project {name!r}"),
                    checks.skipped("task", "not run: it needs the throwaway project (see lock project)", applies=True)]
        lock_check = _lock(trial, target, project_uuid, server, leftovers)
        if server is None:
            task_check = checks.skipped("task", "not run: it needs a usable server (see server)", applies=True)
        else:
            task_check, refs = _task(trial, probe, project_uuid, server)
    finally:
        removal = _remove(trial, target, project_uuid, refs)
    if removal is not None and (lock_check is None or lock_check.ok):
        lock_check = removal  # the throwaway was to be created *and* removed
    assert lock_check is not None
    return [lock_check, task_check]


def _leftovers(trial: _Throwaway) -> list[str]:
    """Throwaway projects an interrupted doctor left (this owner's, named provision-doctor-...)."""
    prefix = trial.backend.config.coolify.project_prefix + checks.THROWAWAY_PREFIX
    try:
        projects = trial.backend.finder.projects()
    except ProvisionError:
        return []
    return [f"{p.name} ({p.uuid})" for p in projects
            if (p.name or "").startswith(prefix) and trial.backend.finder.ours(p)]


def _lock(trial: _Throwaway, target: Target, project_uuid: str, server: Server | None,
          leftovers: list[str]) -> checks.Check:
    """The lock project's description (with the server mark, as `_remember_server` writes it) is stored as sent;
    a lock is taken and released through `lock` (a project shared variable whose comment names the holder);
    a second taker is refused (Coolify's 409 on a second variable of one key,
    SharedEnvironmentVariablesController.php:175-179)."""
    name = "lock project"
    server_uuid = server.uuid if server is not None else None
    done = [f"created {trial.name!r} with provision's project description"]
    if server_uuid is not None:
        trial.backend.locking.remember_server(project_uuid, server_uuid)  # best effort in provision: checked here
        sent = trial.backend.locking.lock_project_description(server_uuid)
        try:
            stored = trial.recording.request_object("GET", f"/projects/{project_uuid}").get("description")
        except ProvisionError as exc:
            return checks.from_error(name, exc, "could not read the throwaway project back")
        if stored != sent:
            error = trial.recording.last_error("PATCH", f"/projects/{project_uuid}")
            if error is not None:
                return _refused(name, error, "Coolify refused the lock project's description")
            return checks.failed(name, f"Coolify stored the lock project's description as {stored!r}, not as "
                                       f"sent ({sent!r})",
                                 "report this with your Coolify version: provision finds its projects by their "
                                 "descriptions")
        done.append("gave it the lock project's description")
    try:
        with trial.backend.lock(target, Refs(lock_project=project_uuid), timeout=LOCK_WAIT):
            variable = trial.backend.locking.variable(project_uuid, trial.backend.locking.lock_key(target))
            if variable is None:
                return checks.failed(name, "the lock variable provision created is not listed in the project",
                                     "report this with your Coolify version")
            info = lock_info(variable, target.env, target.project, now=time.time())
            if info.holder.startswith("unknown"):
                return checks.failed(name, f"the lock's comment came back as {variable.comment!r}, without "
                                           f"its holder", "report this with your Coolify version")
            interrupts.sleep(max(0.0, 1.05 - time.time() % 1))  # a second taker's comment differs from ours from now on
            try:
                trial.backend.locking.acquire(project_uuid, target, 0)
            except LockTimeout:
                done.append("took a lock, saw a second taker refused, released it")
            else:
                return checks.failed(name, "Coolify let a second runner take a lock that was held (no 409 for a "
                                           "second shared variable of one key): locks would not exclude runs",
                                     "upgrade Coolify to 4.3.0 or newer")
    except ProvisionError as exc:
        return checks.from_error(name, exc, "the lock could not be taken and released")
    if leftovers:
        done.append(f"earlier doctor runs that were interrupted left {', '.join(leftovers)}: delete them in "
                    f"Coolify's UI")
    return checks.passed(name, "; ".join(done) + " (removed again)")


def _task(trial: _Throwaway, probe: checks.DoctorProbe, project_uuid: str,
          server: Server) -> tuple[checks.Check, Refs | None]:
    """provision's own create of a service (environment, compose, description, server, destination) on a
    throwaway, never started; then `run_sql` of the SQL every change runs, up to the point where it would run
    the task: the task must be accepted (name, command of at most 255 characters, frequency, container, timeout,
    enabled: ScheduledTasksController.php:48-117), then it is deleted by run_sql's own clean-up."""
    name = "task"
    target = probe.target
    try:
        stack = probe.stack()
    except ProvisionError as exc:  # the env's template: every provision would stop here too
        return checks.from_error(name, exc, "the stack could not be rendered"), None
    try:
        refs = trial.backend.creator.create(target, Refs(project_uuid=project_uuid, new_server=server.uuid), stack)
    except ProvisionError as exc:
        return _refused(name, exc, "Coolify refused provision's service (needed for a task)"), None
    sql, user = probe.task_sql()
    observed = Observed(exists=True, handle=refs)
    try:
        trial.backend.run_sql(target, observed, sql, user=user)
    except _NotRun:
        pass
    except ProvisionError as exc:
        return _refused(name, exc, "provision's task was not accepted"), refs
    if not trial.recording.tasks:
        return checks.failed(name, "provision sent no scheduled task", "report this: doctor cannot check tasks"), refs
    sent = trial.recording.tasks[0]
    try:
        left = [t for t in trial.recording.request_list("GET", f"/services/{refs.service_uuid}/scheduled-tasks")
                if t.get("name") == sent.get("name")]
    except ProvisionError as exc:
        return checks.from_error(name, exc, "could not list the throwaway service's tasks"), refs
    if left:
        return checks.failed(name, "provision's task was accepted but not deleted again",
                             "report this with your Coolify version"), refs
    command = str(sent.get("command") or "")
    return checks.passed(name, f"accepted provision's task on a throwaway service (command of {len(command)} "
                               f"characters, frequency {sent.get('frequency')!r}, disabled) and deleted it; it "
                               f"never ran"), refs


def _remove(trial: _Throwaway, target: Target, project_uuid: str | None, refs: Refs | None) -> checks.Check | None:
    """Remove the throwaway service and project through provision's own destroy (service with its volumes, then
    the empty environment and project), else by the project's uuid; a failed check when it stays."""
    if project_uuid is None:
        return None
    handle = refs or Refs(project_uuid=project_uuid)
    try:  # observed again: a create whose answer was lost may have made the service all the same
        observed = trial.backend.observe(target, handle)
    except ProvisionError:
        observed = Observed(exists=refs is not None, handle=handle)
    try:
        trial.backend.destroy(target, observed, delete_data=True)
    except ProvisionError:
        pass  # looked at below
    try:
        trial.recording.request("GET", f"/projects/{project_uuid}")
        trial.recording.request("DELETE", f"/projects/{project_uuid}")  # destroy left it: by its uuid, then
        return None
    except CoolifyNotFound:
        return None  # gone
    except ProvisionError as exc:
        return checks.failed("lock project", f"created {trial.name!r} ({project_uuid}) but could not remove "
                                             f"it: {str(exc).splitlines()[0]}",
                             f"delete the project {trial.name!r} in Coolify's UI")


def _refused(name: str, exc: ProvisionError, what: str) -> checks.Check:
    """A failed check from Coolify's refusal, with the fix for the refusals provision knows."""
    # a create whose answer was a 5xx is an AmbiguousResult caused by Coolify's error: show Coolify's answer
    cause = exc if isinstance(exc, CoolifyAPIError) else exc.__cause__
    if not isinstance(cause, CoolifyAPIError):
        return checks.from_error(name, exc, what)
    check = checks.from_error(name, cause, what)
    if isinstance(cause.errors, dict) and "description" in cause.errors:
        return checks.failed(name, check.detail,
                             "this Coolify refuses provision's description (its rule allows letters, digits, spaces "
                             "and -_.,!?()'\"+=*@/& only: app/Support/ValidationPatterns.php:18, 438-452): use a "
                             "provision version whose descriptions pass it")
    if cause.status == 500 and "/scheduled-tasks" in cause.url:
        return checks.failed(name, check.detail,
                             "Coolify failed storing the task (a command longer than the 255 characters of its "
                             "scheduled_tasks.command column fails so: database/migrations/"
                             "2023_12_31_173041_create_scheduled_tasks_table.php:19); check Coolify's logs "
                             "(Settings → Logs) and report it with your Coolify version")
    return check

