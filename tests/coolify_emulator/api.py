"""Route table and handlers of the emulated ``/api/v1`` (Coolify 4.3.11 controllers).

Each handler gets an :class:`ApiRequest` (already authenticated by :mod:`server`) and
returns an :class:`ApiResponse`. Messages and status codes follow API-NOTES.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, TypeVar

from . import compose as C
from .core import ENV_KEY_PATTERN, Core
from .state import (
    Environment,
    EnvVar,
    Project,
    ScheduledTask,
    Server,
    Service,
    SharedEnv,
    SubResource,
    Token,
    new_uuid,
    now_iso,
    random_string,
)
from .validation import (
    COMBINED_MESSAGES,
    NAME_MESSAGES,
    Rule,
    column_overflow,
    environment_name,
    extra_fields,
    is_bigint,
    is_valid_description,
    is_valid_name,
    json_scalar,
    merge_extra,
    php_trim,
    query_bool,
    strip_tags,
    tag_names,
    to_bool,
    validate,
)

_MISSING: Any = object()
DOCS = "https://coolify.io/docs"
TRIM_EXCEPT = {"current_password", "password", "password_confirmation"}


@dataclass
class ApiResponse:
    """A response about to be written (body already encoded)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def jr(status: int, payload: Any, headers: dict[str, str] | None = None) -> ApiResponse:
    """JSON like Laravel's ``response()->json()``: PHP ``json_encode`` escapes ``/`` and non-ASCII."""
    body = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()
    return ApiResponse(status, body, {"Content-Type": "application/json", **(headers or {})})


def text(status: int, body: str, content_type: str = "text/html; charset=UTF-8") -> ApiResponse:
    return ApiResponse(status, body.encode(), {"Content-Type": content_type})


