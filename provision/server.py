"""The HTTP control plane: the same library behind a small JSON API (FastAPI + uvicorn).

    POST   /v1/projects                 create and provision a project (201 when healthy; 202 with ?wait=false)
    GET    /v1/projects                 every project of the server's env (CLI-made ones too)
    GET    /v1/projects/{id}
    POST   /v1/projects/{id}/stop|start|restart
    DELETE /v1/projects/{id}            keeps the data unless ?delete_data=true
    GET    /healthz

Errors are application/problem+json (RFC 9457). Operations on one project are serialised by the
same file locks as the CLI; different projects run concurrently. Requests made over HTTP are
recorded in the state directory, so a restarted server finishes what a killed one had started.
"""

import hashlib
import hmac
import ipaddress
import secrets as _random
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import names
from .backends.base import Observed
from .core import Provisioner
from .errors import (
    BackendUnavailable,
    ConfigError,
    ConfirmationRequired,
    HealthTimeout,
    InvalidName,
    LockTimeout,
    ProjectNotFound,
    ProvisionError,
)
from .results import ProjectResult
from .secrets import Secret
from .state import read_json, write_json

PROBLEM = "application/problem+json"
IN_FLIGHT = ("requested", "applying", "interrupted")
LIST_CACHE_SECONDS = 2.0


# --- schema ------------------------------------------------------------------------------------
# the CLI's name rule, so that the schema itself says which names are valid
NAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, description="Lowercase DNS label of at most 40 characters; "
                             "generated (12 hex characters) when absent", examples=["shop"], pattern=NAME_PATTERN,
                             max_length=names.PROJECT_MAX)


class ProjectOut(BaseModel):
    id: str
    name: str
    env: str
    backend: str
    status: str = Field(description="provisioning, running, stopped, failed, rolled back, destroyed, ...")
    api_url: str | None
    db_url: str | None = Field(description="Only for authenticated callers")
    error: str | None = None


class ProjectList(BaseModel):
    env: str
    backend: str
    projects: list[ProjectOut]


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None


class Health(BaseModel):
    status: Literal["ok"]
    env: str
    backend: str


def _problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    titles = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 409: "Conflict", 422: "Invalid input",
              423: "Locked", 502: "Backend failure", 503: "Backend unavailable"}
    return {code: {"model": Problem, "description": titles[code], "content": {PROBLEM: {}}} for code in codes}


class ProblemError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def problem_for(exc: ProvisionError) -> ProblemError:
    """The HTTP status for a library error: bad input is 4xx, a failing backend 502/503, never 500."""
    detail = str(exc)
    if isinstance(exc, InvalidName):
        return ProblemError(422, "Invalid input", detail)
    if isinstance(exc, ProjectNotFound):
        return ProblemError(404, "Not found", detail)
    if isinstance(exc, (ConfirmationRequired, ConfigError)):
        return ProblemError(400, "Bad request", detail)
    if isinstance(exc, LockTimeout):
        return ProblemError(423, "Locked", detail)
    if isinstance(exc, BackendUnavailable):
        return ProblemError(503, "Backend unavailable", detail)
    if isinstance(exc, HealthTimeout):
        return ProblemError(502, "Backend failure", detail)
    return ProblemError(502, "Backend failure", detail)


# --- state kept for the API ---------------------------------------------------------------------
@dataclass
class Job:
    status: str = "provisioning"
    error: str | None = None


