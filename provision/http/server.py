"""The HTTP control plane: the same library behind a small JSON API (FastAPI + uvicorn).

    POST   /v1/projects                 create and provision a project (201 when healthy; 202 with ?wait=false)
    GET    /v1/projects                 every project of the server's env (CLI-made ones too)
    GET    /v1/projects/{id}
    POST   /v1/projects/{id}/stop|start|restart
    DELETE /v1/projects/{id}            keeps the data unless ?delete_data=true (?leave_branches=true: a parent)
    GET    /healthz
    GET    /docs, /openapi.json         the API's documentation (apidocs.py: a page that needs no internet)

With a token every route needs it but /healthz, /docs and /openapi.json: those are readable by a browser,
which never sends a bearer token on its own (the schema holds the routes and the env's name, no secret and
no project). Errors are application/problem+json (RFC 9457). Without a token (`--no-auth`, loopback only) a request must
name a loopback Host, must not come from another site (Origin, Sec-Fetch-Site) and, when it changes something
(POST, PUT, PATCH, DELETE), must be sent as application/json even without a body. Operations on one project
are serialised by the same file locks as the CLI; different projects run concurrently. Requests made over HTTP are
recorded in the state directory, so a restarted server finishes what a killed one had started.
"""

import hmac
import ipaddress
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core import names
from ..core.errors import (
    BackendUnavailable,
    ConfigError,
    ConfirmationRequired,
    HealthTimeout,
    IdempotencyMismatch,
    InvalidName,
    LockTimeout,
    ProjectConflict,
    ProjectNotFound,
    ProvisionError,
    UnexpectedError,
)
from ..core.model import ControlVerb
from ..core.results import ProjectResult
from ..core.secrets import Secret
from ..infra import hints, incidents
from ..service import Provisioner
from ..service.requests import Job, ProjectRequests
from . import apidocs

PROBLEM = "application/problem+json"
CHALLENGE = 'Bearer realm="provision"'  # WWW-Authenticate of every 401
log = logging.getLogger("provision")


# --- schema ------------------------------------------------------------------------------------
def project_in(min_length: int) -> type[BaseModel]:
    """The create body, with the service's name rule (names.NAME_PATTERN, the env's length limits) in its schema."""

    class ProjectIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str | None = Field(default=None, description="Lowercase DNS label of at most 40 characters; "
                                 "generated (12 hex characters) when absent", examples=["shop"],
                                 pattern=names.NAME_PATTERN, min_length=min_length, max_length=names.PROJECT_MAX)

    return ProjectIn


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
    titles = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden (without a token: a request from another site)",
              404: "Not found", 409: "Conflict", 413: "Payload too large",
              415: "Unsupported media type", 422: "Invalid input", 423: "Locked", 500: "Unexpected error (a bug; the detail names the incident id in the server log)",
              502: "Backend failure", 503: "Backend unavailable"}
    return {code: {"model": Problem, "description": titles[code], "content": {PROBLEM: {}}} for code in codes}


class ProblemError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def problem_for(exc: ProvisionError) -> ProblemError:
    """The HTTP status for a library error: bad input is 4xx, a failing backend 502/503, a bug 500."""
    detail = str(exc)
    if isinstance(exc, UnexpectedError):
        return ProblemError(500, "Unexpected error", detail)
    if isinstance(exc, (InvalidName, IdempotencyMismatch)):
        return ProblemError(422, "Invalid input", detail)
    if isinstance(exc, ProjectNotFound):
        return ProblemError(404, "Not found", detail)
    if isinstance(exc, ProjectConflict):
        return ProblemError(409, "Conflict", detail)
    if isinstance(exc, (ConfirmationRequired, ConfigError)):
        return ProblemError(400, "Bad request", detail)
    if isinstance(exc, LockTimeout):
        return ProblemError(423, "Locked", detail)
    if isinstance(exc, BackendUnavailable):
        return ProblemError(503, "Backend unavailable", detail)
    if isinstance(exc, HealthTimeout):
        return ProblemError(502, "Backend failure", detail)
    return ProblemError(502, "Backend failure", detail)


def _out(service: ProjectRequests, item: ProjectResult | Job, name: str, *, authenticated: bool) -> ProjectOut:
    if isinstance(item, Job):
        return ProjectOut(id=name, name=name, env=service.env, backend=service.backend, status=item.status,
                          api_url=None, db_url=None, error=item.error)
    db_url = item.db_url.reveal() if (item.db_url is not None and authenticated) else None
    return ProjectOut(id=item.project, name=item.project, env=item.env, backend=item.backend, status=item.status,
                      api_url=item.api_url, db_url=db_url, error=item.error)