def _trim(value: Any, key: str = "") -> Any:
    """Laravel's global TrimStrings + ConvertEmptyStringsToNull on the JSON input."""
    if isinstance(value, str):
        if key in TRIM_EXCEPT:
            return value
        value = value.strip()
        return None if value == "" else value
    if isinstance(value, dict):
        return {k: _trim(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_trim(v, f"{key}.{i}" if key else str(i)) for i, v in enumerate(value)]
    return value


@dataclass
class ApiRequest:
    """An incoming API request, relative to ``/api/v1``."""

    method: str
    path: str
    query: dict[str, str]
    headers: Message
    raw_body: bytes
    client_ip: str
    token: Token | None = None
    sensitive: bool = False
    _json: Any = _MISSING

    @property
    def is_json(self) -> bool:
        """``$request->isJson()``: Content-Type contains ``/json`` or ``+json``."""
        ct = self.headers.get("Content-Type", "") or ""
        return "/json" in ct or "+json" in ct

    def wants_json(self) -> bool:
        """``$request->expectsJson()`` (first Accept type is JSON, or XHR accepting anything)."""
        accept = (self.headers.get("Accept", "") or "").split(",")[0].strip().lower()
        if "/json" in accept or "+json" in accept:
            return True
        xhr = (self.headers.get("X-Requested-With", "") or "") == "XMLHttpRequest"
        return xhr and accept in ("", "*/*", "*")

    def json_bag(self) -> dict[str, Any]:
        """``$request->json()->all()`` after TrimStrings/ConvertEmptyStringsToNull."""
        if self._json is _MISSING:
            bag: dict[str, Any] = {}
            if self.is_json and self.raw_body:
                try:
                    decoded = json.loads(self.raw_body)
                except ValueError:
                    decoded = None
                if isinstance(decoded, dict):
                    bag = decoded
                elif isinstance(decoded, list):
                    bag = {str(i): v for i, v in enumerate(decoded)}
                elif decoded is not None:
                    bag = {"0": decoded}
            self._json = _trim(bag)
        return self._json  # type: ignore[no-any-return]

    def input(self) -> dict[str, Any]:
        """``$request->all()``: query parameters merged with the JSON body (body wins)."""
        merged: dict[str, Any] = {k: _trim(v, k) for k, v in self.query.items()}
        merged.update(self.json_bag())
        return merged

    def body_json(self) -> Any:
        """Parsed raw body (for the request log)."""
        try:
            return json.loads(self.raw_body) if self.raw_body else None
        except ValueError:
            return None


def validate_incoming(req: ApiRequest) -> ApiResponse | None:
    """``validateIncomingRequest()`` (API-NOTES §0)."""
    if not req.is_json:
        return jr(400, {"message": "Invalid request.", "error": "Content-Type must be application/json."})
    try:
        decoded = json.loads(req.raw_body) if req.raw_body else None
    except ValueError:
        decoded = None
    php_truthy = decoded not in (None, False, 0, "", "0", []) and not (isinstance(decoded, float) and decoded == 0)
    if isinstance(decoded, dict):
        php_truthy = True  # json_decode('{}') is an object: truthy
    if not php_truthy:
        return jr(400, {"message": "Invalid request.", "error": "Invalid JSON."})
    if not req.json_bag():
        return jr(400, {"message": "Invalid request.", "error": "Empty JSON."})
    return None


def validation_failed(errors: Any) -> ApiResponse:
    return jr(422, {"message": "Validation failed.", "errors": errors})


def _rejected(data: dict[str, Any], rules: Mapping[str, list[Rule]], allowed_fields: tuple[str, ...],
              messages: Mapping[str, str] | None = None, *, laravel_required: bool = False) -> ApiResponse | None:
    """The 422 for ``data``: rule errors, then "This field is not allowed." for fields outside the list.
    ``laravel_required``: the controller calls ``Validator::make`` itself, so "The x field is required."."""
    errors = merge_extra(validate(data, rules, messages, **({"required_message": None} if laravel_required else {})),
                         extra_fields(data, allowed_fields))
    return validation_failed(errors) if errors else None


def _validated(req: ApiRequest, rules: Mapping[str, list[Rule]], allowed_fields: tuple[str, ...],
               messages: Mapping[str, str] | None = None, *, body_only: bool = False,
               laravel_required: bool = False) -> tuple[dict[str, Any], ApiResponse | None]:
    """``validateIncomingRequest()`` then :func:`_rejected` on ``$request->all()`` (or, with
    ``body_only``, the JSON body alone). Returns the input and the error response, if any."""
    bad = validate_incoming(req)
    if bad:
        return {}, bad
    data = req.json_bag() if body_only else req.input()
    return data, _rejected(data, rules, allowed_fields, messages, laravel_required=laravel_required)


Handler = Callable[..., ApiResponse]
_Row = TypeVar("_Row", Server, Project, Service)


@dataclass
class Route:
    """A route: method, compiled path regex, handler, required ability (None = none)."""

    method: str
    regex: re.Pattern[str]
    handler: Handler
    ability: str | None
    skip_api_allowed: bool = False


_NAME_RULES: list[Any] = ["required", "string", "min:3", "max:255", is_valid_name]
_NAME_RULES_OPTIONAL: list[Any] = ["nullable", "string", "min:3", "max:255", is_valid_name]
#: ``descriptionRules()`` (app/Support/ValidationPatterns.php:438-453, pattern :18) on POST/PATCH /projects and
#: PATCH environments (app/Http/Controllers/Api/ProjectController.php:250, 369, 769): no `:` and no `—`
_DESCRIPTION_RULES: list[Any] = ["nullable", "string", "max:255", is_valid_description]
_NAME_DESCRIPTION_UPDATE_RULES: dict[str, list[Any]] = {"name": _NAME_RULES_OPTIONAL, "description": _DESCRIPTION_RULES}
_NAME_DESCRIPTION_FIELDS = ("name", "description")
_BOOL = ["boolean"]
_ENV_FLAG_FIELDS = ("is_literal", "is_multiline", "is_shown_once")
_SERVICE_CREATE_FIELDS = (
    "type", "name", "description", "project_uuid", "environment_name", "environment_uuid", "server_uuid",
    "destination_uuid", "instant_deploy", "docker_compose_raw", "urls", "force_domain_override",
    "is_container_label_escape_enabled", "tags",
)
#: ServicesController.php:589: the compose branch's own allowlist (no `type`, `connect_to_docker_network` listed)
_SERVICE_COMPOSE_FIELDS = (
    "name", "description", "project_uuid", "environment_name", "environment_uuid", "server_uuid", "destination_uuid",
    "instant_deploy", "docker_compose_raw", "connect_to_docker_network", "urls", "force_domain_override",
    "is_container_label_escape_enabled", "tags",
)
#: ServicesController.php:395-397, 611-613, 1192-1194
_URLS_MESSAGES = {"urls.*.array": "An item in the urls array has invalid fields. Only name and url fields are supported."}
_SERVICE_UPDATE_FIELDS = (
    "name", "description", "instant_deploy", "docker_compose_raw", "connect_to_docker_network", "urls",
    "force_domain_override", "is_container_label_escape_enabled",
)
_ENV_FIELDS = ("key", "value", "is_preview", "is_literal", "is_multiline", "is_shown_once", "comment")

#: Tiny one-click catalogue so the ``type`` branch can be exercised.
SERVICE_TEMPLATES: dict[str, str] = {
    "whoami": "services:\n  whoami:\n    image: traefik/whoami:latest\n    environment:\n"
              "      - SERVICE_FQDN_WHOAMI_80\n",
    "uptime-kuma": "services:\n  uptime-kuma:\n    image: louislam/uptime-kuma:1\n    environment:\n"
                   "      - SERVICE_FQDN_UPTIMEKUMA_3001\n    volumes:\n      - uptime-kuma:/app/data\n",
}


class QueryException(Exception):
    """A statement PostgreSQL refuses (Illuminate\\Database\\QueryException): the route handler's caller
    answers Laravel's production 500 ``{"message": "Server Error"}`` and nothing after it happened."""


class Api:
    """Handlers bound to one :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.store = core.store
        u = r"(?P<uuid>[^/]+)"
        self.routes: list[Route] = []
        add = self._add
        add("GET", r"/version", self.version, "read")
        add("POST", r"/enable", self.enable_api, "write", skip_api_allowed=True)
        add("POST", r"/disable", self.disable_api, "write", skip_api_allowed=True)
        add("GET", r"/servers", self.list_servers, "read")
        add("GET", rf"/servers/{u}", self.get_server, "read")
        # routes/api.php:185 (since v4.2.0): a GET on the validate action answers 405 once api.ability:write passed
        add("GET", rf"/servers/{u}/validate", self.moved_to_post, "write")
        add("GET", rf"/servers/{u}/resources", self.server_resources, "read")
        add("GET", rf"/servers/{u}/domains", self.server_domains, "read")
        add("GET", rf"/servers/{u}/destinations", self.server_destinations, "read")
        add("GET", r"/destinations", self.list_destinations, "read")
        add("GET", rf"/destinations/{u}", self.get_destination, "read")
        add("GET", r"/projects", self.list_projects, "read")
        add("POST", r"/projects", self.create_project, "write")
        add("GET", rf"/projects/{u}", self.get_project, "read")
        add("PATCH", rf"/projects/{u}", self.update_project, "write")
        add("DELETE", rf"/projects/{u}", self.delete_project, "write")
        add("GET", rf"/projects/{u}/environments", self.list_environments, "read")
        add("POST", rf"/projects/{u}/environments", self.create_environment, "write")
        add("PATCH", rf"/projects/{u}/environments/(?P<env>[^/]+)", self.update_environment, "write")
        add("DELETE", rf"/projects/{u}/environments/(?P<env>[^/]+)", self.delete_environment, "write")
        # routes/api.php: the project's shared variables are routed before `/projects/{uuid}/{environment}`
        add("GET", rf"/projects/{u}/envs", self.project_envs, "read")
        add("POST", rf"/projects/{u}/envs", self.project_create_env, "write")
        add("PATCH", rf"/projects/{u}/envs/(?P<env_id>[^/]+)", self.project_update_env, "write")
        add("DELETE", rf"/projects/{u}/envs/(?P<env_id>[^/]+)", self.project_delete_env, "write")
        add("GET", rf"/projects/{u}/(?P<env>[^/]+)", self.get_environment, "read")
        add("GET", r"/services", self.list_services, "read")
        add("POST", r"/services", self.create_service, "write")
        add("GET", rf"/services/{u}", self.get_service, "read")
        add("PATCH", rf"/services/{u}", self.update_service, "write")
        add("DELETE", rf"/services/{u}", self.delete_service, "write")
        add("GET", rf"/services/{u}/logs", self.service_logs, "read")
        add("GET", rf"/services/{u}/applications", self.list_service_apps, "read")
        add("GET", rf"/services/{u}/applications/(?P<app>[^/]+)", self.get_service_app, "read")
        add("PATCH", rf"/services/{u}/applications/(?P<app>[^/]+)", self.update_service_app, "write")
        add("GET", rf"/services/{u}/envs", self.list_envs, "read")
        add("POST", rf"/services/{u}/envs", self.create_env, "write")
        add("PATCH", rf"/services/{u}/envs/bulk", self.bulk_envs, "write")
        add("PATCH", rf"/services/{u}/envs", self.update_env, "write")
        add("DELETE", rf"/services/{u}/envs/(?P<env_uuid>[^/]+)", self.delete_env, "write")
        for action in ("start", "stop", "restart"):
            add("POST", rf"/services/{u}/{action}", getattr(self, f"{action}_service"), "deploy")
            # routes/api.php:273-275, 384-386: the GETs that answer 405 sit behind api.ability:deploy too
            add("GET", rf"/services/{u}/{action}", self.moved_to_post, "deploy")
            add("GET", rf"/applications/{u}/{action}", self.moved_to_post, "deploy")
        # app/Http/Controllers/Api/ScheduledTasksController.php (routes/api.php 417-422; execute since v4.3.0)
        add("GET", rf"/services/{u}/scheduled-tasks", self.list_tasks, "read")
        add("POST", rf"/services/{u}/scheduled-tasks", self.create_task, "write")
        add("PATCH", rf"/services/{u}/scheduled-tasks/(?P<task>[^/]+)", self.update_task, "write")
        add("DELETE", rf"/services/{u}/scheduled-tasks/(?P<task>[^/]+)", self.delete_task, "write")
        add("GET", rf"/services/{u}/scheduled-tasks/(?P<task>[^/]+)/executions", self.task_executions, "read")
        add("POST", rf"/services/{u}/scheduled-tasks/(?P<task>[^/]+)/execute", self.execute_task, "write")
        add("POST", r"/deploy", self.deploy, "deploy")
        add("GET", r"/deploy", self.moved_to_post, "deploy")  # routes/api.php:144
        add("GET", r"/deployments", self.list_deployments, "read")

    def _add(self, method: str, pattern: str, handler: Handler, ability: str | None,
             skip_api_allowed: bool = False) -> None:
        self.routes.append(Route(method, re.compile(pattern + r"/?"), handler, ability, skip_api_allowed))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """First route whose method (HEAD → GET) and full path match."""
        method = "GET" if method == "HEAD" else method
        for route in self.routes:
            if route.method != method:
                continue
            m = route.regex.fullmatch(path)
            if m:
                return route, m.groupdict()
        return None

    # ------------------------------------------------------------------ misc
    def version(self, req: ApiRequest) -> ApiResponse:
        return text(200, self.core.version)

    def enable_api(self, req: ApiRequest) -> ApiResponse:
        return self._switch_api(req, True, "You are not allowed to enable the API.", "API enabled.")

    def disable_api(self, req: ApiRequest) -> ApiResponse:
        return self._switch_api(req, False, "You are not allowed to disable the API.", "API disabled.")

    def _switch_api(self, req: ApiRequest, enabled: bool, forbidden: str, done: str) -> ApiResponse:
        """Set ``api_enabled``: root team (id 0) only."""
        if self._team(req) != 0:
            return jr(403, {"message": forbidden})
        self.core.settings.api_enabled = enabled
        return jr(200, {"message": done})

    def moved_to_post(self, req: ApiRequest, **_: str) -> ApiResponse:
        return jr(405, {"message": "This endpoint has changed to a POST request."}, {"Allow": "POST"})

    def list_deployments(self, req: ApiRequest) -> ApiResponse:
        return jr(200, [])  # services never create ApplicationDeploymentQueue rows

    # ------------------------------------------------------------------ servers / destinations
    def _team(self, req: ApiRequest) -> int:
        assert req.token is not None
        return req.token.team_id

    def _owned(self, req: ApiRequest, rows: dict[str, _Row], uuid: str) -> _Row | None:
        """The row with this uuid if it belongs to the token's team."""
        row = rows.get(uuid)
        return row if row is not None and row.team_id == self._team(req) else None

    def _server_or_404(self, req: ApiRequest, uuid: str) -> Server | ApiResponse:
        server = self._owned(req, self.store.servers, uuid)
        return jr(404, {"message": "Server not found."}) if server is None else server

    def server_json(self, server: Any, *, sensitive: bool = False) -> dict[str, Any]:
        """A server as ServersController shows it; `sentinel_token` only for a request that may read sensitive
        data (ServersController.php:25-37; the setting is hidden by default, ServerSetting.php:136-137)."""
        shown = {"sentinel_token": server.sentinel_token} if sensitive else {}
        return {
            "uuid": server.uuid, "name": server.name, "description": server.description, "ip": server.ip,
            "user": server.user, "port": server.port, "proxy": {"type": server.proxy_type, "status": "running"},
            "proxy_type": server.proxy_type, "high_disk_usage_notification_sent": False,
            "unreachable_notification_sent": False, "unreachable_count": 0, "validation_logs": None,
            "log_drain_notification_sent": False, "swarm_cluster": None,
            "is_reachable": server.is_reachable, "is_usable": server.is_usable,
            "settings": {
                "id": server.id, "server_id": server.id, "is_build_server": server.is_build_server,
                "is_reachable": server.is_reachable, "is_usable": server.is_usable,
                "wildcard_domain": server.wildcard_domain, "concurrent_builds": 2, "deployment_queue_limit": 25,
                "dynamic_timeout": 3600, "force_disabled": False, "force_server_cleanup": False,
                "is_cloudflare_tunnel": False, "is_jump_server": False, "is_metrics_enabled": False,
                "is_sentinel_enabled": False, "is_swarm_manager": False, "is_swarm_worker": False,
                "is_terminal_enabled": True, "docker_cleanup_frequency": "0 0 * * *",
                "docker_cleanup_threshold": 80, "delete_unused_volumes": False, "delete_unused_networks": False,
                "connection_timeout": 10, "created_at": server.created_at, "updated_at": server.updated_at,
                **shown,
            },
            "created_at": server.created_at, "updated_at": server.updated_at,
        }

    def _server_resources(self, server: Any) -> list[dict[str, Any]]:
        out = []
        for svc in sorted(self.store.services.values(), key=lambda s: s.id):
            if svc.server_id == server.id:
                out.append({"id": svc.id, "uuid": svc.uuid, "name": svc.name, "type": "service",
                            "created_at": svc.created_at, "updated_at": svc.updated_at,
                            "status": self.core.service_status(svc)})
        return out

    def list_servers(self, req: ApiRequest) -> ApiResponse:
        with self.store.lock:
            team = self._team(req)
            servers = sorted((s for s in self.store.servers.values() if s.team_id == team), key=lambda s: s.id)
            return jr(200, [self.server_json(s, sensitive=req.sensitive) for s in servers])

    def get_server(self, req: ApiRequest, uuid: str) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            server = self._server_or_404(req, uuid)
            if isinstance(server, ApiResponse):
                return server
            data = self.server_json(server, sensitive=req.sensitive)
            if query_bool(req.query.get("resources"), False):
                data["resources"] = self._server_resources(server)
            return jr(200, data)

    def server_resources(self, req: ApiRequest, uuid: str) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            server = self._server_or_404(req, uuid)
            if isinstance(server, ApiResponse):
                return server
            return jr(200, self._server_resources(server))

    def server_domains(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:
            server = self._server_or_404(req, uuid)
            if isinstance(server, ApiResponse):
                return server
            ip = self.core.settings.public_ip if server.ip == "host.docker.internal" else server.ip
            hosts: list[str] = []
            for svc in self.store.services.values():
                if svc.server_id == server.id:
                    for sub in svc.applications:
                        hosts += [C.url_host_path(u)[0] for u in C.split_urls(sub.fqdn)]
            return jr(200, [{"ip": ip, "domains": sorted(set(hosts))}] if hosts else [])

    def destination_json(self, dest: Any, server: Any) -> dict[str, Any]:
        return {"uuid": dest.uuid, "name": dest.name, "network": dest.network, "type": dest.type,
                "server_uuid": server.uuid, "created_at": dest.created_at, "updated_at": dest.updated_at}

    def server_destinations(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:
            server = self._server_or_404(req, uuid)
            if isinstance(server, ApiResponse):
                return server
            return jr(200, [self.destination_json(d, server) for d in server.destinations])

    def list_destinations(self, req: ApiRequest) -> ApiResponse:
        with self.store.lock:
            team = self._team(req)
            out = [self.destination_json(d, s) for s in sorted(self.store.servers.values(), key=lambda s: s.id)
                   if s.team_id == team for d in s.destinations]
            return jr(200, out)

    def get_destination(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:
            team = self._team(req)
            for server in self.store.servers.values():
                for dest in server.destinations:
                    if dest.uuid == uuid and server.team_id == team:
                        return jr(200, self.destination_json(dest, server))
            return jr(404, {"message": "Destination not found."})

    # ------------------------------------------------------------------ projects / environments
    def _project_or_404(self, req: ApiRequest, uuid: str) -> Project | ApiResponse:
        project = self._owned(req, self.store.projects, uuid)
        return jr(404, {"message": "Project not found."}) if project is None else project

    def _environment_or_404(self, req: ApiRequest, uuid: str, env: str) -> tuple[Project, Environment] | ApiResponse:
        """The project, then its environment by name or uuid (404 for whichever is missing first)."""
        project = self._project_or_404(req, uuid)
        if isinstance(project, ApiResponse):
            return project
        environment = self.core.find_environment(project, env)
        if environment is None:
            return jr(404, {"message": "Environment not found."})
        return project, environment

    @staticmethod
    def env_json(env: Any) -> dict[str, Any]:
        return {"id": env.id, "uuid": env.uuid, "name": env.name, "project_id": env.project_id,
                "description": env.description, "created_at": env.created_at, "updated_at": env.updated_at}

    def list_projects(self, req: ApiRequest) -> ApiResponse:
        with self.store.lock:
            team = self._team(req)
            items = sorted((p for p in self.store.projects.values() if p.team_id == team), key=lambda p: p.id)
            return jr(200, [{"id": p.id, "uuid": p.uuid, "name": p.name, "description": p.description}
                            for p in items])

    def create_project(self, req: ApiRequest) -> ApiResponse:
        data, bad = _validated(req, {"name": _NAME_RULES, "description": _DESCRIPTION_RULES},
                               _NAME_DESCRIPTION_FIELDS, COMBINED_MESSAGES)  # ProjectController.php:248-251
        if bad:
            return bad
        # HasSafeStringAttribute.php:21-24 (Project.php:25): strip_tags, so a null description is stored as ""
        project = self.core.create_project(data["name"], strip_tags(data.get("description")), self._team(req))
        return jr(201, {"uuid": project.uuid})

    def get_project(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:
            project = self._project_or_404(req, uuid)
            if isinstance(project, ApiResponse):
                return project
            return jr(200, {"id": project.id, "uuid": project.uuid, "name": project.name,
                            "description": project.description, "team_id": project.team_id,
                            "created_at": project.created_at, "updated_at": project.updated_at,
                            "environments": [self.env_json(e) for e in self.store.environments_of(project)]})

    def update_project(self, req: ApiRequest, uuid: str) -> ApiResponse:
        # ProjectController.php:367-370
        data, bad = _validated(req, _NAME_DESCRIPTION_UPDATE_RULES, _NAME_DESCRIPTION_FIELDS, COMBINED_MESSAGES)
        if bad:
            return bad
        with self.store.lock:
            project = self._project_or_404(req, uuid)
            if isinstance(project, ApiResponse):
                return project
            if "name" in data and data["name"] is None:
                return server_error(req)  # NOT NULL column: Laravel raises a QueryException
            if "name" in data:
                project.name = data["name"]
            if "description" in data:
                project.description = strip_tags(data["description"])  # HasSafeStringAttribute.php:21-24
            project.updated_at = now_iso(self.core.clock.time())
            return jr(201, {"uuid": project.uuid, "name": project.name, "description": project.description})

    def delete_project(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:
            project = self._project_or_404(req, uuid)
            if isinstance(project, ApiResponse):
                return project
            envs = self.store.environments_of(project)
            if any(self.store.services_in_environment(e) for e in envs):
                return jr(400, {"message": "Project has resources, so it cannot be deleted."})
            for env in envs:
                self.store.environments.pop(env.uuid, None)
            for shared in self.store.shared_envs_of(project):
                self.store.shared_envs.pop(shared.id)
            self.store.projects.pop(project.uuid, None)
            return jr(200, {"message": "Project deleted."})

    # ------------------------------------------------------------------ projects: shared variables
    # app/Http/Controllers/Api/SharedEnvironmentVariablesController.php (type=project). A second create of one key
    # answers 409; the table's unique (key, project_id, team_id) index makes that hold even for racing creates
    # (database/migrations/2024_01_23_113129_create_shared_environment_variables_table.php), which the store's
    # lock gives here. `value` shows only to read:sensitive tokens and never when is_shown_once; `comment` always.
    _SHARED_FIELDS = ("key", "value", "is_literal", "is_multiline", "is_shown_once", "comment")

    @staticmethod
    def _shared_json(env: SharedEnv, sensitive: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"id": env.id, "key": env.key, "is_literal": env.is_literal,
                                "is_multiline": env.is_multiline, "is_shown_once": env.is_shown_once,
                                "comment": env.comment, "type": "project", "created_at": env.created_at,
                                "updated_at": env.updated_at}
        if sensitive and not env.is_shown_once:
            data["value"] = env.value
        return data

    def _shared_input(self, req: ApiRequest, key_required: bool) -> tuple[dict[str, Any], ApiResponse | None]:
        bad = validate_incoming(req)
        if bad:
            return {}, bad
        data = req.input()
        rules = self._env_rules(key_required)
        rules.pop("is_preview")
        bad = _rejected(data, rules, self._SHARED_FIELDS)
        return data, bad

    def project_envs(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:
            project = self._project_or_404(req, uuid)
            if isinstance(project, ApiResponse):
                return project
            return jr(200, [self._shared_json(e, req.sensitive) for e in self.store.shared_envs_of(project)])

    def project_create_env(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:  # SharedEnvironmentVariablesController.php:494-497: the project before the input
            found = self._project_or_404(req, uuid)
            if isinstance(found, ApiResponse):
                return found
        data, bad = self._shared_input(req, key_required=True)
        if bad:
            return bad
        with self.store.lock:
            project = self._project_or_404(req, uuid)
            if isinstance(project, ApiResponse):
                return project
            if any(e.key == data["key"] for e in self.store.shared_envs_of(project)):
                return jr(409, {"message": "Environment variable already exists. Use PATCH request to update it."})
            env = SharedEnv(self.store.next_id("shared_envs"), data["key"], data.get("value"), project.id,
                            comment=data.get("comment"),
                            **{f: to_bool(data[f]) for f in ("is_literal", "is_multiline", "is_shown_once")
                               if data.get(f) is not None})
            self.store.shared_envs[env.id] = env
            return jr(201, {"id": env.id})

    def _shared_or_404(self, req: ApiRequest, uuid: str, env_id: str) -> SharedEnv | ApiResponse:
        project = self._project_or_404(req, uuid)
        if isinstance(project, ApiResponse):
            return project
        if not is_bigint(env_id):  # `where('id', $envId)` on a bigint column (SharedEnvironmentVariablesController:96)
            raise QueryException(f"invalid input syntax for type bigint: {env_id!r}")
        env = self.store.shared_envs.get(int(env_id))
        if env is None or env.project_id != project.id:
            return jr(404, {"message": "Environment variable not found."})
        return env

    def project_update_env(self, req: ApiRequest, uuid: str, env_id: str) -> ApiResponse:
        with self.store.lock:
            env = self._shared_or_404(req, uuid, env_id)
            if isinstance(env, ApiResponse):
                return env
        data, bad = self._shared_input(req, key_required=False)
        if bad:
            return bad
        with self.store.lock:
            for name in ("value", "comment"):
                if name in data:
                    setattr(env, name, data[name])
            env.updated_at = now_iso(self.core.clock.time())
            return jr(200, self._shared_json(env, req.sensitive))

    def project_delete_env(self, req: ApiRequest, uuid: str, env_id: str) -> ApiResponse:
        with self.store.lock:
            env = self._shared_or_404(req, uuid, env_id)
            if isinstance(env, ApiResponse):
                return env
            self.store.shared_envs.pop(env.id)
            return jr(200, {"message": "Environment variable deleted."})

    def list_environments(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:
            project = self._project_or_404(req, uuid)
            if isinstance(project, ApiResponse):
                return project
            return jr(200, [{"id": e.id, "name": e.name, "uuid": e.uuid} for e in self.store.environments_of(project)])

    def create_environment(self, req: ApiRequest, uuid: str) -> ApiResponse:
        """ProjectController.php:624-686 (Validator::make with nameMessages(): Laravel's required message)."""
        data, bad = _validated(req, {"name": _NAME_RULES}, ("name",), NAME_MESSAGES, laravel_required=True)
        if bad:
            return bad
        with self.store.lock:
            project = self._project_or_404(req, uuid)
            if isinstance(project, ApiResponse):
                return project
            if any(e.name == data["name"] for e in self.store.environments_of(project)):  # :666-669, as sent
                return jr(409, {"message": "Environment with this name already exists."})
            stored = self._environment_name(project, data["name"])
            env = self.core.create_environment(project, stored)
            return jr(201, {"uuid": env.uuid})

    def _environment_name(self, project: Project, name: Any, environment: Environment | None = None) -> str:
        """The name an environment is stored under (strip_tags, lower case, trimmed, `/` → `-`:
        app/Models/Environment.php:143-146); one another environment of the project already has breaks the
        unique (name, project_id) index (database/migrations/2023_03_27_075444_create_environments_table.php:19),
        and a longer one than varchar(255): both a QueryException, i.e. a 500."""
        stored = environment_name(name)
        if any(e.name == stored and e is not environment for e in self.store.environments_of(project)):
            raise QueryException(f"duplicate key value violates unique constraint: environments ({stored!r})")
        if column_overflow("environments", {"name": stored}):
            raise QueryException("value too long for type character varying(255): environments.name")
        return stored

    def update_environment(self, req: ApiRequest, uuid: str, env: str) -> ApiResponse:
        data, bad = _validated(req, _NAME_DESCRIPTION_UPDATE_RULES, _NAME_DESCRIPTION_FIELDS, COMBINED_MESSAGES,
                               laravel_required=True)  # ProjectController.php:767-770
        if bad:
            return bad
        with self.store.lock:
            found = self._environment_or_404(req, uuid, env)
            if isinstance(found, ApiResponse):
                return found
            project, environment = found
            new_name = data.get("name")
            if new_name and any(e.name == new_name and e is not environment
                                for e in self.store.environments_of(project)):
                return jr(409, {"message": "Environment with this name already exists."})
            if "name" in data:  # `$environment->update($request->only(...))` (:819): the mutators run
                environment.name = self._environment_name(project, data["name"], environment)
            if "description" in data:
                environment.description = strip_tags(data["description"])  # HasSafeStringAttribute.php:21-24
            environment.updated_at = now_iso(self.core.clock.time())
            return jr(200, {"uuid": environment.uuid, "name": environment.name,
                            "description": environment.description})

    def delete_environment(self, req: ApiRequest, uuid: str, env: str) -> ApiResponse:
        with self.store.lock:
            found = self._environment_or_404(req, uuid, env)
            if isinstance(found, ApiResponse):
                return found
            _, environment = found
            if self.store.services_in_environment(environment):
                return jr(400, {"message": "Environment has resources, so it cannot be deleted."})
            self.store.environments.pop(environment.uuid, None)
            return jr(200, {"message": "Environment deleted."})

    def get_environment(self, req: ApiRequest, uuid: str, env: str) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            found = self._environment_or_404(req, uuid, env)
            if isinstance(found, ApiResponse):
                return found
            _, environment = found
            data = self.env_json(environment)
            for rel in ("applications", "postgresqls", "redis", "mongodbs", "mysqls", "mariadbs"):
                data[rel] = []
            data["services"] = [self.service_json(s, req.sensitive, with_subs=False)
                                for s in self.store.services_in_environment(environment)]
            return jr(200, data)

    # ------------------------------------------------------------------ services: views
    def _service_or_404(self, req: ApiRequest, uuid: str) -> Service | ApiResponse:
        svc = self._owned(req, self.store.services, uuid)
        return jr(404, {"message": "Service not found."}) if svc is None else svc

    def _service_app_or_404(self, req: ApiRequest, uuid: str, app: str) -> tuple[Service, SubResource] | ApiResponse:
        """The service, then its application by uuid (404 for whichever is missing first)."""
        svc = self._service_or_404(req, uuid)
        if isinstance(svc, ApiResponse):
            return svc
        sub = next((a for a in svc.applications if a.uuid == app), None)
        if sub is None:
            return jr(404, {"message": "Service application not found."})
        return svc, sub

    def _last_online(self, sub: SubResource, status: str) -> str | None:
        # docker mode reads the containers at every request: each read is a refresh that finds them
        return now_iso(self.core.clock.time()) if self.core.docker is not None and status.startswith("running") else sub.last_online_at

    def sub_json(self, sub: SubResource, status: str) -> dict[str, Any]:
        common = {"uuid": sub.uuid, "name": sub.name, "human_name": sub.human_name, "description": sub.description,
                  "ports": None, "exclude_from_status": sub.exclude_from_status, "image": sub.image,
                  "is_log_drain_enabled": False, "is_include_timestamps": False, "is_migrated": False,
                  "last_online_at": self._last_online(sub, status), "service_id": sub.service_id, "status": status,
                  "created_at": sub.created_at, "updated_at": sub.updated_at, "deleted_at": None}
        if sub.kind == "application":
            common.update({"fqdn": sub.fqdn, "required_fqdn": False, "is_gzip_enabled": True,
                           "is_stripprefix_enabled": True})
        else:
            common.update({"public_port": None, "is_public": False})
        return common

    def service_json(self, svc: Service, sensitive: bool, with_subs: bool = True) -> dict[str, Any]:
        """The Service model as the API serializes it (``id`` hidden; compose only if sensitive)."""
        server = self.store.server_by_id(svc.server_id)
        subs = self.core.sub_statuses(svc)
        data: dict[str, Any] = {
            "uuid": svc.uuid, "name": svc.name, "environment_id": svc.environment_id, "server_id": svc.server_id,
            "description": svc.description,
            "docker_compose_raw": svc.docker_compose_raw,
            "docker_compose": C.dump_yaml(self.core.generated_compose(svc)),
            "destination_type": "App\\Models\\StandaloneDocker", "destination_id": svc.destination_id,
            "connect_to_docker_network": svc.connect_to_docker_network,
            "is_container_label_escape_enabled": svc.is_container_label_escape_enabled,
            "is_container_label_readonly_enabled": svc.is_container_label_readonly_enabled,
            "config_hash": svc.config_hash, "service_type": svc.service_type,
            "created_at": svc.created_at, "updated_at": svc.updated_at, "deleted_at": None,
            "server_status": bool(server and server.functional),
            "status": self.core.service_status(svc, subs),
        }
        if not sensitive:
            data.pop("docker_compose_raw")
            data.pop("docker_compose")
        if with_subs:
            data["applications"] = [self.sub_json(a, subs.get(a.name, "exited")) for a in svc.applications]
            data["databases"] = [self.sub_json(a, subs.get(a.name, "exited")) for a in svc.databases]
        destination = next((d for d in server.destinations if d.id == svc.destination_id), None) if server else None
        if with_subs and sensitive and server is not None and destination is not None:
            # GET /services/{uuid} loads destination.server.settings for a read:sensitive token
            # (ServicesController.php:832-837): the nested server keeps its `id` and shows its `ip`
            data["destination"] = {
                "id": destination.id, "name": destination.name, "uuid": destination.uuid,
                "network": destination.network, "server_id": server.id, "created_at": destination.created_at,
                "updated_at": destination.updated_at,
                "server": {"id": server.id, **self.server_json(server, sensitive=True)},
            }
        return data

    def list_services(self, req: ApiRequest) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            return jr(200, [self.service_json(s, req.sensitive, with_subs=False)
                            for s in self.store.services_of_team(self._team(req))])

    def get_service(self, req: ApiRequest, uuid: str) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
            return jr(200, self.service_json(svc, req.sensitive))

    def list_service_apps(self, req: ApiRequest, uuid: str) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
            subs = self.core.sub_statuses(svc)
            return jr(200, [self.sub_json(a, subs.get(a.name, "exited")) for a in svc.applications])

    def get_service_app(self, req: ApiRequest, uuid: str, app: str) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            found = self._service_app_or_404(req, uuid, app)
            if isinstance(found, ApiResponse):
                return found
            svc, sub = found
            return jr(200, self.sub_json(sub, self.core.sub_statuses(svc).get(sub.name, "exited")))

    def update_service_app(self, req: ApiRequest, uuid: str, app: str) -> ApiResponse:
        allowed = ("url", "noindex_domains", "human_name", "description", "image", "exclude_from_status",
                   "is_log_drain_enabled", "is_gzip_enabled", "is_stripprefix_enabled")
        rules: dict[str, list[Any]] = {
            "url": ["nullable", "string"], "human_name": ["nullable", "string"],
            "description": ["nullable", "string"], "image": ["nullable", "string"],
            "exclude_from_status": ["nullable", "boolean"],
        }
        data, bad = _validated(req, rules, allowed, body_only=True)
        if bad:
            return bad
        force = query_bool(req.query.get("force_domain_override"), False)
        with self.store.lock:
            found = self._service_app_or_404(req, uuid, app)
            if isinstance(found, ApiResponse):
                return found
            svc, sub = found
            if "url" in data:
                bad = self._apply_urls(svc, [{"name": sub.name, "url": data["url"]}], force)
                if bad:
                    return bad
            for key in ("human_name", "description", "image"):
                if key in data:
                    setattr(sub, key, data[key])
            if data.get("exclude_from_status") is not None:
                sub.exclude_from_status = to_bool(data["exclude_from_status"])
            sub.updated_at = now_iso(self.core.clock.time())
            return jr(200, self.sub_json(sub, self.core.sub_statuses(svc).get(sub.name, "exited")))

    # ------------------------------------------------------------------ services: create / update
    def _decode_compose(self, raw: str) -> dict[str, Any] | ApiResponse:
        """base64 → UTF-8 → YAML (500 when malformed) → injection checks."""
        try:
            text_yaml = C.decode_compose(raw)
        except C.ComposeValidationError as exc:
            return validation_failed({"docker_compose_raw": str(exc)})
        try:
            parsed = C.parse_yaml(text_yaml)
        except C.MalformedYaml:
            return jr(500, {"message": "Server Error"})
        try:
            C.validate_injection(parsed)
        except C.ComposeValidationError as exc:
            return validation_failed({"docker_compose_raw": str(exc)})
        return parsed  # type: ignore[no-any-return]

    def _apply_urls(self, svc: Service, urls: list[Any], force: bool) -> ApiResponse | None:
        """Validate and apply ``urls`` (422 list errors, 409 conflicts unless forced)."""
        errors: list[str] = []
        planned: list[tuple[SubResource, str | None]] = []
        seen: dict[tuple[str, str], str] = {}
        for item in urls:
            name = item.get("name") if isinstance(item, dict) else None
            url = item.get("url") if isinstance(item, dict) else None
            sub = next((a for a in svc.applications if a.name == name), None)
            if sub is None:
                errors.append(f"Service container with '{name}' not found.")
                continue
            cleaned: list[str] = []
            for one in C.split_urls(url):
                scheme = one.split("://", 1)[0].lower() if "://" in one else ""
                host = C.url_host_path(one)[0] if scheme else ""
                if scheme not in ("http", "https") or not host:
                    errors.append(f"Invalid URL: {one}. URLs must start with http:// or https://.")
                    continue
                key = C.url_host_path(one)[:2]
                if key in seen and not force:
                    errors.append(f"The domain {key[0]}{key[1]} is used more than once in the request.")
                seen[key] = one
                cleaned.append(one)
            planned.append((sub, ",".join(cleaned) if cleaned else None))
        if errors:
            return validation_failed(errors)
        if not force:
            reassigned = {id(sub) for sub, _ in planned}
            conflicts: list[dict[str, Any]] = []
            for _sub, value in planned:
                conflicts += self.core.domain_conflicts(C.split_urls(value), exclude=reassigned)
            if conflicts:
                return jr(409, {
                    "message": "Domain conflicts detected. Use force_domain_override=true to proceed.",
                    "conflicts": conflicts,
                    "warning": "Using the same domain for multiple resources can cause routing conflicts and "
                               "unpredictable behavior.",
                })
        for sub, value in planned:
            sub.fqdn = value
            sub.updated_at = now_iso(self.core.clock.time())
            self.core.refresh_magic_envs(svc, sub)
        return None

    def create_service(self, req: ApiRequest) -> ApiResponse:
        """POST /services: app/Http/Controllers/Api/ServicesController.php:360-775, in its order."""
        # :375-413: Validator::make (Laravel's own required messages) on $request->all(), allowlist :362
        rules: dict[str, list[Any]] = {
            "type": ["string", "required_without:docker_compose_raw"],
            "docker_compose_raw": ["string", "required_without:type"],
            "project_uuid": ["string", "required"], "environment_name": ["string", "nullable"],
            "environment_uuid": ["string", "nullable"], "server_uuid": ["string", "required"],
            "destination_uuid": ["string", "nullable"], "name": ["string", "max:255"],  # no `nullable`: null → 422
            "description": ["string", "nullable"], "instant_deploy": _BOOL, "urls": ["array", "nullable"],
            "urls.*": ["array:name,url"], "urls.*.name": ["string", "required"], "urls.*.url": ["string", "nullable"],
            "force_domain_override": _BOOL, "is_container_label_escape_enabled": _BOOL,
            "tags": ["array", "nullable"], "tags.*": ["string", "min:2"],
        }
        data, bad = _validated(req, rules, _SERVICE_CREATE_FIELDS, _URLS_MESSAGES, laravel_required=True)
        if bad:
            return bad
        bad = _checked_tags(req, data)  # :415-418
        if bad:
            return bad
        if data.get("type") and data.get("docker_compose_raw"):  # :420-424
            return jr(422, {"message": "You cannot provide both service type and docker_compose_raw. "
                                       "Use one or the other."})
        if not data.get("environment_name") and not data.get("environment_uuid"):  # :426-430
            return jr(422, {"message": "You need to provide at least one of environment_name or environment_uuid."})
        team = self._team(req)
        with self.store.lock:
            project = self._project_or_404(req, data["project_uuid"])
            if isinstance(project, ApiResponse):
                return project
            envs = self.store.environments_of(project)
            environment = None
            if data.get("environment_name"):
                environment = next((e for e in envs if e.name == data["environment_name"]), None)
            if environment is None and data.get("environment_uuid"):
                environment = next((e for e in envs if e.uuid == data["environment_uuid"]), None)
            if environment is None:
                return jr(404, {"message": "Environment not found."})
            server = self._server_or_404(req, data["server_uuid"])
            if isinstance(server, ApiResponse):
                return server
            if server.is_build_server:
                return validation_failed({"server_uuid": [  # :451-456
                    "The specified server is configured as a build server and cannot host resources."]})
            dests = server.destinations
            if not dests:
                return jr(400, {"message": "Server has no destinations."})
            if len(dests) > 1 and "destination_uuid" not in data:
                return jr(400, {"message": "Server has multiple destinations and you do not set destination_uuid."})
            destination = dests[0]
            if len(dests) > 1:
                found = next((d for d in dests if d.uuid == data["destination_uuid"]), None)
                if found is None:
                    return validation_failed({"destination_uuid": "Provided destination_uuid does not belong to "
                                                                  "the specified server."})
                destination = found
        service_type: str | None = None
        if data.get("type"):
            template = SERVICE_TEMPLATES.get(data["type"])
            if template is None:
                return jr(404, {"message": "Invalid service type.", "valid_service_types": sorted(SERVICE_TEMPLATES)})
            parsed: Any = C.parse_yaml(template)
            service_type = data["type"]
        else:
            # :589-629: the compose branch validates again (`destination_uuid` no longer nullable, a
            # `connect_to_docker_network` was already refused by the first allowlist)
            compose_rules: dict[str, list[Any]] = {
                "project_uuid": ["string", "required"], "environment_name": ["string", "nullable"],
                "environment_uuid": ["string", "nullable"], "server_uuid": ["string", "required"],
                "destination_uuid": ["string"], "name": ["string", "max:255"], "description": ["string", "nullable"],
                "instant_deploy": _BOOL, "connect_to_docker_network": _BOOL,
                "docker_compose_raw": ["string", "required"], "urls": ["array", "nullable"],
                "urls.*": ["array:name,url"], "urls.*.name": ["string", "required"],
                "urls.*.url": ["string", "nullable"], "force_domain_override": _BOOL,
                "is_container_label_escape_enabled": _BOOL, "tags": ["array", "nullable"], "tags.*": ["string", "min:2"],
            }
            bad = _rejected(data, compose_rules, _SERVICE_COMPOSE_FIELDS, _URLS_MESSAGES, laravel_required=True)
            if bad:
                return bad
            result = self._decode_compose(data["docker_compose_raw"])
            if isinstance(result, ApiResponse):
                return result
            parsed = result
        with self.store.lock:
            uuid = new_uuid()
            default_name = f"{service_type}-{uuid}" if service_type else "service-" + random_string(10)
            svc = Service(
                id=self.store.next_id("services"), uuid=uuid, name=data.get("name") or default_name,
                # the API has no pattern for it (ServicesController.php:384, longText column), but the model's
                # HasSafeStringAttribute (app/Traits/HasSafeStringAttribute.php:21-24, Service.php:46) strips tags
                description=strip_tags(data.get("description")), environment_id=environment.id, server_id=server.id,
                destination_id=destination.id, docker_compose_raw="", parsed={}, team_id=team,
                service_type=service_type,
            )
            if "is_container_label_escape_enabled" in data:
                svc.is_container_label_escape_enabled = to_bool(data["is_container_label_escape_enabled"])
            self.store.services[svc.uuid] = svc
            self.core.parse_service(svc, parsed)
            if data.get("urls"):
                bad = self._apply_urls(svc, data["urls"], to_bool(data.get("force_domain_override") or False))
                if bad is not None:
                    self.core.remove_service(svc)
                    return bad
            for tag in data.get("tags") or []:  # HandlesTagsApi.php:130-144, after the service was saved
                if len(tag) < 2:
                    continue
                if column_overflow("tags", {"name": tag}):
                    return server_error(req)  # Tag::createOrFirst fails: the service stays, nothing is started
                self.store.tags.setdefault(tag, new_uuid())
                if tag not in svc.tags:
                    svc.tags.append(tag)
            domains = self.core.domains(svc)
            instant = to_bool(data.get("instant_deploy") or False)
        if instant:
            self.core.queue_action(svc, "start")
        return jr(201, {"uuid": svc.uuid, "domains": domains})

    def update_service(self, req: ApiRequest, uuid: str) -> ApiResponse:
        """PATCH /services/{uuid}: ServicesController.php:1158-1297, in its order."""
        bad = validate_incoming(req)  # :1165-1168
        if bad:
            return bad
        with self.store.lock:  # :1170-1173: the service before the rules
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
        rules: dict[str, list[Any]] = {  # :1179-1210 (Validator::make: Laravel's required messages)
            "name": ["string", "max:255"], "description": ["string", "nullable"],  # name: no `nullable`
            "instant_deploy": _BOOL, "connect_to_docker_network": _BOOL, "docker_compose_raw": ["string", "nullable"],
            "urls": ["array", "nullable"], "urls.*": ["array:name,url"], "urls.*.name": ["string", "required"],
            "urls.*.url": ["string", "nullable"], "force_domain_override": _BOOL,
            "is_container_label_escape_enabled": _BOOL,
        }
        data = req.input()
        bad = _rejected(data, rules, _SERVICE_UPDATE_FIELDS, _URLS_MESSAGES, laravel_required=True)
        if bad:
            return bad
        parsed: Any = None
        if "docker_compose_raw" in data and data["docker_compose_raw"] is None:  # :1211-1219 `has()`: null fails
            return validation_failed({"docker_compose_raw": "The docker_compose_raw should be base64 encoded."})
        if data.get("docker_compose_raw"):
            result = self._decode_compose(data["docker_compose_raw"])
            if isinstance(result, ApiResponse):
                return result
            parsed = result
        with self.store.lock:
            if svc.uuid not in self.store.services:
                return jr(404, {"message": "Service not found."})
            if data.get("name"):
                svc.name = data["name"]
            if "description" in data:  # ServicesController.php:1181 (no pattern), 1250-1251; strip_tags as above
                svc.description = strip_tags(data["description"])
            if data.get("connect_to_docker_network") is not None:
                svc.connect_to_docker_network = to_bool(data["connect_to_docker_network"])
            if data.get("is_container_label_escape_enabled") is not None:
                svc.is_container_label_escape_enabled = to_bool(data["is_container_label_escape_enabled"])
            svc.updated_at = now_iso(self.core.clock.time())
            if parsed is not None:
                self.core.parse_service(svc, parsed)
            if data.get("urls"):
                bad = self._apply_urls(svc, data["urls"], to_bool(data.get("force_domain_override") or False))
                if bad is not None:
                    return bad
            domains = self.core.domains(svc)
        if to_bool(data.get("instant_deploy") or False):
            self.core.queue_action(svc, "start")
        return jr(200, {"uuid": svc.uuid, "domains": domains})

    def delete_service(self, req: ApiRequest, uuid: str) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
        options = {name: query_bool(req.query.get(name), True)
                   for name in ("delete_configurations", "delete_volumes", "docker_cleanup",
                                "delete_connected_networks")}
        self.core.queue_action(svc, "delete", **options)
        return jr(200, {"message": "Service deletion request queued."})

    # ------------------------------------------------------------------ services: logs
    def service_logs(self, req: ApiRequest, uuid: str) -> ApiResponse:
        """ServicesController::logs_by_uuid (:918-959): no validator; `sub_service_name` (query) first (400),
        then the service (404), then the container `<name>-<uuid>` (404 when there is none); `lines` through
        normalizeLogLines (bootstrap/helpers/docker.php:1480-1488: not a positive integer → 100, at most 10000)."""
        self.core.settle()
        data = dict(req.query)
        if not data.get("sub_service_name") or data["sub_service_name"] == "0":
            return jr(400, {"message": "Sub service name is required."})
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
        sub = svc.app(data["sub_service_name"])
        if sub is None:
            return jr(404, {"message": "Container not found."})
        raw_lines = str(data.get("lines") or "").strip()
        lines = int(raw_lines) if re.fullmatch(r"[+-]?\d+", raw_lines) else 100
        lines = 100 if lines <= 0 else min(lines, 10000)
        timestamps = query_bool(data.get("show_timestamps"), False)
        # ServicesController::logs: 404 when the container is gone, 400 when it exists but does not run
        state = self.core.container_state(svc, sub)
        if state is None:
            return jr(404, {"message": "Container not found."})
        if not state.startswith("running"):
            return jr(400, {"message": "Container is not running."})
        if self.core.docker is not None:
            logs = self.core.docker.logs(svc, sub, lines, timestamps)
        else:
            with self.store.lock:
                logs = self.core.pure_logs(svc, sub, lines, timestamps)
        return jr(200, {"logs": logs})

    # ------------------------------------------------------------------ services: envs
    def envvar_json(self, env: EnvVar, svc: Service, sensitive: bool, *, listing: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "uuid": env.uuid, "key": env.key, "value": env.value, "real_value": env.value,
            "is_literal": env.is_literal, "is_multiline": env.is_multiline, "is_shown_once": env.is_shown_once,
            "is_preview": False, "is_shared": False, "is_runtime": True, "is_buildtime": True,
            "is_required": False, "comment": env.comment, "version": self.core.version,
            "resourceable_type": "App\\Models\\Service", "resourceable_id": svc.id, "order": None,
            "created_at": env.created_at, "updated_at": env.updated_at,
        }
        # the model hides both (EnvironmentVariable.php:88-91) and removeSensitiveData shows them only to a
        # read:sensitive token, never for a "shown once" variable, whatever the token (ServicesController.php:64-76;
        # every env answer passes there: :1373 the listing, :1513, :1643, :1785): the keys are absent, not null
        if not sensitive or env.is_shown_once:
            data.pop("value")
            data.pop("real_value")
        return data

    @staticmethod
    def _env_rules(key_required: bool = True) -> dict[str, list[Any]]:
        """environmentVariableKeyRules() (ValidationPatterns.php:159-174: `required`, else `nullable`) and the
        value/flag/comment rules of ServicesController.php:1469-1476, 1622-1629, SharedEnvironmentVariables
        Controller.php:61-68."""
        return {
            "key": (["required"] if key_required else ["nullable"]) + ["string", "max:255",
                                                             lambda k: re.fullmatch(ENV_KEY_PATTERN, k) is not None],
            "value": ["nullable", "string"], "is_preview": _BOOL, "is_literal": _BOOL, "is_multiline": _BOOL,
            "is_shown_once": _BOOL, "comment": ["nullable", "string", "max:256"],
        }

    @staticmethod
    def _env_flags(data: dict[str, Any]) -> dict[str, Any]:
        flags = {f: to_bool(data[f]) for f in _ENV_FLAG_FIELDS if f in data and data[f] is not None}
        if "comment" in data:
            flags["comment"] = data["comment"]
        return flags

    def _update_env(self, env: EnvVar, data: dict[str, Any]) -> None:
        """Overwrite the value and the given flags of an existing variable."""
        env.value = data.get("value")
        for name, value in self._env_flags(data).items():
            setattr(env, name, value)
        env.updated_at = now_iso(self.core.clock.time())

    def _env_input(self, req: ApiRequest, uuid: str) -> tuple[dict[str, Any], Service] | ApiResponse:
        """Create/update prelude: ``validateIncomingRequest()``, the service (404), then the rules (422)."""
        bad = validate_incoming(req)
        if bad:
            return bad
        data = req.input()
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
        bad = _rejected(data, self._env_rules(), _ENV_FIELDS)
        if bad:
            return bad
        return data, svc

    def list_envs(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
            return jr(200, [self.envvar_json(e, svc, req.sensitive, listing=True) for e in self.store.envs_of(svc)])

    def create_env(self, req: ApiRequest, uuid: str) -> ApiResponse:
        found = self._env_input(req, uuid)
        if isinstance(found, ApiResponse):
            return found
        data, svc = found
        with self.store.lock:
            if self.store.env_by_key(svc, data["key"]) is not None:
                return jr(409, {"message": "Environment variable already exists. Use PATCH request to update it."})
            env = self.core.create_env(svc, data["key"], data.get("value"), **self._env_flags(data))
            return jr(201, self.envvar_json(env, svc, True))

    def update_env(self, req: ApiRequest, uuid: str) -> ApiResponse:
        found = self._env_input(req, uuid)
        if isinstance(found, ApiResponse):
            return found
        data, svc = found
        with self.store.lock:
            env = self.store.env_by_key(svc, data["key"])
            if env is None:
                return jr(404, {"message": "Environment variable not found."})
            self._update_env(env, data)
            return jr(201, self.envvar_json(env, svc, True))

    def bulk_envs(self, req: ApiRequest, uuid: str) -> ApiResponse:
        """ServicesController::create_bulk_envs (:1597-1653): no validateIncomingRequest and no allowlist; the
        service (404), then `$request->get('data')` (the query string first), then item by item: the key trimmed
        (:1618-1620), customApiValidator (:1622-1636; items before a bad one stay saved), `updateOrCreate` by
        key with the item's fillable attributes (an omitted value keeps the stored one)."""
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
        bulk = req.query["data"] if "data" in req.query else req.json_bag().get("data") if req.is_json else None
        if bulk in (None, "", "0", 0, False, [], {}):
            return jr(400, {"message": "Bulk data is required."})
        if not isinstance(bulk, (list, dict)):
            raise QueryException("foreach() argument must be of type array|object")  # an ErrorException: 500
        items = list(bulk.values()) if isinstance(bulk, dict) else bulk
        rules = self._env_rules()
        rules.pop("is_preview")
        saved: list[EnvVar] = []
        with self.store.lock:
            for raw in items:
                if not isinstance(raw, dict):  # array_key_exists() on a scalar: a TypeError, 500
                    raise QueryException("array_key_exists(): Argument #2 ($array) must be of type array")
                item = dict(raw)
                if "key" in item:
                    item["key"] = php_trim(json_scalar(item["key"]) if not isinstance(item["key"], str)
                                           else item["key"])
                errors = validate(item, rules)
                if errors:
                    return validation_failed(errors)
                item = {k: v for k, v in item.items() if k in _ENV_FIELDS}
                env = self.store.env_by_key(svc, item["key"])
                if env is None:
                    env = self.core.create_env(svc, item["key"], item.get("value"), **self._env_flags(item))
                else:
                    if "value" in item:
                        env.value = item["value"]
                    for name, value in self._env_flags(item).items():
                        setattr(env, name, value)
                    env.updated_at = now_iso(self.core.clock.time())
                saved.append(env)
            return jr(201, [self.envvar_json(e, svc, True) for e in saved])

    def delete_env(self, req: ApiRequest, uuid: str, env_uuid: str) -> ApiResponse:
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
            env = self.store.envs.get(env_uuid)
            if env is None or env.service_id != svc.id:
                return jr(404, {"message": "Environment variable not found."})
            self.store.envs.pop(env_uuid)
            return jr(200, {"message": "Environment variable deleted."})

    # ------------------------------------------------------------------ services: actions
    def start_service(self, req: ApiRequest, uuid: str) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
            if "running" in self.core.service_status(svc):
                return jr(400, {"message": "Service is already running."})
        self.core.queue_action(svc, "start")
        return jr(200, {"message": "Service starting request queued."})

    def stop_service(self, req: ApiRequest, uuid: str) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
            status = self.core.service_status(svc)
            if "stopped" in status or "exited" in status:
                return jr(400, {"message": "Service is already stopped."})
        self.core.queue_action(svc, "stop", docker_cleanup=query_bool(req.query.get("docker_cleanup"), True))
        return jr(200, {"message": "Service stopping request queued."})

    def restart_service(self, req: ApiRequest, uuid: str) -> ApiResponse:
        self.core.settle()
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
        self.core.queue_action(svc, "restart", latest=query_bool(req.query.get("latest"), False))
        return jr(200, {"message": "Service restarting request queued."})

    def deploy(self, req: ApiRequest) -> ApiResponse:
        self.core.settle()
        body = req.json_bag() if req.is_json else {}
        uuids = req.query.get("uuid") or body.get("uuid")
        tags = req.query.get("tag") or body.get("tag")
        if uuids and tags:
            return jr(400, {"message": "You can only use uuid or tag, not both."})
        if not uuids and not tags:
            return jr(400, {"message": "You must provide uuid or tag."})
        team = self._team(req)
        with self.store.lock:
            targets: list[Service] = []
            if uuids:
                for one in str(uuids).split(","):
                    svc = self._owned(req, self.store.services, one.strip())
                    if svc is not None and svc not in targets:
                        targets.append(svc)
            else:
                names = [t.strip() for t in str(tags).split(",")]
                targets = [s for s in self.store.services_of_team(team) if any(t in s.tags for t in names)]
            if not targets:
                return jr(404, {"message": "No resources found."})
        deployments = []
        for svc in targets:
            self.core.queue_action(svc, "start")
            deployments.append({"message": f"Service {svc.name} started. It could take a while, be patient.",
                                "resource_uuid": svc.uuid})
        return jr(200, {"deployments": deployments})


    # ------------------------------------------------------------------ services: scheduled tasks
    def list_tasks(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
            return jr(200, [t.to_json() for t in self.store.tasks.values() if t.service_id == svc.id])

    def _task_input(self, req: ApiRequest, *, create: bool) -> tuple[dict[str, Any], ApiResponse | None]:
        """ScheduledTasksController::createTask (:53-89) / updateTask (:125-165): validateIncomingRequest, (update:
        an empty input is its own 422), customApiValidator with the six allowed fields (:58-67, :134-143; `timeout`
        is not nullable), then `frequency` must be a cron expression (validate_cron_expression,
        bootstrap/helpers/shared.php:913)."""
        need = ["required"] if create else []
        rules: dict[str, list[Any]] = {"name": [*need, "string", "max:255"], "command": [*need, "string"],
                                       "frequency": [*need, "string"], "container": ["string", "nullable"],
                                       "timeout": ["integer", "min:1"], "enabled": ["boolean"]}
        bad = validate_incoming(req)
        if bad:
            return {}, bad
        data = req.input()
        if not create and not data:
            return data, jr(422, {"message": "At least one field must be provided."})
        bad = _rejected(data, rules, _TASK_FIELDS)
        if bad:
            return data, bad
        if "frequency" in data and not _is_cron(str(data["frequency"])):
            return data, validation_failed({"frequency": ["Invalid cron expression or frequency format."]})
        return data, None

    def create_task(self, req: ApiRequest, uuid: str) -> ApiResponse:
        with self.store.lock:
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
        data, bad = self._task_input(req, create=True)
        if bad:
            return bad
        with self.store.lock:
            task = ScheduledTask(new_uuid(), svc.id, strip_tags(data["name"]), str(data["command"]).strip(),
                                 str(data["frequency"]), data.get("container"), int(data.get("timeout") or 300),
                                 to_bool(data.get("enabled", True)))
            # `$task->save()` (:108): name (strip_tags'd, HasSafeStringAttribute), command, frequency and container
            # are varchar(255) and only `name` has a max rule: a longer command is a 500 and no task
            overflow = column_overflow("scheduled_tasks", {"name": task.name, "command": task.command,
                                                           "frequency": task.frequency, "container": task.container})
            if overflow:
                raise QueryException(f"value too long for type character varying(255): {overflow}")
            self.store.tasks[task.uuid] = task
            return jr(201, task.to_json())

    def _task_or_404(self, req: ApiRequest, uuid: str, task_uuid: str) -> tuple[Service, ScheduledTask] | ApiResponse:
        svc = self._service_or_404(req, uuid)
        if isinstance(svc, ApiResponse):
            return svc
        task = self.store.tasks.get(task_uuid)
        if task is None or task.service_id != svc.id:
            return jr(404, {"message": "Scheduled task not found."})
        return svc, task

    def update_task(self, req: ApiRequest, uuid: str, task: str) -> ApiResponse:
        with self.store.lock:  # the service first (:823-835), the task only after the input (:167-170)
            svc = self._service_or_404(req, uuid)
            if isinstance(svc, ApiResponse):
                return svc
        data, bad = self._task_input(req, create=False)
        if bad:
            return bad
        with self.store.lock:
            found = self._task_or_404(req, uuid, task)
            if isinstance(found, ApiResponse):
                return found
            row = found[1]
            changes = {name: strip_tags(data[name]) if name == "name" else data[name]
                       for name in _TASK_FIELDS if name in data}
            overflow = column_overflow("scheduled_tasks", changes)
            if overflow:
                raise QueryException(f"value too long for type character varying(255): {overflow}")
            for name, value in changes.items():
                setattr(row, name, to_bool(value) if name == "enabled" else int(value) if name == "timeout"
                        else value)
            row.updated_at = now_iso(self.core.clock.time())
            return jr(200, row.to_json())

    def delete_task(self, req: ApiRequest, uuid: str, task: str) -> ApiResponse:
        with self.store.lock:
            found = self._task_or_404(req, uuid, task)
            if isinstance(found, ApiResponse):
                return found
            self.store.tasks.pop(found[1].uuid, None)
            self.store.executions.pop(found[1].uuid, None)
            return jr(200, {"message": "Scheduled task deleted."})

    def task_executions(self, req: ApiRequest, uuid: str, task: str) -> ApiResponse:
        with self.store.lock:
            found = self._task_or_404(req, uuid, task)
            if isinstance(found, ApiResponse):
                return found
            runs = self.store.executions.get(found[1].uuid, [])
            return jr(200, [e.to_json() for e in reversed(runs)])  # newest first

    def execute_task(self, req: ApiRequest, uuid: str, task: str) -> ApiResponse:
        """Queues ScheduledTaskJob (disabled tasks run too: `enabled` is only read by the cron dispatcher);
        no execution uuid comes back: the row appears when a worker picks the job up."""
        with self.store.lock:
            found = self._task_or_404(req, uuid, task)
            if isinstance(found, ApiResponse):
                return found
        self.core.queue_task(*found)
        return jr(200, {"message": "Scheduled task execution queued."})


_TASK_FIELDS = ("name", "command", "frequency", "container", "timeout", "enabled")
_CRON_ALIASES = {"every_minute", "hourly", "daily", "weekly", "monthly", "yearly", "@hourly", "@daily", "@weekly",
                 "@monthly", "@yearly", "@annually", "@midnight"}


def _is_cron(value: str) -> bool:
    """A 5-field cron expression (dragonmantank/cron-expression) or one of the aliases Coolify accepts."""
    if value.strip() in _CRON_ALIASES:
        return True
    fields = value.split()
    return len(fields) == 5 and all(re.fullmatch(r"[\d*/,\-A-Za-z?LW#]+", f) for f in fields)


def _checked_tags(req: ApiRequest, data: dict[str, Any]) -> ApiResponse | None:
    """``validateTagsParameter`` (app/Http/Controllers/Api/Concerns/HandlesTagsApi.php:146-164): the tags are
    normalized in the input (:161), and one shorter than 2 characters after that is a 422. A ``null`` passes the
    rules (``array|nullable``) and then breaks ``normalizeTagNames(array ...)``: a TypeError, so a 500."""
    if "tags" not in data:
        return None
    if not isinstance(data["tags"], (list, dict)):
        return server_error(req)
    tags = tag_names(data["tags"])
    if any(len(tag) < 2 for tag in tags):
        return validation_failed({"tags": ["Each tag name must be at least 2 characters after sanitization."]})
    data["tags"] = tags
    return None


def server_error(req: ApiRequest) -> ApiResponse:
    """Laravel's production 500 (the server layer turns it into HTML unless JSON is wanted)."""
    return jr(500, {"message": "Server Error"})