class ProjectService:
    """What the API does, on top of a Provisioner: requests, background jobs, idempotency keys."""

    def __init__(self, provisioner: Provisioner, *, workers: int = 16) -> None:
        self.provisioner = provisioner
        self.store = provisioner.store
        self.env = provisioner.config.name
        self.backend = provisioner.backend.name
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="api-job")
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()  # reservations and idempotency keys
        self._listing: tuple[float, list[ProjectResult]] | None = None
        self._refreshing = threading.Lock()

    # idempotency keys live in the state directory so that they survive a restart
    def _key_path(self, key: str) -> Any:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.store.root / self.env / ".idempotency" / f"{digest}.json"

    def _taken(self, name: str) -> bool:
        """A live record or something deployed under this name. A destroyed or failed project, or one
        only declared in the env file, may be created (again): its kept data is reattached."""
        status = self.store.read_state(self.env, name).get("status")
        if status is not None and status not in ("destroyed", "failed"):
            return True
        return self.provisioner.backend.observe(self.provisioner.target(name)).exists

    def create(self, name: str | None, *, wait: bool, key: str | None) -> tuple[int, ProjectResult | None, str]:
        """Reserve a name (or return the project an idempotency key already created) and provision it.

        Only the reservation is serialised; checking the backend and provisioning run concurrently
        for different names. Returns (status code, result when finished, project name).
        """
        with self._lock:
            if key:
                known = read_json(self._key_path(key)).get("project")
                if known:
                    return self._replay(str(known))
            if name is None:
                name = _random.token_hex(6)  # 48 random bits: a clash is checked below all the same
            else:
                names.validate_name(name)
                self.provisioner.config.project(name)  # refuses names that collide with declared ones
            if name in self.jobs:
                raise ProblemError(409, "Conflict", f"a project named {name!r} is being created in env {self.env!r}")
            self.jobs[name] = Job()
            if key:
                write_json(self._key_path(key), {"project": name, "at": _now()})
        try:
            if self._taken(name):
                raise ProblemError(409, "Conflict", f"a project named {name!r} already exists in env {self.env!r}")
            previous = self.store.read_state(self.env, name)  # a destroyed project keeps its records
            self.store.write_state(self.env, name, {**previous, "project": name, "env": self.env, "status": "requested",
                                                    "created_via": "api", "requested_at": _now()})
        except BaseException:
            with self._lock:
                self.jobs.pop(name, None)
                if key:
                    self._key_path(key).unlink(missing_ok=True)
            raise
        if not wait:
            self.pool.submit(self._run, name)
            return 202, None, name
        return 201, self._run(name), name

    def _replay(self, name: str) -> tuple[int, ProjectResult | None, str]:
        """The answer to a retried POST: the project its key created, still provisioning (202) or not (201)."""
        job = self.jobs.get(name)
        if job is not None and job.status == "provisioning":
            return 202, None, name
        return 201, None, name

    def _run(self, name: str) -> ProjectResult | None:
        """Provision `name` and record the outcome in the job table; errors are kept, not raised, in the background."""
        try:
            result = self.provisioner.provision(name)
        except ProvisionError as exc:
            self.jobs[name] = Job(status="failed", error=str(exc))
            self._changed()
            return None
        self.jobs.pop(name, None)
        self._changed()
        return result

    def resume(self) -> list[str]:
        """Finish the API requests a previous server process accepted but did not complete."""
        unfinished = [
            project for env, project in self.store.known_projects(self.env)
            if self.store.read_state(env, project).get("created_via") == "api"
            and self.store.read_state(env, project).get("status") in IN_FLIGHT
        ]
        for name in unfinished:
            self.jobs[name] = Job()
            self.pool.submit(self._run, name)
        return unfinished

    def get(self, name: str) -> ProjectResult | Job:
        job = self.jobs.get(name)
        if job is not None:
            return job
        return self.provisioner.status(name).results[0]

    def all_projects(self) -> list[ProjectResult | tuple[str, Job]]:
        """Every project, from a listing at most LIST_CACHE_SECONDS old; an older one is served while a
        fresh one is built in the background (only the first request ever waits for one)."""
        listing = self._listing
        if listing is None:
            with self._refreshing:
                listing = self._listing or self._refresh()
        elif time.monotonic() - listing[0] > LIST_CACHE_SECONDS and self._refreshing.acquire(blocking=False):
            def refresh() -> None:
                try:
                    self._refresh()
                finally:
                    self._refreshing.release()

            self.pool.submit(refresh)
        jobs = dict(self.jobs)
        items: list[ProjectResult | tuple[str, Job]] = [
            (r.project, jobs.pop(r.project)) if r.project in jobs else r for r in listing[1]
        ]
        items.extend(jobs.items())
        return items

    def _refresh(self) -> tuple[float, list[ProjectResult]]:
        observed = self.provisioner.backend.observe_env(self.provisioner.config)
        declared = [p.name for p in self.provisioner.config.projects]
        recorded = {p for _, p in self.store.known_projects(self.env)}
        results = [
            self.provisioner.status_of(self.provisioner.target(name), observed.get(name) or Observed(exists=False))
            for name in declared + sorted((recorded | set(observed)) - set(declared))
        ]
        self._listing = (time.monotonic(), results)
        return self._listing

    def _changed(self) -> None:
        """Something changed through the API: the next listing is built afresh."""
        self._listing = None

    def control(self, name: str, verb: Literal["stop", "start", "restart"]) -> ProjectResult:
        try:
            return self.provisioner.control(name, verb)
        finally:
            self._changed()

    def delete(self, name: str, *, delete_data: bool) -> ProjectResult:
        self.jobs.pop(name, None)
        try:
            return self.provisioner.destroy(name, delete_data=delete_data, yes=True, backup=delete_data)
        finally:
            self._changed()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _out(service: ProjectService, item: ProjectResult | Job, name: str, *, authenticated: bool) -> ProjectOut:
    if isinstance(item, Job):
        return ProjectOut(id=name, name=name, env=service.env, backend=service.backend, status=item.status,
                          api_url=None, db_url=None, error=item.error)
    db_url = item.db_url.reveal() if (item.db_url is not None and authenticated) else None
    return ProjectOut(id=item.project, name=item.project, env=item.env, backend=item.backend, status=item.status,
                      api_url=item.api_url, db_url=db_url, error=item.error)


