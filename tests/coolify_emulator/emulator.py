"""``CoolifyEmulator``: the public face of the package (server + proxy + state helpers)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..timing import SYSTEM, Clock
from . import compose as C
from .core import Core, Settings
from .docker_mode import DockerBackend
from .faults import _UNSET, Fault, RequestLog
from .proxy import ProxyContext, ProxyServer
from .server import ApiServer
from .state import Service, SharedEnv, Token, new_uuid, random_string

_SETTINGS_ATTRS = ("api_enabled", "allowed_ips", "rate_limit", "rate_limit_window", "action_delay", "delete_delay",
                   "public_ip", "hang_seconds", "strict_accept", "stop_seconds", "start_seconds", "refresh_interval",
                   "health_start_seconds")
# Coolify's own timings, shortened: queue, stop-first restart, start activity, status refresh, healthcheck start
# (API-NOTES §17). Tests that check what a client sees over time use this; the default profile answers at once.
REALISTIC = {"action_delay": 0.4, "stop_seconds": 0.4, "start_seconds": 0.8, "refresh_interval": 1.5,
             "health_start_seconds": 0.5}


class CoolifyEmulator:
    """A stateful Coolify 4.3.11 API (``/api/v1``) plus an emulated Traefik proxy.

    >>> with CoolifyEmulator(token="t0k3n") as emu:
    ...     emu.base_url            # "http://127.0.0.1:PORT/api/v1"
    ...     emu.proxy_url           # "http://127.0.0.1:PORT2" (HTTP_PROXY for *.sslip.io URLs)

    Settings that tests may flip at any time are plain attributes: ``api_enabled``,
    ``allowed_ips``, ``rate_limit``, ``rate_limit_window``, ``action_delay``, ``delete_delay``,
    ``public_ip``, ``hang_seconds``, ``strict_accept``, and the timings of a job: ``stop_seconds`` (a restart
    or stop removes the old containers; the stored status does not move), ``start_seconds`` (the start activity:
    starting:unhealthy), ``refresh_interval`` (stored container states follow the containers only at these
    ticks) and ``health_start_seconds`` (a new container's healthcheck reads "starting", aggregated as healthy).
    ``CoolifyEmulator(**REALISTIC)`` behaves like a real server, only faster.
    """

    core: Core
    api_enabled: bool
    allowed_ips: list[str]
    rate_limit: int
    rate_limit_window: float
    action_delay: float
    delete_delay: float | None
    public_ip: str
    hang_seconds: float
    strict_accept: bool
    stop_seconds: float
    start_seconds: float
    refresh_interval: float
    health_start_seconds: float

    def __init__(
        self,
        *,
        token: str | None = None,
        abilities: tuple[str, ...] = ("root",),
        host: str = "127.0.0.1",
        port: int = 0,
        proxy: bool = True,
        proxy_port: int = 0,
        docker: bool = False,
        workdir: str | None = None,
        keep_docker_resources: bool = False,
        action_delay: float = 0.3,
        delete_delay: float | None = None,
        rate_limit: int = 200,
        rate_limit_window: float = 60.0,
        public_ip: str = "127.0.0.1",
        hang_seconds: float = 30.0,
        api_enabled: bool = True,
        strict_accept: bool = True,
        seed: bool = True,
        stop_seconds: float = 0.0,
        start_seconds: float = 0.0,
        refresh_interval: float = 0.0,
        health_start_seconds: float = 0.0,
        version: str = C.COOLIFY_VERSION,
        clock: Clock = SYSTEM,
    ) -> None:
        settings = Settings(api_enabled=api_enabled, rate_limit=rate_limit, rate_limit_window=rate_limit_window,
                            action_delay=action_delay, delete_delay=delete_delay, public_ip=public_ip,
                            hang_seconds=hang_seconds, strict_accept=strict_accept, stop_seconds=stop_seconds,
                            start_seconds=start_seconds, refresh_interval=refresh_interval,
                            health_start_seconds=health_start_seconds)
        self._docker = DockerBackend(workdir, keep_resources=keep_docker_resources) if docker else None
        object.__setattr__(self, "core", Core(settings, self._docker, clock))
        self.core.version = version
        if self._docker is not None:
            self._docker.attach(self.core)
        self._server = ApiServer(self.core, host, port)
        self._proxy = ProxyServer(self.core, host, proxy_port) if proxy else None
        self._started = False
        self.token: str | None = token
        self._localhost_uuid: str | None = None
        if seed:
            server = self.core.add_server("localhost", "host.docker.internal",
                                          description="This is the server where Coolify is running on. "
                                                      "Don't delete this!")
            self._localhost_uuid = server.uuid
        if token is not None:
            self.add_token(token, abilities)

    # ------------------------------------------------------------------ settings passthrough
    def __getattr__(self, name: str) -> Any:
        if name in _SETTINGS_ATTRS:
            return getattr(self.core.settings, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SETTINGS_ATTRS:
            setattr(self.core.settings, name, value)
        else:
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> CoolifyEmulator:
        """Start the API server (and proxy, and docker poller) in background threads."""
        self._server.start()
        if self._proxy is not None:
            self._proxy.start()
        if self._docker is not None:
            self._docker.start()
        self._started = True
        return self

    def stop(self) -> None:
        """Stop everything; in docker mode also remove this instance's containers/volumes/networks."""
        if self._started:
            self._server.stop()
            if self._proxy is not None:
                self._proxy.stop()
        if self._docker is not None:
            self._docker.stop()
        self._started = False

    def __enter__(self) -> CoolifyEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the instance root)."""
        return f"http://{self._server.host}:{self._server.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api/v1``."""
        return self.url + "/api/v1"

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def proxy_url(self) -> str:
        """The emulated Traefik as an HTTP forward proxy (set it as HTTP_PROXY)."""
        if self._proxy is None:
            raise RuntimeError("the emulator was created with proxy=False")
        return self._proxy.url

    @property
    def localhost(self) -> dict[str, Any]:
        """The seeded "localhost" server (ip host.docker.internal, one destination "coolify")."""
        if self._localhost_uuid is None:
            raise RuntimeError("the emulator was created with seed=False")
        return self.server(self._localhost_uuid)

    @property
    def docker(self) -> DockerBackend | None:
        return self._docker

    @property
    def version(self) -> str:
        """What GET /version answers (config/constants.php `coolify.version`, overridable by COOLIFY_VERSION
        since v4.3.0); settable at any time. The routes stay 4.3.11's whatever it says."""
        return self.core.version

    @version.setter
    def version(self, value: str) -> None:
        self.core.version = value

    @property
    def requests(self) -> RequestLog:
        """Every request seen: records unpack as ``(method, path, query, status)``."""
        return self._server.log

    def count(self, method: str | None = None, path: str | None = None, status: Any = _UNSET,
              fault: Any = _UNSET) -> int:
        """Number of logged requests matching (``path`` is a full-match regex, e.g. ``"/services"``)."""
        return self._server.log.count(method=method, path=path, status=status, fault=fault)

    # ------------------------------------------------------------------ tokens, instance switches
    def add_token(self, token: str, abilities: tuple[str, ...] | list[str] = ("root",), *, team_id: int = 0,
                  expires_in: float | None = None, role: str = "owner", in_team: bool = True,
                  user_id: int | None = None) -> Token:
        """Register a bearer token (abilities: root, read, read:sensitive, write, write:sensitive, deploy).
        Each token gets a user of its own unless `user_id` names another token's (the rate limit is per user)."""
        expires_at = self.core.clock.time() + expires_in if expires_in is not None else None
        return self.core.add_token(token, tuple(abilities), team_id=team_id, expires_at=expires_at, role=role,
                                   in_team=in_team, user_id=user_id or len(self.core.store.tokens) + 1)

    def revoke_token(self, token: str) -> None:
        with self.core.store.lock:
            self.core.store.tokens.pop(token, None)

    def reset_rate_limit(self) -> None:
        self._server.app.limiter.reset()

    # ------------------------------------------------------------------ faults
    def inject(self, fault: str, *, method: str | None = None, path: str | None = None, times: int | None = _UNSET,
               retry_after: int = 1, seconds: float | None = None, after: bool = False, status: int | None = None,
               body: bytes | str | None = None) -> Fault:
        """Inject a fault for matching requests.

        ``fault``: "hang" | "drop" | "reset" | "malformed" | "latency" | "429" | any status ("500", "503"...).
        ``path``: regex searched in the /api/v1-relative and the full path (e.g. ``r"/services$"``).
        ``times``: how many requests it hits (default 1; unlimited for "latency"; None = unlimited).
        ``after=True``: perform the request first (side effects happen), then fail the response.
        ``seconds``: hang duration (default ``hang_seconds``) or added latency.
        """
        if times is _UNSET:
            times = None if fault == "latency" else 1
        if isinstance(body, str):
            body = body.encode()
        return self._server.faults.add(Fault(fault=fault, method=method, path=path, times=times,
                                             retry_after=retry_after, seconds=seconds, after=after, status=status,
                                             body=body))

    def clear_faults(self) -> None:
        self._server.faults.clear()

    # ------------------------------------------------------------------ servers
    def server(self, uuid: str) -> dict[str, Any]:
        with self.core.store.lock:
            server = self.core.store.servers[uuid]
            return {"uuid": server.uuid, "name": server.name, "ip": server.ip,
                    "destinations": [{"uuid": d.uuid, "name": d.name, "network": d.network}
                                     for d in server.destinations],
                    "is_reachable": server.is_reachable, "is_usable": server.is_usable,
                    "is_build_server": server.is_build_server, "wildcard_domain": server.wildcard_domain}

    def add_server(self, name: str, ip: str = "10.0.0.2", *, reachable: bool = True, usable: bool = True,
                   build_server: bool = False, wildcard_domain: str | None = None,
                   destinations: list[str] | int = 1, team_id: int = 0) -> dict[str, Any]:
        """Add a server (``destinations``: how many, or network names; 0 for none)."""
        server = self.core.add_server(name, ip, team_id=team_id, reachable=reachable, usable=usable,
                                      build_server=build_server, wildcard_domain=wildcard_domain,
                                      destinations=destinations)
        return self.server(server.uuid)

    def add_destination(self, server_uuid: str, name: str, network: str | None = None) -> dict[str, Any]:
        with self.core.store.lock:
            server = self.core.store.servers[server_uuid]
            dest = self.core.add_destination(server, name, network or name)
            return {"uuid": dest.uuid, "name": dest.name, "network": dest.network}

    def set_server(self, uuid: str, **fields: Any) -> None:
        """Change server fields: ``is_reachable``, ``is_usable``, ``is_build_server``, ``wildcard_domain``, ``ip``."""
        with self.core.store.lock:
            server = self.core.store.servers[uuid]
            for key, value in fields.items():
                if not hasattr(server, key):
                    raise AttributeError(key)
                setattr(server, key, value)

    # ------------------------------------------------------------------ projects / services (inspection)
    def _project_dict(self, project: Any) -> dict[str, Any]:
        envs = self.core.store.environments_of(project)
        return {"uuid": project.uuid, "name": project.name, "description": project.description,
                "team_id": project.team_id,
                "environments": [{"uuid": e.uuid, "name": e.name} for e in envs]}

    def find_projects(self, name: str | None = None) -> list[dict[str, Any]]:
        """Projects (all, or with exactly this name: names are not unique)."""
        with self.core.store.lock:
            items = sorted(self.core.store.projects.values(), key=lambda p: p.id)
            return [self._project_dict(p) for p in items if name is None or p.name == name]

    def project(self, uuid: str) -> dict[str, Any] | None:
        with self.core.store.lock:
            project = self.core.store.projects.get(uuid)
            return self._project_dict(project) if project else None

    def create_project(self, name: str, description: str | None = None, team_id: int = 0) -> dict[str, Any]:
        """Create a project directly (as if through the UI), with its ``production`` environment."""
        return self._project_dict(self.core.create_project(name, description, team_id))

    def create_environment(self, project_uuid: str, name: str) -> dict[str, Any]:
        with self.core.store.lock:
            env = self.core.create_environment(self.core.store.projects[project_uuid], name)
            return {"uuid": env.uuid, "name": env.name}

    def create_project_variable(self, project_uuid: str, key: str, value: str | None = None,
                                comment: str | None = None) -> int:
        """Create a project's shared variable directly (as if through the UI); returns its id."""
        with self.core.store.lock:
            project = self.core.store.projects[project_uuid]
            env = SharedEnv(self.core.store.next_id("shared_envs"), key, value, project.id, comment=comment)
            self.core.store.shared_envs[env.id] = env
            return env.id

    def project_variables(self, project_uuid: str) -> list[dict[str, Any]]:
        with self.core.store.lock:
            project = self.core.store.projects[project_uuid]
            return [{"id": e.id, "key": e.key, "value": e.value, "comment": e.comment}
                    for e in self.core.store.shared_envs_of(project)]

    def _service_dict(self, svc: Service) -> dict[str, Any]:
        subs = self.core.sub_statuses(svc)
        env = self.core.store.environment_by_id(svc.environment_id)
        project = self.core.store.project_by_id(env.project_id) if env else None
        server = self.core.store.server_by_id(svc.server_id)
        return {
            "uuid": svc.uuid, "name": svc.name, "description": svc.description,
            "server_uuid": server.uuid if server else None,
            "project_uuid": project.uuid if project else None, "environment_name": env.name if env else None,
            "status": self.core.service_status(svc, subs), "deleting": svc.deleting,
            "docker_compose_raw": svc.docker_compose_raw, "compose": copy.deepcopy(svc.parsed),
            "docker_compose": C.dump_yaml(self.core.generated_compose(svc)),
            "connect_to_docker_network": svc.connect_to_docker_network, "tags": list(svc.tags),
            "applications": [{"uuid": a.uuid, "name": a.name, "kind": a.kind, "image": a.image, "fqdn": a.fqdn,
                              "status": subs.get(a.name, "exited"), "fresh": a.fresh} for a in svc.apps],
            "envs": {e.key: e.value for e in self.core.store.envs_of(svc)},
            "deployed_envs": dict(svc.deployed_envs) if svc.deployed_envs is not None else None,
            "config_changed": svc.config_hash is not None and svc.config_hash != self.core.config_hash(svc),
            "pending": [a.kind for a in svc.pending],
            "error": self._docker.errors.get(svc.uuid) if self._docker else None,
        }

    def find_services(self, name: str | None = None, project_uuid: str | None = None) -> list[dict[str, Any]]:
        """Service snapshots (filter by exact name and/or project)."""
        self.core.settle()
        with self.core.store.lock:
            out = []
            for svc in sorted(self.core.store.services.values(), key=lambda s: s.id):
                data = self._service_dict(svc)
                if name is not None and svc.name != name:
                    continue
                if project_uuid is not None and data["project_uuid"] != project_uuid:
                    continue
                out.append(data)
            return out

    def service(self, uuid: str) -> dict[str, Any] | None:
        """Snapshot of one service (None once deleted): status, apps, envs, compose..."""
        self.core.settle()
        with self.core.store.lock:
            svc = self.core.store.services.get(uuid)
            return self._service_dict(svc) if svc else None

    def envs(self, uuid: str) -> dict[str, str | None]:
        """``{key: value}`` of a service's env vars."""
        snap = self.service(uuid)
        if snap is None:
            raise KeyError(uuid)
        return dict(snap["envs"])

    def service_status(self, uuid: str) -> str | None:
        snap = self.service(uuid)
        return snap["status"] if snap else None

    def _svc(self, uuid: str) -> Service:
        svc = self.core.store.services.get(uuid)
        if svc is None:
            raise KeyError(f"no service {uuid}")
        return svc

    def create_service(self, project_uuid: str, compose_yaml: str, *, name: str | None = None,
                       environment: str = "production", server_uuid: str | None = None,
                       urls: dict[str, str] | None = None) -> str:
        """Create a service directly (as if through the UI); returns its uuid."""
        parsed = C.parse_yaml(compose_yaml)
        C.validate_injection(parsed)
        with self.core.store.lock:
            project = self.core.store.projects[project_uuid]
            env = self.core.find_environment(project, environment)
            if env is None:
                raise KeyError(environment)
            server = self.core.store.servers[server_uuid] if server_uuid else next(iter(
                s for s in sorted(self.core.store.servers.values(), key=lambda s: s.id) if s.destinations))
            svc = Service(id=self.core.store.next_id("services"), uuid=new_uuid(),
                           name=name or "service-" + random_string(10), description=None, environment_id=env.id,
                           server_id=server.id, destination_id=server.destinations[0].id, docker_compose_raw="",
                           parsed={}, team_id=project.team_id)
            self.core.store.services[svc.uuid] = svc
            self.core.parse_service(svc, parsed)
            for app_name, url in (urls or {}).items():
                sub = svc.app(app_name)
                if sub is None:
                    raise KeyError(app_name)
                sub.fqdn = url
                self.core.refresh_magic_envs(svc, sub)
            return svc.uuid

    def edit_service_compose(self, uuid: str, compose_yaml: str) -> None:
        """Replace a service's compose as a user would in Coolify's UI (saved and re-parsed, not restarted)."""
        parsed = C.parse_yaml(compose_yaml)
        C.validate_injection(parsed)
        with self.core.store.lock:
            self.core.parse_service(self._svc(uuid), parsed)

    def set_env(self, uuid: str, key: str, value: str | None) -> None:
        """Set (create or update) a service env var as a user would in the UI."""
        with self.core.store.lock:
            svc = self._svc(uuid)
            env = self.core.store.env_by_key(svc, key)
            if env is None:
                self.core.create_env(svc, key, value)
            else:
                env.value = value

    def set_app_url(self, uuid: str, app_name: str, url: str | None) -> None:
        """Set a sub-application's fqdn directly (no conflict checks)."""
        with self.core.store.lock:
            svc = self._svc(uuid)
            sub = svc.app(app_name)
            if sub is None:
                raise KeyError(app_name)
            sub.fqdn = url
            self.core.refresh_magic_envs(svc, sub)

    def set_service_status(self, uuid: str, status: str | None, app: str | None = None) -> None:
        """Force a sub-resource status (all, or ``app``), e.g. ``"exited"`` for a crashed container or
        ``"running:unhealthy"``. ``None`` clears the override. The next start/stop/restart clears it too."""
        self.core.settle()
        with self.core.store.lock:
            svc = self._svc(uuid)
            targets = [svc.app(app)] if app else list(svc.apps)
            for sub in targets:
                if sub is None:
                    raise KeyError(app)
                sub.status_override = status

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every queued start/stop/restart/delete has finished."""
        return self.core.wait_idle(timeout)

    def wait_for_status(self, uuid: str, predicate: Callable[[str | None], bool] | str,
                        timeout: float = 30.0, interval: float = 0.02) -> str | None:
        """Poll until ``predicate(status)`` (or ``status.startswith(prefix)``); returns the status."""
        check = predicate if callable(predicate) else (lambda s: s is not None and s.startswith(predicate))
        clock = self.core.clock
        deadline = clock.monotonic() + timeout
        while True:
            status = self.service_status(uuid)
            if check(status):
                return status
            if clock.monotonic() >= deadline:
                raise TimeoutError(f"service {uuid} status {status!r} after {timeout}s")
            clock.sleep(interval)

    # ------------------------------------------------------------------ proxy, docker
    def set_proxy_responder(self, responder: Callable[[ProxyContext], tuple[int, dict[str, str], bytes]]) -> None:
        """Pure mode: how the proxy answers for a running app (default: 200 ``{"swagger":"2.0"}``)."""
        if self._proxy is None:
            raise RuntimeError("the emulator was created with proxy=False")
        self._proxy.responder = responder

    def volumes(self) -> list[str]:
        """Named volumes that exist: simulated in pure mode (created at first start, removed by a
        DELETE unless ``delete_volumes=false``); the real labelled volumes in docker mode."""
        if self._docker is not None:
            out = self._docker.run(["volume", "ls", "-q", "--filter",
                                    f"label=io.provision.test.instance={self._docker.instance_id}"], check=False)
            return sorted(out.stdout.split())
        with self.core.store.lock:
            return sorted(self.core.volumes)

    def docker_refresh(self) -> None:
        """Docker mode: re-read container states now instead of waiting for the poller."""
        if self._docker is not None:
            self._docker.refresh()

    def docker_cleanup(self, all_instances: bool = False) -> None:
        """Docker mode: remove this instance's (or every emulator's) containers, volumes, networks."""
        if self._docker is not None:
            self._docker.cleanup(all_instances=all_instances)