# --- the app -------------------------------------------------------------------------------------
def create_app(provisioner: Provisioner, *, token: Secret | None, workers: int = 16, resume: bool = True,
               access_log: Callable[[str], None] | None = None) -> FastAPI:
    """The API over `provisioner`'s env; `token=None` means no authentication (loopback only, checked by `serve`)."""
    service = ProjectRequests(provisioner, workers=workers)
    ProjectIn = project_in(service.min_name_length)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if resume:
            unfinished = service.resume()
            if unfinished:
                provisioner.reporter.banner(f"[Provisioning] resuming {len(unfinished)} unfinished request(s): "
                                            f"{', '.join(unfinished)}")
        yield
        service.shutdown()

    app = FastAPI(title="provision", version="1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None,  # Swagger UI and ReDoc load from a CDN: /docs is our own
                  description=f"Projects of env {service.env!r} on the {service.backend} backend.")
    app.state.service = service
    app.add_middleware(Guard, token=token, log=access_log or _access_logger())

    bearer = HTTPBearer(auto_error=False, description="PROVISION_API_TOKEN")

    def authenticate(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> bool:
        """Whether the caller is authenticated: the Guard refused every request to a route without the token,
        so one that gets here is exactly when the server has a token (`credentials` documents the scheme)."""
        return token is not None

    Authenticated = Annotated[bool, Depends(authenticate)]

    @app.exception_handler(ProblemError)
    def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        headers = {"WWW-Authenticate": CHALLENGE} if exc.status == 401 else None
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
        title = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}.get(exc.status_code,
                                                                                           str(exc.detail))
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":  # the router's: no route has this path
            detail = f"no route {request.url.path!r}: see /docs for the API's routes"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path!r}"
        return _problem(request, ProblemError(exc.status_code, title, detail))

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """The API's documentation, rendered in the browser from /openapi.json with nothing from elsewhere."""
        return HTMLResponse(apidocs.PAGE, headers=dict(apidocs.HEADERS))

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return Health(status="ok", env=service.env, backend=service.backend)

    @app.post("/v1/projects", status_code=201, response_model=ProjectOut,
              responses={202: {"model": ProjectOut, "description": "Accepted; poll the Location"},
                         **_problem_responses(400, 401, 403, 409, 413, 415, 422, 423, 500, 502, 503)})
    def create_project(
        request: Request,
        authenticated: Authenticated,
        body: ProjectIn | None = None,  # type: ignore[valid-type]
        wait: Annotated[bool, Query(description="false: answer 202 at once and provision in the background")] = True,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        accepted = service.create(body.name if body else None, wait=wait, key=idempotency_key)  # type: ignore[attr-defined]
        name = accepted.project
        item: ProjectResult | Job = accepted.result if accepted.result is not None else service.get(name)
        if isinstance(item, Job) and item.status == "failed" and wait:
            failure, title = (500, "Unexpected error") if item.unexpected else (502, "Backend failure")
            raise ProblemError(failure, title, item.error or "provisioning failed")
        out = _out(service, item, name, authenticated=authenticated)
        code = 202 if isinstance(item, Job) and item.status == "provisioning" else 201
        headers = {"Location": f"/v1/projects/{name}"}
        return JSONResponse(out.model_dump(), status_code=code, headers=headers)

    @app.get("/v1/projects", response_model=ProjectList, responses=_problem_responses(401, 403, 500, 502, 503))
    def list_projects(authenticated: Authenticated) -> ProjectList:
        items = [_out(service, item, name, authenticated=authenticated) for name, item in service.all_projects()]
        return ProjectList(env=service.env, backend=service.backend, projects=items)

    ProjectId = Annotated[str, _project_id(service.min_name_length)]

    @app.get("/v1/projects/{project_id}", response_model=ProjectOut,
             responses=_problem_responses(401, 403, 404, 422, 500, 502, 503))
    def get_project(project_id: ProjectId, authenticated: Authenticated) -> ProjectOut:
        return _out(service, service.get(_checked(project_id)), project_id, authenticated=authenticated)

    def _action(verb: ControlVerb) -> Callable[..., ProjectOut]:
        def act(project_id: ProjectId, authenticated: Authenticated) -> ProjectOut:
            return _out(service, service.control(_checked(project_id), verb), project_id, authenticated=authenticated)

        act.__name__ = f"{verb}_project"
        return act

    verbs: tuple[ControlVerb, ...] = ("stop", "start", "restart")
    for verb in verbs:
        app.post(f"/v1/projects/{{project_id}}/{verb}", response_model=ProjectOut,
                 responses=_problem_responses(401, 403, 404, 409, 415, 422, 423, 500, 502, 503))(_action(verb))

    @app.delete("/v1/projects/{project_id}", response_model=ProjectOut,
                responses=_problem_responses(400, 401, 403, 404, 415, 422, 423, 500, 502, 503))
    def delete_project(project_id: ProjectId, authenticated: Authenticated,
                       delete_data: Annotated[bool, Query(description="also delete the data (a pg_dump is written first; the Coolify backend cannot, and needs no_backup=true)")] = False,
                       no_backup: Annotated[bool, Query(description="with delete_data: skip the pg_dump")] = False,
                       leave_branches: Annotated[bool, Query(description="destroy a parent that has live branches (they keep running)")] = False,
                       ) -> ProjectOut:
        deleted = service.delete(_checked(project_id), delete_data=delete_data, backup=not no_backup,
                                 leave_branches=leave_branches)
        return _out(service, deleted, project_id, authenticated=authenticated)

    return app


# --- the outermost guard ----------------------------------------------------------------------------
MAX_BODY = 1024 * 1024  # bytes; the largest real body is a project name
OPEN_PATHS = ("/healthz",)  # served to anyone, with or without a token
DOC_PATHS = ("/docs", "/openapi.json")  # with a token: served without it (a browser sends none)
CHANGING = ("POST", "PUT", "PATCH", "DELETE")  # without a token: sent as application/json, body or not
SAME_SITE = ("same-origin", "none")  # the Sec-Fetch-Site values served without a token (none: typed, bookmarked)


class Guard:
    """ASGI middleware in front of everything: the bearer token is checked before the body is read; bodies
    over MAX_BODY answer 413, bodies not sent as application/json 415. Without a token (loopback only) no web
    page may drive the API: a request must name a loopback Host (no DNS-rebound name), must not come from
    another site (an Origin that is not a loopback origin, or a Sec-Fetch-Site other than same-origin/none:
    403), and every POST, PUT, PATCH and DELETE must be sent as application/json even without a body (415):
    a page can send a form or a simple fetch to any address, but not that Content-Type without a CORS
    preflight, which this API never grants. An unexpected exception is the 500 problem+json with its
    incident id, on a connection kept alive. One access line per request (method, path as sent, status,
    duration: never a header or a body)."""

    def __init__(self, app: Any, *, token: Secret | None, log: Callable[[str], None]) -> None:
        self.app = app
        self.token = token
        self.log = log

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status: list[int] = [0]
        path = str(scope.get("path") or "")
        logged_path = bytes(scope.get("raw_path") or path.encode()).decode("latin-1")  # still %-encoded: one line

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            refusal = self._refusal(scope, path)
            if refusal is not None:
                await _send_problem(sending, path, *refusal)
                return
            try:
                await self.app(scope, _limited(receive), sending)
            except Exception as exc:
                # answered here, not by Starlette's ServerErrorMiddleware (outside this guard), which re-raises
                # after its 500: the server then drops the connection and this line would log no status
                if status[0]:
                    raise  # the response had begun: nothing more can be said on it
                problem = problem_for(incidents.record(exc))
                await _send_problem(sending, path, problem.status, problem.title, problem.detail)
        finally:
            self.log(f'{scope.get("method")} {logged_path} {status[0] or "-"} {time.monotonic() - started:.3f}s')

    def _refusal(self, scope: dict[str, Any], path: str) -> tuple[int, str, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        if path not in OPEN_PATHS:
            if self.token is not None and path in DOC_PATHS and str(scope.get("method")).upper() in ("GET", "HEAD"):
                pass  # the documentation: no secret in it, and a browser can read it
            elif self.token is not None:
                scheme, _, offered = headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(offered.strip().encode(),
                                                                         self.token.reveal().encode()):
                    return 401, "Unauthorized", "a valid bearer token is required (Authorization: Bearer <token>)"
            else:
                host = headers.get("host", "")
                if not is_loopback(_hostname(host)):
                    return 400, "Bad request", (f"Host {_shown(host)!r} is not a loopback name: without a token this API "
                                                f"answers only requests to 127.0.0.1, ::1 or localhost")
                origin = headers.get("origin")
                if origin is not None and not is_loopback_origin(origin):
                    return 403, "Forbidden", (f"Origin {_shown(origin)!r} is not a loopback origin: without a token "
                                              f"this API answers no web page of another site")
                site = headers.get("sec-fetch-site")
                if site is not None and site.strip().lower() not in SAME_SITE:
                    return 403, "Forbidden", (f"Sec-Fetch-Site {_shown(site)!r}: without a token this API answers "
                                              f"no request a browser sent for a page of another site")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return 413, "Payload too large", f"the request body is larger than {MAX_BODY} bytes"
        has_body = (length.isdigit() and int(length) > 0) or "chunked" in headers.get("transfer-encoding", "")
        sent_type = headers.get("content-type", "")
        if _media_type(sent_type) != "application/json":
            if has_body:
                return 415, "Unsupported media type", (f"the body was sent as {_shown(sent_type) or 'no Content-Type'!r}:"
                                                       f" send it as application/json")
            if self.token is None and str(scope.get("method")).upper() in CHANGING:
                return 415, "Unsupported media type", (f"without a token every POST, PUT, PATCH and DELETE is sent "
                                                       f"with Content-Type: application/json, even without a body "
                                                       f"(got {_shown(sent_type) or 'none'!r})")
        return None


def _limited(receive: Callable[..., Any]) -> Callable[..., Any]:
    """`receive` that stops a body (sent without a Content-Length) once it passes MAX_BODY: 413."""
    seen = [0]

    async def limited() -> Any:
        message = await receive()
        if message.get("type") == "http.request":
            seen[0] += len(message.get("body") or b"")
            if seen[0] > MAX_BODY:
                raise StarletteHTTPException(413, f"the request body is larger than {MAX_BODY} bytes")
        return message

    return limited


async def _send_problem(send: Callable[..., Any], path: str, status: int, title: str, detail: str) -> None:
    """The problem+json answer the app's handler gives, sent before the app is reached."""
    body = Problem(title=title, status=status, detail=detail, instance=path).model_dump_json().encode()
    headers = [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", CHALLENGE.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _hostname(host: str) -> str:
    """The name in a Host header, without its port ('[::1]:8000' -> '::1')."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _access_logger() -> Callable[[str], None]:
    """One line per request on stderr: time, method, path, status, duration (no headers, no bodies)."""
    logger = logging.getLogger("provision.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger.info


def _project_id(min_length: int) -> Any:
    return PathParam(description="The project's id (its name)", pattern=names.NAME_PATTERN,
                     min_length=min_length, max_length=names.PROJECT_MAX)


MAX_ERRORS = 20  # validation errors listed in a 422's detail; the others are counted
MAX_SHOWN = 200  # characters of a value from the request shown in an answer (a location, a header)


def _validation_detail(errors: Sequence[Any]) -> str:
    """FastAPI's validation errors in words, at most MAX_ERRORS of them (a 1 MiB body of unknown keys is
    tens of thousands), each value from the request cut to MAX_SHOWN; a bad project name gets the CLI's
    explanation."""
    parts = []
    for error in errors[:MAX_ERRORS]:
        where = _shown(".".join(str(p) for p in error.get("loc", ())))
        message = str(error.get("msg", "invalid"))
        if where in ("body.name", "path.project_id") and isinstance(error.get("input"), str):
            try:
                names.validate_name(error["input"])
            except InvalidName as exc:
                message = str(exc)
        if error.get("type") == "json_invalid":
            where, message = "body", f"not valid JSON (near character {error.get('loc', ('', '?'))[-1]})"
        parts.append(f"{where}: {_shown(message, 2 * MAX_SHOWN)}")
    if len(errors) > MAX_ERRORS:
        parts.append(f"and {len(errors) - MAX_ERRORS} more (only the first {MAX_ERRORS} errors are listed)")
    return "; ".join(parts)


def _shown(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` as an answer may repeat it: at most `limit` characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _checked(project_id: str) -> str:
    """Validate an id from the path: 422 for a malformed one, 404 is decided later."""
    names.validate_name(project_id)
    return project_id


def _media_type(content_type: str) -> str:
    """'Application/JSON; charset=utf-8' -> 'application/json'."""
    return content_type.partition(";")[0].strip().lower()


def is_loopback_origin(origin: str) -> bool:
    """Whether an Origin header names a page served from this machine: http(s)://127.0.0.1, localhost or
    [::1], with or without a port ('null', a path, credentials or any other name: no)."""
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and not (parts.path or parts.query or parts.fragment)
            and "@" not in parts.netloc and is_loopback(parts.hostname or ""))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(provisioner: Provisioner, *, host: str, port: int, token: Secret | None, no_auth: bool,
          workers: int = 16) -> None:
    """Run the API with uvicorn until interrupted. Refuses to run without a token unless
    explicitly asked to (`no_auth`) on a loopback address."""
    import uvicorn

    if token is None and not no_auth:
        raise ConfigError("PROVISION_API_TOKEN is not set: set it (callers send Authorization: Bearer <token>), "
                          "or pass --no-auth on a loopback address")
    if token is None and not is_loopback(host):
        raise ConfigError(f"--no-auth is only allowed on a loopback address, not {host!r}: set PROVISION_API_TOKEN")
    hints.use_http()  # what errors suggest goes to HTTP callers from now on
    if token is not None and no_auth:
        provisioner.reporter.warn("--no-auth is ignored: PROVISION_API_TOKEN is set, so every route but /healthz, "
                                  "/docs and /openapi.json needs it; unset PROVISION_API_TOKEN to run without a "
                                  "token (loopback only)")
    app = create_app(provisioner, token=token, workers=workers)
    provisioner.reporter.banner(f"[Provisioning] API on http://{host}:{port} (docs at /docs, auth: "
                                f"{'bearer token; /docs needs none' if token else 'none, loopback only'})")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

