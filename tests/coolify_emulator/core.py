"""The emulated Coolify instance: settings, state, service parsing, status and actions.

HTTP concerns live in :mod:`api` / :mod:`server`; this module is shared by the handlers
and by the test helpers on :class:`~.emulator.CoolifyEmulator`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..timing import SYSTEM, Clock
from . import compose as C
from .state import (
    Destination,
    EnvVar,
    PendingAction,
    Project,
    ScheduledTask,
    Server,
    Service,
    Store,
    SubResource,
    TaskExecution,
    Token,
    new_uuid,
    now_iso,
)

if TYPE_CHECKING:
    from .docker_mode import DockerBackend

ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*$"


@dataclass
class Settings:
    """Instance-wide switches (mutable from tests through the emulator's attributes)."""

    api_enabled: bool = True
    allowed_ips: list[str] = field(default_factory=list)
    rate_limit: int = 200
    rate_limit_window: float = 60.0
    action_delay: float = 0.3
    delete_delay: float | None = None
    # realistic timings (pure mode), after app/Actions/Service/StartService.php, StopService.php and the status
    # refresh of app/Actions/Docker/GetContainersStatus.php (API-NOTES §17):
    stop_seconds: float = 0.0  # restart/stop: removing the old containers (the stored status does not change)
    start_seconds: float = 0.0  # the start activity: the aggregate reads starting:unhealthy while it runs
    refresh_interval: float = 0.0  # stored container states follow the containers only at these ticks (0: at once)
    health_start_seconds: float = 0.0  # a new container's healthcheck reads "starting" this long
    public_ip: str = "127.0.0.1"
    hang_seconds: float = 30.0
    strict_accept: bool = True


def aggregate_status(subs: list[tuple[str, bool]], starting: bool) -> str:
    """Coolify's aggregate ``status`` from (sub-status, excluded) pairs (API-NOTES §7)."""
    if starting:
        return "starting:unhealthy"
    if not subs:
        return "exited"
    considered = [s for s, excluded in subs if not excluded]
    if not considered:
        return "unknown:unknown:excluded"
    states: list[tuple[str, str]] = []
    for status in considered:
        state, _, health = status.partition(":")
        states.append((state, health.split(":")[0] if health else ""))
    names = [s for s, _ in states]
    running = sum(1 for s in names if s in ("running", "healthy"))
    exited = sum(1 for s in names if s in ("exited", "stopped", "dead", "removing"))
    if "restarting" in names or (running and exited):
        return "degraded:unhealthy"
    if all(s == "paused" for s in names):
        return "paused:unknown"
    if any(s in ("starting", "created") for s in names) and not exited:
        return "starting:unknown"  # ContainerStatusAggregator: created counts as starting
    if running == len(names):
        healths = [h for _, h in states]
        if "unhealthy" in healths:
            return "running:unhealthy"
        if "unknown" in healths or "" in healths:
            return "running:unknown"
        return "running:healthy"
    if exited == len(names):
        return "exited"
    return "degraded:unhealthy"


class Core:
    """State plus behaviour of one emulated Coolify."""

    def __init__(self, settings: Settings, docker: DockerBackend | None = None, clock: Clock = SYSTEM) -> None:
        self.settings = settings
        self.clock = clock  # every reading and wait of time: the emulator's timings run on it
        self.store = Store()
        self.docker = docker
        self.version = C.COOLIFY_VERSION
        self._logs: dict[tuple[str, str], list[str]] = {}
        self.volumes: set[str] = set()  # pure mode: named volumes that "exist" on the server
        self.idle = threading.Condition(self.store.lock)
        # pure mode: what a task's command does, (service, container name, command) -> (exit code, output)
        self.task_runner: Callable[[Service, str, str], tuple[int, str]] = lambda svc, name, cmd: (0, "")

    # ------------------------------------------------------------------ seeding
    def add_server(self, name: str, ip: str, *, team_id: int = 0, reachable: bool = True, usable: bool = True,
                   build_server: bool = False, wildcard_domain: str | None = None,
                   destinations: list[str] | int = 1, description: str | None = None) -> Server:
        """Register a server; ``destinations`` is a count or a list of network names."""
        with self.store.lock:
            server = Server(id=self.store.next_id("servers", start=0), uuid=new_uuid(), name=name, ip=ip,
                            team_id=team_id, is_reachable=reachable, is_usable=usable,
                            is_build_server=build_server, wildcard_domain=wildcard_domain,
                            description=description)
            self.store.servers[server.uuid] = server
            networks = destinations if isinstance(destinations, list) else (
                ["coolify"] + [f"coolify-{i}" for i in range(1, destinations)] if destinations else [])
            for net in networks:
                self.add_destination(server, net, net)
            return server

    def add_destination(self, server: Server, name: str, network: str) -> Destination:
        with self.store.lock:
            dest = Destination(id=self.store.next_id("destinations"), uuid=new_uuid(), name=name, network=network,
                               server_id=server.id)
            server.destinations.append(dest)
            return dest

    def create_project(self, name: str, description: str | None, team_id: int) -> Project:
        """Project plus its auto-created ``production`` environment."""
        with self.store.lock:
            project = Project(id=self.store.next_id("projects"), uuid=new_uuid(), name=name, description=description,
                              team_id=team_id)
            self.store.projects[project.uuid] = project
            self.create_environment(project, "production")
            return project

    def create_environment(self, project: Project, name: str, description: str | None = None) -> Any:
        from .state import Environment

        with self.store.lock:
            env = Environment(id=self.store.next_id("environments"), uuid=new_uuid(), name=name,
                              project_id=project.id, description=description)
            self.store.environments[env.uuid] = env
            return env

    def find_environment(self, project: Project, name_or_uuid: str) -> Any:
        """Name first (exact), then uuid (API-NOTES §5)."""
        envs = self.store.environments_of(project)
        return next((e for e in envs if e.name == name_or_uuid), None) or next(
            (e for e in envs if e.uuid == name_or_uuid), None)

    # ------------------------------------------------------------------ tokens
    def add_token(self, token: str, abilities: tuple[str, ...] | list[str], **kwargs: Any) -> Token:
        with self.store.lock:
            tok = Token(token=token, abilities=frozenset(abilities), **kwargs)
            self.store.tokens[token] = tok
            return tok

    # ------------------------------------------------------------------ services
    def server_of(self, svc: Service) -> Server:
        server = self.store.server_by_id(svc.server_id)
        assert server is not None
        return server

    def parse_service(self, svc: Service, parsed: dict[str, Any]) -> None:
        """``$service->parse()``: store the re-dumped compose, sync sub-resources and env vars."""
        st = self.store
        with st.lock:
            svc.parsed = parsed
            svc.docker_compose_raw = C.dump_yaml(parsed)
            svc.updated_at = now_iso(self.clock.time())
            services_cfg: dict[Any, Any] = parsed.get("services") or {}
            keys: list[str] = []
            for raw_key, cfg in services_cfg.items():
                key = str(raw_key)
                keys.append(key)
                image = cfg.get("image") if isinstance(cfg, dict) else None
                kind = "database" if C.is_database_image(image) else "application"
                sub = svc.app(key)
                if sub is not None and sub.kind != kind:
                    svc.apps.remove(sub)
                    sub = None
                if sub is None:
                    sub = SubResource(id=st.next_id(kind), uuid=new_uuid(), name=key, kind=kind,
                                      image=str(image) if image is not None else None, service_id=svc.id)
                    svc.apps.append(sub)
                sub.image = str(image) if image is not None else None
                sub.has_healthcheck = C.has_healthcheck(cfg)
                sub.exclude_from_status = C.excluded_from_status(cfg)
                sub.updated_at = now_iso(self.clock.time())
            svc.apps = [a for a in svc.apps if a.name in keys]
            svc.apps.sort(key=lambda a: keys.index(a.name))
            self._sync_envs(svc, C.referenced_variables(parsed))

    def _sync_envs(self, svc: Service, refs: dict[str, str | None]) -> None:
        server = self.server_of(svc)
        for name, default in refs.items():
            magic = C.parse_magic(name)
            if magic is not None and magic.kind in ("FQDN", "URL"):
                self._magic_url(svc, server, magic)
            elif magic is not None:
                if self.store.env_by_key(svc, name) is None:
                    self.create_env(svc, name, C.generate_magic_value(magic))
            elif self.store.env_by_key(svc, name) is None:
                self.create_env(svc, name, default)

    def _magic_url(self, svc: Service, server: Server, magic: C.MagicVar) -> None:
        sub = next((a for a in svc.applications if C.compose_key_matches(a.name, magic.target)), None)
        prefix = sub.name if sub else magic.target.lower().replace("_", "-")
        url, host = C.generate_url(f"{prefix}-{svc.uuid}", server.ip, server.wildcard_domain,
                                   self.settings.public_ip)
        if sub is not None and sub.fqdn is None:
            sub.fqdn = url + (f":{magic.port}" if magic.port else "")
        if sub is not None and sub.fqdn:
            first = C.split_urls(sub.fqdn)[0]
            url = C.public_url(first)
            host = url.split("://", 1)[1]
        values = {f"SERVICE_URL_{magic.target}": url, f"SERVICE_FQDN_{magic.target}": host}
        values[magic.name] = url if magic.kind == "URL" else host
        for key, value in values.items():
            if self.store.env_by_key(svc, key) is None:
                self.create_env(svc, key, value)

    def refresh_magic_envs(self, svc: Service, sub: SubResource) -> None:
        """After an fqdn change, update SERVICE_URL_/SERVICE_FQDN_ values of that sub-resource."""
        target = sub.name.upper().replace("-", "_")
        urls = C.split_urls(sub.fqdn)
        if not urls:
            return
        url = C.public_url(urls[0])
        host = url.split("://", 1)[1]
        for env in self.store.envs_of(svc):
            magic = C.parse_magic(env.key)
            if magic is None or magic.target != target or magic.kind not in ("FQDN", "URL"):
                continue
            env.value = url if magic.kind == "URL" else host
            env.updated_at = now_iso(self.clock.time())

    def create_env(self, svc: Service, key: str, value: str | None, **flags: Any) -> EnvVar:
        with self.store.lock:
            env = EnvVar(id=self.store.next_id("environment_variables"), uuid=new_uuid(), key=key, value=value,
                         service_id=svc.id, **flags)
            self.store.envs[env.uuid] = env
            return env

    def sub_infos(self, svc: Service) -> dict[str, C.SubInfo]:
        return {a.name: C.SubInfo(a.name, a.kind, a.id, a.fqdn) for a in svc.apps}

    def generated_compose(self, svc: Service, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
        """The compose Coolify would write for this service."""
        with self.store.lock:
            env = self.store.environment_by_id(svc.environment_id)
            project = self.store.project_by_id(env.project_id) if env else None
            return C.generate_compose(
                svc.parsed, service_uuid=svc.uuid, service_id=svc.id, service_name=svc.name,
                project_name=project.name if project else "", environment_name=env.name if env else "",
                subs=self.sub_infos(svc), extra_labels=extra_labels)

    def domains(self, svc: Service) -> list[str]:
        """``domains`` of create/update responses: sorted non-empty fqdn values."""
        return sorted(a.fqdn for a in svc.applications if a.fqdn)

    def domain_conflicts(self, urls: list[str], exclude: set[int]) -> list[dict[str, Any]]:
        """Conflicts of ``urls`` with fqdns of other service sub-applications (instance-wide);
        ``exclude`` holds ``id()`` of sub-resources being reassigned in the same request."""
        wanted = {C.url_host_path(u)[:2]: u for u in urls}
        conflicts: list[dict[str, Any]] = []
        for other in self.store.services.values():
            for sub in other.applications:
                if id(sub) in exclude:
                    continue
                for existing in C.split_urls(sub.fqdn):
                    hp = C.url_host_path(existing)[:2]
                    if hp in wanted:
                        domain = hp[0] + hp[1]
                        conflicts.append({
                            "domain": domain,
                            "resource_name": other.name,
                            "resource_uuid": other.uuid,
                            "resource_type": "service",
                            "message": f"Domain {domain} is already in use by service '{other.name}'",
                        })
        return conflicts

    # ------------------------------------------------------------------ statuses and actions
    def settle(self) -> None:
        """Advance pure-mode jobs (start/stop/restart/delete) in queue order, then refresh stored statuses.

        A job is queued until ``ready_at`` (the stored status does not move), a restart or stop then removes
        the old containers for ``stop_seconds`` (StartService runs StopService first; still no status change),
        a start or restart runs its activity for ``start_seconds`` (the aggregate reads starting:unhealthy),
        and the containers' new states reach the stored statuses only at the next refresh tick.
        """
        if self.docker is not None:
            return
        now = self.clock.monotonic()
        with self.store.lock:
            changed = False
            for svc in list(self.store.services.values()):
                while svc.pending:
                    action = svc.pending[0]
                    if action.kind in ("stop", "restart") and not action.stopped and action.stop_until <= now:
                        action.stopped = True
                        self._stop_containers(svc, action.stop_until)
                    if action.done_at > now:
                        break
                    svc.pending.pop(0)
                    changed = True
                    self._apply_pure(svc, action)
                    if svc.uuid not in self.store.services:
                        break
                if svc.uuid in self.store.services:
                    self._refresh(svc, now)
            if changed:
                self.idle.notify_all()

    def _refresh(self, svc: Service, now: float) -> None:
        """Stored statuses follow the containers at refresh ticks (Sentinel / the per-minute server check)."""
        interval = self.settings.refresh_interval
        tick = int(now / interval) if interval > 0 else now
        for sub in svc.apps:
            actual, since = sub.actual, sub.actual_since
            if actual.startswith("running") and sub.has_healthcheck:
                if now < sub.healthy_at:
                    actual = "running:starting"  # GetContainersStatus stores a starting healthcheck like this
                else:
                    actual, since = "running:healthy", max(since, sub.healthy_at)
            changed = False
            if interval <= 0 or int(now / interval) > int(since / interval):
                changed = sub.status != actual
                sub.status = actual
                sub.fresh = True
            # GetContainersStatus stamps last_online_at on every container it finds at each refresh, and the
            # model does on every status change (app/Models/ServiceApplication.php, saving)
            if changed or (tick != sub.last_tick and sub.actual.startswith("running")):
                sub.last_online_at = now_iso(self.clock.time())
            sub.last_tick = tick

    def _set_actual(self, sub: SubResource, status: str, at: float) -> None:
        sub.actual, sub.actual_since = status, at

    def _stop_containers(self, svc: Service, at: float) -> None:
        """StopService (a stop, or a restart's first half): the containers are removed, then every sub-resource's
        stored status is written `exited` at once, not at the next refresh (app/Actions/Service/StopService.php:
        49-53); on a server that is not functional it returns before either (:33-35)."""
        functional = self.server_of(svc).functional
        for sub in svc.apps:
            sub.status_override = None
            if sub.exists:
                self._log(svc, sub, f"Container {sub.name}-{svc.uuid} Stopped")
            sub.exists = False
            self._set_actual(sub, "exited", at)
            if functional:
                if sub.status != "exited":
                    sub.last_online_at = now_iso(self.clock.time())  # the model stamps it on every status change (saving)
                sub.status = "exited"

    def _apply_pure(self, svc: Service, action: PendingAction) -> None:
        server = self.server_of(svc)
        if action.kind in ("start", "restart"):
            for sub in svc.apps:
                sub.status_override = None
                if server.functional:
                    self._set_actual(sub, "running:unknown" if not sub.has_healthcheck else "running:healthy",
                                     action.done_at)
                    sub.healthy_at = action.done_at + self.settings.health_start_seconds
                    sub.fresh = False
                    sub.exists = True
                    self._log(svc, sub, f"Container {sub.name}-{svc.uuid} Started")
                else:
                    self._set_actual(sub, "exited", action.done_at)
            if server.functional:
                self.mark_deployed(svc)
        elif action.kind == "stop":
            if not action.stopped:
                self._stop_containers(svc, action.done_at)
        elif action.kind == "delete":
            if action.options.get("delete_volumes", True):
                self.volumes = {v for v in self.volumes if not v.startswith(f"{svc.uuid}_")}
            self.remove_service(svc)

    def _log(self, svc: Service, sub: SubResource, line: str) -> None:
        buf = self._logs.setdefault((svc.uuid, sub.name), [])
        buf.append(f"{now_iso(self.clock.time())} {line}")
        del buf[:-1000]

    def pure_logs(self, svc: Service, sub: SubResource, lines: int, timestamps: bool) -> str:
        buf = self._logs.get((svc.uuid, sub.name), [])
        tail = buf[-lines:] if lines > 0 else buf
        return "\n".join(line if timestamps else line.split(" ", 1)[1] for line in tail)

    def mark_deployed(self, svc: Service) -> None:
        """Remember what the last successful start applied (env values, config hash, volumes)."""
        with self.store.lock:
            svc.config_hash = self.config_hash(svc)
            svc.deployed_envs = {e.key: e.value for e in self.store.envs_of(svc)}
            volumes = self.generated_compose(svc).get("volumes") or {}
            for cfg in volumes.values():
                if isinstance(cfg, dict) and cfg.get("name") and not cfg.get("external"):
                    self.volumes.add(str(cfg["name"]))

    def config_hash(self, svc: Service) -> str:
        payload = json.dumps([svc.parsed, [(e.key, e.value) for e in self.store.envs_of(svc)],
                              [(a.name, a.fqdn) for a in svc.apps]], sort_keys=True, default=str)
        return hashlib.md5(payload.encode()).hexdigest()  # noqa: S324 - not security relevant

    def remove_service(self, svc: Service) -> None:
        """Drop the service rows (sub-resources, env vars) at the end of a delete job."""
        with self.store.lock:
            self.store.services.pop(svc.uuid, None)
            for env in [e for e in self.store.envs.values() if e.service_id == svc.id]:
                self.store.envs.pop(env.uuid, None)
            for task in [t for t in self.store.tasks.values() if t.service_id == svc.id]:
                self.store.tasks.pop(task.uuid, None)
                self.store.executions.pop(task.uuid, None)
            for sub in svc.apps:
                self._logs.pop((svc.uuid, sub.name), None)
            self.idle.notify_all()

    def queue_action(self, svc: Service, kind: str, **options: Any) -> None:
        """Queue an asynchronous action (pure mode: lazily applied after ``action_delay``)."""
        with self.store.lock:
            if kind == "delete":
                svc.deleting = True
            if self.docker is not None:
                action = PendingAction(kind, 0.0, options)
                svc.pending.append(action)
                self.docker.submit(svc.uuid, action)
                return
            delay = self.settings.action_delay
            if kind == "delete" and self.settings.delete_delay is not None:
                delay = self.settings.delete_delay
            last = svc.pending[-1].done_at if svc.pending else 0.0
            ready = max(self.clock.monotonic() + delay, last)
            stop_until = ready + (self.settings.stop_seconds if kind in ("stop", "restart") else 0.0)
            done = stop_until + (self.settings.start_seconds if kind in ("start", "restart") else 0.0)
            svc.pending.append(PendingAction(kind, ready, options, stop_until=stop_until, active_from=stop_until,
                                             done_at=done))
        self.settle()

    def queue_task(self, svc: Service, task: ScheduledTask) -> None:
        """ScheduledTaskJob on the `high` queue: after `action_delay` a worker creates the execution row
        (`running`), picks the container and runs the command (app/Jobs/ScheduledTaskJob.php)."""
        def work() -> None:
            self.clock.sleep(self.settings.action_delay)
            run = TaskExecution(new_uuid(), task.uuid)
            with self.store.lock:
                if task.uuid not in self.store.tasks:  # deleted meanwhile: the serialized model no longer resolves
                    return
                self.store.executions.setdefault(task.uuid, []).append(run)
            started = self.clock.monotonic()
            code, output = self._run_task(svc, task)
            with self.store.lock:
                run.duration = f"{self.clock.monotonic() - started:.2f}"
                run.finished_at = run.updated_at = now_iso(self.clock.time())
                if code == 0:
                    run.status, run.message = "success", output
                else:  # failed(): maxExceptions = 1, the message is rewritten, the exit code is not kept
                    run.status = "failed"
                    run.message = "Job permanently failed after 1 attempts: " + (
                        output or f"SSH command failed with exit code: {code}")
                    run.error_details = "RuntimeException: " + (output or "")[:200]

        threading.Thread(target=work, daemon=True, name=f"task-{task.uuid}").start()

    def _run_task(self, svc: Service, task: ScheduledTask) -> tuple[int, str]:
        """The container among those whose *stored* status is running: the only one whatever `container`
        says, else the one named `<container>-<uuid>`; then `docker exec <it> sh -c <command>`, stdout and
        stderr merged, capped at 5 MB, trimmed."""
        running = [name for name, status in self.sub_statuses(svc).items() if "running" in status]
        if not running:
            return 1, "ScheduledTaskJob failed: No containers running."
        if len(running) == 1:
            chosen = running[0]
        elif not task.container:
            return 1, "ScheduledTaskJob failed: More than one container is running; set the container."
        else:
            matches = [name for name in running if f"{name}-{svc.uuid}".startswith(f"{task.container}-{svc.uuid}")]
            if not matches:
                return 1, "ScheduledTaskJob failed: No valid container was found. Is the container name correct?"
            chosen = matches[0]
        if self.docker is not None:
            code, output = self.docker.exec(f"{chosen}-{svc.uuid}", task.command, timeout=task.timeout)
        else:
            code, output = self.task_runner(svc, chosen, task.command)
        limit = 5 * 1024 * 1024
        if len(output.encode()) > limit:
            output = output.encode()[:limit].decode(errors="ignore") + "\n[... Output truncated at 5MB limit ...]"
        return code, output.strip()

    def sub_statuses(self, svc: Service) -> dict[str, str]:
        """Per sub-resource status (overrides win; docker mode reads the containers)."""
        result: dict[str, str] = {}
        live = self.docker.stored_statuses(svc) if self.docker is not None else None
        for sub in svc.apps:
            override = sub.status_override
            if override:
                result[sub.name] = override
            elif live is not None:
                result[sub.name] = live.get(f"{sub.name}-{svc.uuid}", "exited")
            else:
                result[sub.name] = sub.status
        return result

    def container_state(self, svc: Service, sub: SubResource) -> str | None:
        """The container's real state for the logs endpoint: None when no container exists."""
        if self.docker is not None:
            return self.docker.container_statuses(svc).get(f"{sub.name}-{svc.uuid}")
        if not sub.exists:
            return None
        return sub.status_override or sub.actual

    def is_starting(self, svc: Service) -> bool:
        """A start activity runs now (Service status accessor). Queued jobs and a restart's stop phase keep
        the old status; docker mode runs each job at once, so a pending start is its activity."""
        if self.docker is not None:
            return any(a.kind in ("start", "restart") for a in svc.pending)
        now = self.clock.monotonic()
        # until settle() applies a finished job, it still counts as running its activity: a reader never sees
        # the gap between "activity over" and "containers recorded" as a stale exited
        return any(a.kind in ("start", "restart") and a.active_from <= now for a in svc.pending)

    def service_status(self, svc: Service, subs: dict[str, str] | None = None) -> str:
        subs = subs if subs is not None else self.sub_statuses(svc)
        return aggregate_status([(subs.get(a.name, "exited"), a.exclude_from_status) for a in svc.apps],
                                self.is_starting(svc))

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no service has pending actions (True) or the timeout passes (False); stored statuses
        may still lag behind by up to ``refresh_interval``."""
        deadline = self.clock.monotonic() + timeout
        while True:
            self.settle()
            with self.store.lock:
                pending = [a.ready_at for s in self.store.services.values() for a in s.pending]
                if not pending:
                    return True
                remaining = deadline - self.clock.monotonic()
                if remaining <= 0:
                    return False
                wait = remaining
                if self.docker is None:
                    due = min(a.done_at for s in self.store.services.values() for a in s.pending)
                    wait = min(remaining, max(0.0, due - self.clock.monotonic()) + 0.005)
                self.idle.wait(timeout=min(self.clock.real(wait), 0.25))