# --- the app -------------------------------------------------------------------------------------
def create_app(provisioner: Provisioner, *, token: Secret | None, workers: int = 16, resume: bool = True) -> FastAPI:
    """The API over `provisioner`'s env; `token=None` means no authentication (loopback only, checked by `serve`)."""
    service = ProjectService(provisioner, workers=workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if resume:
            unfinished = service.resume()
            if unfinished:
                provisioner.reporter.banner(f"[Provisioning] resuming {len(unfinished)} unfinished request(s): "
                                            f"{', '.join(unfinished)}")
        yield
        service.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="provision", version="1.0", lifespan=lifespan,
                  description=f"Projects of env {service.env!r} on the {service.backend} backend.")
    app.state.service = service

    bearer = HTTPBearer(auto_error=False, description="PROVISION_API_TOKEN")

    def authenticate(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> bool:
        if token is None:
            return False
        offered = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(offered, token.reveal().encode()):
            raise ProblemError(401, "Unauthorized", "a valid bearer token is required (Authorization: Bearer <token>)")
        return True

    Authenticated = Annotated[bool, Depends(authenticate)]

    @app.exception_handler(ProblemError)
    def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="provision"'} if exc.status == 401 else None
        body = Problem(title=exc.title, status=exc.status, detail=exc.detail, instance=request.url.path)
        return JSONResponse(body.model_dump(), status_code=exc.status, media_type=PROBLEM, headers=headers)

    @app.exception_handler(ProvisionError)
    def _provision_error(request: Request, exc: ProvisionError) -> JSONResponse:
        return _problem(request, problem_for(exc))

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(request, ProblemError(422, "Invalid input", _validation_detail(exc.errors()) or "invalid request"))

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(request, ProblemError(exc.status_code, str(exc.detail), str(exc.detail)))

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return Health(status="ok", env=service.env, backend=service.backend)

    @app.post("/v1/projects", status_code=201, response_model=ProjectOut,
              responses={202: {"model": ProjectOut, "description": "Accepted; poll the Location"},
                         **_problem_responses(400, 401, 409, 422, 423, 502, 503)})
    def create_project(
        request: Request,
        authenticated: Authenticated,
        body: ProjectIn | None = None,
        wait: Annotated[bool, Query(description="false: answer 202 at once and provision in the background")] = True,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        code, result, name = service.create(body.name if body else None, wait=wait, key=idempotency_key)
        item: ProjectResult | Job = result if result is not None else service.get(name)
        if isinstance(item, Job) and item.status == "failed" and wait:
            raise ProblemError(502, "Backend failure", item.error or "provisioning failed")
        out = _out(service, item, name, authenticated=authenticated)
        if isinstance(item, Job) and item.status == "provisioning":
            code = 202
        headers = {"Location": f"/v1/projects/{name}"}
        return JSONResponse(out.model_dump(), status_code=code, headers=headers)

    @app.get("/v1/projects", response_model=ProjectList, responses=_problem_responses(401, 502, 503))
    def list_projects(authenticated: Authenticated) -> ProjectList:
        items = []
        for entry in service.all_projects():
            if isinstance(entry, tuple):
                items.append(_out(service, entry[1], entry[0], authenticated=authenticated))
            else:
                items.append(_out(service, entry, entry.project, authenticated=authenticated))
        return ProjectList(env=service.env, backend=service.backend, projects=items)

    ProjectId = Annotated[str, _project_id()]

    @app.get("/v1/projects/{project_id}", response_model=ProjectOut,
             responses=_problem_responses(401, 404, 422, 502, 503))
    def get_project(project_id: ProjectId, authenticated: Authenticated) -> ProjectOut:
        return _out(service, service.get(_checked(project_id)), project_id, authenticated=authenticated)

    def _action(verb: Literal["stop", "start", "restart"]) -> Callable[..., ProjectOut]:
        def act(project_id: ProjectId, authenticated: Authenticated) -> ProjectOut:
            return _out(service, service.control(_checked(project_id), verb), project_id, authenticated=authenticated)

        act.__name__ = f"{verb}_project"
        return act

    for verb in ("stop", "start", "restart"):
        app.post(f"/v1/projects/{{project_id}}/{verb}", response_model=ProjectOut,
                 responses=_problem_responses(401, 404, 422, 423, 502, 503))(_action(verb))

    @app.delete("/v1/projects/{project_id}", response_model=ProjectOut,
                responses=_problem_responses(400, 401, 404, 422, 423, 502, 503))
    def delete_project(project_id: ProjectId, authenticated: Authenticated,
                       delete_data: Annotated[bool, Query(description="also delete the data (a dump is written first on the local backend)")] = False,
                       ) -> ProjectOut:
        return _out(service, service.delete(_checked(project_id), delete_data=delete_data), project_id,
                    authenticated=authenticated)

    return app


def _project_id() -> Any:
    from fastapi import Path as PathParam

    return PathParam(description="The project's id (its name)", pattern=NAME_PATTERN, max_length=names.PROJECT_MAX)


def _validation_detail(errors: Any) -> str:
    """FastAPI's validation errors in words; a bad project name gets the CLI's explanation."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        if where in ("body.name", "path.project_id") and isinstance(error.get("input"), str):
            try:
                names.validate_name(error["input"])
            except InvalidName as exc:
                message = str(exc)
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _checked(project_id: str) -> str:
    """Validate an id from the path: 422 for a malformed one, 404 is decided later."""
    names.validate_name(project_id)
    return project_id


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(provisioner: Provisioner, *, host: str, port: int, token: Secret | None, no_auth: bool) -> None:
    """Run the API with uvicorn until interrupted. Refuses to run without a token unless
    explicitly asked to (`no_auth`) on a loopback address."""
    import uvicorn

    if token is None and not no_auth:
        raise ConfigError("PROVISION_API_TOKEN is not set: set it (callers send Authorization: Bearer <token>), "
                          "or pass --no-auth on a loopback address")
    if token is None and not is_loopback(host):
        raise ConfigError(f"--no-auth is only allowed on a loopback address, not {host!r}: set PROVISION_API_TOKEN")
    app = create_app(provisioner, token=token)
    provisioner.reporter.banner(f"[Provisioning] API on http://{host}:{port} (docs at /docs, auth: "
                                f"{'bearer token' if token else 'none, loopback only'})")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

