"""Bad input of every kind, on the command line and over HTTP, in one table: the documented exit code or status,
a precise message naming the input, no traceback, and nothing created (no state directory, record, port lease,
history line, container, volume or network).

CLI rows run `python -m provision` (the packaged program), or `python -m invoke` (this checkout's tasks.py) where
`via="invoke"`; invoke's own parse errors exit 1 rather than 2 (README), so invoke rows never test those. HTTP rows go to
one of two servers (`invoke serve`) started once for the module: one with a bearer token, one with --no-auth."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.conftest import clean_environment, cleanup_env, leftovers, new_sandbox
from tests.sandbox import Sandbox
from tests.server.conftest import TOKEN, Server, free_port, problem

BAD_ENV = "badenv"
GOOD_ENV_LINES = "images:\n  db: postgres:16-alpine\n  api: postgrest/postgrest:v12.2.3\nprojects:\n  - name: shop\n"
# the test images (tests/images), which are on the engine: for cases about what the engine is asked
TEST_ENV_LINES = "images:\n  db: provision-test/postgres:15\n  api: provision-test/postgrest:12\nprojects:\n  - name: shop\n"
MIB = 1024 * 1024  # the API's body limit
OVER_MIB = b"x" * (MIB + 1)

ServerKind = Literal["token", "no-auth"]


@dataclass(frozen=True)
class HTTPRequest:
    """One request to the module's API servers."""

    method: str
    path: str
    json: Mapping[str, object] | None = None
    body: bytes | None = field(default=None, repr=False)  # raw body (sent without a Content-Type unless headers say)
    headers: tuple[tuple[str, str], ...] = ()
    token: bool = True  # send the token server's bearer token
    chunked: bool = False  # send `body` in pieces, without a Content-Length
    server: ServerKind = "token"


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]  # CLI: after `python -m provision` (or invoke); {env} is the sandbox's env
    code: int  # CLI: the exit code; HTTP: the status
    says: str  # CLI: a fragment of stderr; HTTP: of the problem's title or detail. It names the input
    env_file: str | None = None  # envs/badenv.yml, for cases about the env file
    template: str | None = None  # templates/bad.yml.j2
    secrets: str | None = None  # envs/badenv.env
    via: Literal["provision", "invoke"] = "provision"  # the CLI program (`python -m <via>`)
    http: HTTPRequest | None = None  # an HTTP row: this request instead of a command line


def api(name: str, request: HTTPRequest, status: int, says: str) -> Case:
    return Case(f"HTTP {name}", (), status, says, http=request)


def get(path: str, **kwargs: Any) -> HTTPRequest:
    return HTTPRequest("GET", path, **kwargs)


def post(path: str, **kwargs: Any) -> HTTPRequest:
    return HTTPRequest("POST", path, **kwargs)


def delete(path: str, **kwargs: Any) -> HTTPRequest:
    return HTTPRequest("DELETE", path, **kwargs)


JSON = (("Content-Type", "application/json"),)
INVALID_NAME = "is invalid: use lowercase letters"
MISSPELT_TEMPLATE = (Path(__file__).parents[2] / "provision" / "templates" / "docker-compose.project.yml.j2").read_text(
    encoding="utf-8").replace("    restart: unless-stopped", "    restartt: unless-stopped", 1)

CASES = [
    # flags and arguments
    Case("missing --env", ("provision",), 2, "--env is required"),
    Case("unknown env", ("provision", "--env=nosuch"), 2, "envs/nosuch.yml"),
    Case("a typo of a declared project", ("provision", "--env={env}", "--project=shpo"), 2, "did you mean 'shop'"),
    Case("an undeclared project", ("provision", "--env={env}", "--project=other"), 2, "--create"),
    Case("uppercase project name", ("provision", "--env={env}", "--project=Shop", "--create"), 2, "'Shop'"),
    Case("path in a project name", ("provision", "--env={env}", "--project=../x", "--create"), 2, "'../x'"),
    Case("trailing newline in a name", ("provision", "--env={env}", "--project=shop\n", "--create"), 2, "shop"),
    Case("empty project name", ("provision", "--env={env}", "--project=", "--create"), 2, "project"),
    Case("non-numeric --lock-timeout", ("provision", "--env={env}", "--lock-timeout=abc"), 2, "--lock-timeout 'abc'"),
    Case("negative --lock-timeout", ("provision", "--env={env}", "--lock-timeout=-1"), 2, "--lock-timeout '-1'"),
    Case("non-numeric --parallel", ("provision", "--env={env}", "--parallel=abc"), 2, "--parallel 'abc'"),
    Case("zero --parallel", ("provision", "--env={env}", "--parallel=0"), 2, "--parallel '0'"),
    Case("non-numeric --tail", ("logs", "--env={env}", "--project=shop", "--tail=abc"), 2, "--tail 'abc'"),
    Case("negative --limit", ("history", "--env={env}", "--limit=-3"), 2, "--limit '-3'"),
    Case("non-numeric --port", ("serve", "--env={env}", "--port=abc"), 2, "--port 'abc'"),
    Case("out-of-range --port", ("serve", "--env={env}", "--port=70000"), 2, "--port '70000'"),
    Case("unknown --format", ("outputs", "--env={env}", "--project=shop", "--format=yaml"), 2, "--format"),
    Case("--set without a value", ("provision", "--env={env}", "--set=images.api"), 2, "--set 'images.api'"),
    Case("--set without a key", ("provision", "--env={env}", "--set==x"), 2, "--set '=x'"),
    Case("--set of an unknown key", ("plan", "--env={env}", "--set=imagez.api=x"), 2, "imagez"),
    Case("--delete-data without --yes", ("destroy", "--env={env}", "--project=shop", "--delete-data"), 2, "--yes"),
    Case("outputs without --project", ("outputs", "--env={env}"), 2, "--project is required"),
    Case("destroy without --project", ("destroy", "--env={env}"), 2, "--project is required"),
    Case("outputs of a project never made", ("outputs", "--env={env}", "--project=ghost"), 2, "'ghost'"),
    Case("outputs of a typo of a declared project", ("outputs", "--env={env}", "--project=shpo"), 2,
         "did you mean 'shop'? check the name, or create it: "),
    Case("init with an unknown backend", ("init", "--backend=nomad"), 2, "--backend 'nomad'"),
    Case("history of an invalid env name", ("history", "--env=DEV"), 2, "env name 'DEV' is invalid"),
    Case("history of an env that does not exist", ("history", "--env=nosuch"), 2, "envs/nosuch.yml not found"),
    Case("--root that does not exist", ("--root=/nonexistent/x", "plan", "--env={env}"), 2, "--root '/nonexistent/x'"),
    Case("--root without envs/", ("--root=/proc", "plan", "--env={env}"), 2, "has no envs/ directory"),
    Case("logs of a service the stack does not have", ("logs", "--env={env}", "--project=shop", "--service=nginx"), 2,
         "--service 'nginx'"),
    Case("an unknown flag", ("provision", "--env={env}", "--bogus"), 2, "'--bogus'"),
    Case("an unknown flag of a read-only task", ("status", "--env={env}", "--json", "--bogus"), 2, "'--bogus'"),
    Case("a misspelt task", ("provison", "--env={env}"), 2, "no task 'provison': did you mean 'provision'?"),
    Case("a misspelt flag", ("plan", "--env={env}", "--projcet=shop"), 2, "did you mean '--project'?"),
    Case("--help of a task that does not exist", ("--help", "destory"), 2, "no such task: did you mean 'destroy'?"),
    Case("an Invoke option", ("--hide=both", "plan", "--env={env}"), 2, "unknown flag '--hide'"),
    Case("an Invoke option after the task", ("plan", "--env={env}", "--warn-only"), 2, "unknown flag '--warn-only'"),
    Case("a flag without its value", ("provision", "--env={env}", "--project"), 2, "--project needs a value"),
    Case("a bare --set as the last argument", ("provision", "--env={env}", "--project=shop", "--set"), 2,
         "--set needs a value"),
    Case("a bare --set before another flag", ("plan", "--env={env}", "--set", "--json"), 2, "--set needs a value"),
    Case("a short flag no task has", ("status", "--env={env}", "-s"), 2, "unknown flag '-s'"),
    Case("a path as env name", ("plan", "--env=../etc"), 2, "env name '../etc'"),
    Case("an empty image from --set", ("provision", "--env={env}", "--set=images.api="), 2, "images.api"),
    Case("an image neither on the engine nor pullable", ("provision", "--env={env}",
         "--set=images.db=provision-test/nosuch:1"), 1, "image provision-test/nosuch:1 (images.db in envs/"),
    Case("a project's own image that cannot be had", ("provision", "--env=badenv"), 1,
         "(projects[0].images.api in envs/badenv.yml)",
         env_file=TEST_ENV_LINES + "    images: {api: provision-test/nosuch:2}\n"),
    Case("a cpus limit over the host", ("provision", "--env={env}", "--set=resources.db.cpus=256"), 2,
         "resources.db.cpus in envs/"),
    Case("a memory limit over the host", ("provision", "--env=badenv"), 2,
         "projects[0].resources.api.memory in envs/badenv.yml is 4096.0 GiB",
         env_file=TEST_ENV_LINES + "    resources: {api: {memory: 4T}}\n"),
    Case("a --since that is no time", ("logs", "--env={env}", "--project=shop", "--since=yesterday"), 2,
         "--since 'yesterday'"),
    Case("status of a project never made", ("status", "--env={env}", "--project=ghost"), 2, "'ghost'"),
    # through this checkout's tasks.py (`invoke provision`): the same rules, the same exit codes
    Case("invoke: a space in a project name", ("provision", "--env={env}", "--project=my shop", "--create"), 2,
         "'my shop'", via="invoke"),
    Case("invoke: an uppercase env name", ("plan", "--env=Dev"), 2, "env name 'Dev'", via="invoke"),

    # env files
    Case("unknown top-level key", ("provision", f"--env={BAD_ENV}"), 2, "imagez",
         env_file="imagez:\n  db: x\n  api: y\n"),
    Case("missing image", ("provision", f"--env={BAD_ENV}"), 2, "images.api",
         env_file="images:\n  db: postgres:16-alpine\nprojects: []\n"),
    Case("invalid declared name", ("provision", f"--env={BAD_ENV}"), 2, "projects[0].name",
         env_file="images: {db: a, api: b}\nprojects:\n  - name: Shop!\n"),
    Case("colliding declared names", ("provision", f"--env={BAD_ENV}"), 2, "collides",
         env_file="images: {db: a, api: b}\nprojects:\n  - name: shop\n  - name: shop\n"),
    Case("negative health timeout", ("provision", f"--env={BAD_ENV}"), 2, "health.timeout",
         env_file=GOOD_ENV_LINES + "health:\n  timeout: -5\n"),
    Case("reversed port range", ("provision", f"--env={BAD_ENV}"), 2, "port_range",
         env_file=GOOD_ENV_LINES + "local:\n  port_range: [30010, 30000]\n"),
    Case("unknown backend", ("provision", f"--env={BAD_ENV}"), 2, "backend",
         env_file=GOOD_ENV_LINES + "backend: nomad\n"),
    Case("YAML syntax error", ("provision", f"--env={BAD_ENV}"), 2, f"envs/{BAD_ENV}.yml",
         env_file="images: [db: a\n"),
    Case("not a mapping", ("provision", f"--env={BAD_ENV}"), 2, f"envs/{BAD_ENV}.yml",
         env_file="- just\n- a list\n"),
    Case("missing template", ("provision", f"--env={BAD_ENV}"), 2, "templates/nope.j2",
         env_file=GOOD_ENV_LINES + "template: templates/nope.j2\n"),
    Case("a Coolify env without an owner", ("plan", f"--env={BAD_ENV}"), 2, "owner: missing",
         env_file=GOOD_ENV_LINES + "backend: coolify\n",
         secrets="COOLIFY_API_URL=http://127.0.0.1:9/api/v1\nCOOLIFY_API_TOKEN=1|x\n"),
    Case("a Coolify env without credentials", ("plan", f"--env={BAD_ENV}"), 2, "COOLIFY_API_TOKEN",
         env_file="owner: repo-0001\n" + GOOD_ENV_LINES + "backend: coolify\n"),
    Case("bad owner id", ("provision", f"--env={BAD_ENV}"), 2, "owner",
         env_file="owner: A B\n" + GOOD_ENV_LINES),
    Case("non-scalar variable", ("provision", f"--env={BAD_ENV}"), 2, "variable 'x'",
         env_file=GOOD_ENV_LINES + "variables:\n  x: [1, 2]\n"),
    Case("db_user not an identifier", ("provision", f"--env={BAD_ENV}"), 2, "db_user",
         env_file=GOOD_ENV_LINES + "variables:\n  db_user: Robert'); DROP\n"),
    Case("db_public_port out of range", ("provision", f"--env={BAD_ENV}"), 2, "db_public_port",
         env_file=GOOD_ENV_LINES + "variables:\n  db_public_port: 80\n"),
    Case("a memory limit below the minimum", ("provision", f"--env={BAD_ENV}"), 2, "resources.db.memory: 10M",
         env_file=GOOD_ENV_LINES + "resources:\n  db: {memory: 10M}\n"),
    Case("a size that is no size", ("provision", f"--env={BAD_ENV}"), 2, "projects[0].resources.api.memory: 'lots'",
         env_file="images:\n  db: postgres:16-alpine\n  api: postgrest/postgrest:v12.2.3\nprojects:\n"
                  "  - name: shop\n    resources: {api: {memory: lots}}\n"),
    Case("resources of an unknown service", ("provision", f"--env={BAD_ENV}"), 2, "'web'",
         env_file=GOOD_ENV_LINES + "resources:\n  web: {cpus: 1}\n"),
    Case("a network pool too small", ("provision", f"--env={BAD_ENV}"), 2, "network_pool",
         env_file=GOOD_ENV_LINES + "local:\n  network_pool: 10.0.0.0/30\n"),
    Case("a network pool that is no network", ("provision", f"--env={BAD_ENV}"), 2, "network_pool",
         env_file=GOOD_ENV_LINES + "local:\n  network_pool: not-a-network\n"),
    Case("a variable the template does not use", ("provision", f"--env={BAD_ENV}"), 2, "did you mean 'db_user'",
         env_file=GOOD_ENV_LINES + "variables:\n  db_usr: bob\n"),
    Case("--set of a variable the template does not use", ("plan", "--env={env}", "--set=variables.db_nmae=x"), 2,
         "variables.db_nmae"),
    # templates
    Case("template syntax error", ("provision", f"--env={BAD_ENV}"), 2, "bad.yml.j2",
         env_file=GOOD_ENV_LINES + "template: templates/bad.yml.j2\n", template="services: {{ nope\n"),
    Case("template using an undefined variable", ("provision", f"--env={BAD_ENV}"), 2, "no_such_variable",
         env_file=GOOD_ENV_LINES + "template: templates/bad.yml.j2\n",
         template="services:\n  db:\n    image: {{ no_such_variable }}\n"),
    Case("a misspelt compose key in the template", ("provision", f"--env={BAD_ENV}"), 2,
         "Additional property restartt is not allowed", env_file=GOOD_ENV_LINES + "template: templates/bad.yml.j2\n",
         template=MISSPELT_TEMPLATE),
    Case("invoke: a misspelt compose key in the template", ("provision", f"--env={BAD_ENV}"), 2, "restartt",
         env_file=GOOD_ENV_LINES + "template: templates/bad.yml.j2\n", template=MISSPELT_TEMPLATE, via="invoke"),

    # HTTP: authentication (the token is checked before the body is read)
    api("missing token", get("/v1/projects", token=False), 401, "bearer token"),
    api("wrong token", get("/v1/projects", token=False, headers=(("Authorization", "Bearer wrong"),)), 401,
        "bearer token"),
    api("wrong token on a create", post("/v1/projects", json={"name": "shop"}, token=False,
                                        headers=(("Authorization", "Bearer wrong"),)), 401, "bearer token"),
    api("the token under another scheme", post("/v1/projects", json={"name": "shop"}, token=False,
                                               headers=(("Authorization", f"Basic {TOKEN}"),)), 401,
        "Authorization: Bearer"),
    # HTTP: request bodies
    api("malformed JSON body", post("/v1/projects", body=b'{"name": "shop"', headers=JSON), 422,
        "body: not valid JSON (near character 15)"),
    api("text/plain body with a token", post("/v1/projects", body=b'{"name": "shop"}',
                                             headers=(("Content-Type", "text/plain"),)), 415, "'text/plain'"),
    api("a JSON body that is no object", post("/v1/projects", body=b'["shop"]', headers=JSON), 422,
        "body: Input should be a valid dictionary"),
    api("body over 1 MiB", post("/v1/projects", body=OVER_MIB, headers=JSON), 413,
        f"larger than {MIB} bytes"),
    api("body over 1 MiB without Content-Length", post("/v1/projects", body=OVER_MIB, headers=JSON,
                                                       chunked=True), 413, f"larger than {MIB} bytes"),
    api("uppercase name", post("/v1/projects", json={"name": "Shop"}), 422,
        f"body.name: project name 'Shop' {INVALID_NAME}"),
    api("path in a name", post("/v1/projects", json={"name": "../x"}), 422, f"project name '../x' {INVALID_NAME}"),
    api("trailing newline in a name", post("/v1/projects", json={"name": "shop\n"}), 422,
        f"project name 'shop\\n' {INVALID_NAME}"),
    api("empty name", post("/v1/projects", json={"name": ""}), 422, "body.name: project name is empty"),
    api("name over 40 characters", post("/v1/projects", json={"name": "a" * 41}), 422, "41 characters long"),
    api("name that is no string", post("/v1/projects", json={"name": 42}), 422,
        "body.name: Input should be a valid string"),
    api("unknown field", post("/v1/projects", json={"name": "shop", "size": "xl"}), 422,
        "body.size: Extra inputs are not permitted"),
    # HTTP: query parameters and headers
    api("?wait that is no boolean", post("/v1/projects?wait=maybe", json={"name": "shop"}), 422, "query.wait"),
    api("Idempotency-Key over 255 characters", post("/v1/projects", json={"name": "shop"},
                                                    headers=(("Idempotency-Key", "k" * 256),)), 422,
        "header.idempotency-key"),
    api("?delete_data that is no boolean", delete("/v1/projects/shop?delete_data=maybe"), 422,
        "query.delete_data"),
    # HTTP: project names in the path
    api("uppercase name in the path", get("/v1/projects/Shop"), 422,
        f"path.project_id: project name 'Shop' {INVALID_NAME}"),
    api("trailing newline in the path", get("/v1/projects/shop%0A"), 422,
        f"project name 'shop\\n' {INVALID_NAME}"),
    api("double hyphen in the path of a stop", post("/v1/projects/shop--x/stop"), 422,
        f"project name 'shop--x' {INVALID_NAME}"),
    api("uppercase name in the path of a delete", delete("/v1/projects/Shop?delete_data=true&no_backup=true"), 422,
        f"project name 'Shop' {INVALID_NAME}"),
    api("status of a project never made", get("/v1/projects/ghost"), 404, "project 'ghost' is not declared"),
    api("the 404 names the request that creates it", get("/v1/projects/ghost"), 404,
        'create it: `POST /v1/projects {"name": "ghost"}`'),
    api("restart of a project never made", post("/v1/projects/ghost/restart"), 404,
        "project 'ghost' is not declared"),
    api("delete with its data of a project never made", delete("/v1/projects/ghost?delete_data=true"), 404,
        "project 'ghost' is not declared"),
    # HTTP without a token (--no-auth): loopback Host names and JSON bodies only
    api("foreign Host without a token", get("/v1/projects", server="no-auth", headers=(("Host", "evil.example"),)),
        400, "Host 'evil.example' is not a loopback name"),
    api("DNS-rebound Host without a token", get("/v1/projects", server="no-auth",
                                                headers=(("Host", "127.0.0.1.nip.io:8000"),)), 400,
        "Host '127.0.0.1.nip.io:8000'"),
    api("a Host that starts with localhost", post("/v1/projects", json={"name": "shop"}, server="no-auth",
                                                  headers=(("Host", "localhost.evil.example"),)), 400,
        "Host 'localhost.evil.example'"),
    api("text/plain body without a token", post("/v1/projects", body=b'{"name": "shop"}', server="no-auth",
                                                headers=(("Content-Type", "text/plain"),)), 415, "application/json"),
    api("form body without a token", post("/v1/projects", body=b"name=shop", server="no-auth",
                                          headers=(("Content-Type", "application/x-www-form-urlencoded"),)),
        415, "application/json"),
    api("body without a Content-Type without a token", post("/v1/projects", body=b'{"name": "shop"}',
                                                            server="no-auth"), 415, "application/json"),
    api("body over 1 MiB without a token", post("/v1/projects", body=OVER_MIB, headers=JSON,
                                                server="no-auth"), 413, f"larger than {MIB} bytes"),
    api("uppercase name without a token", post("/v1/projects", json={"name": "Shop"}, server="no-auth"), 422,
        f"project name 'Shop' {INVALID_NAME}"),
]


@dataclass
class APIServers:
    """The module's two API servers over one sandbox, and what its root held once they had started."""

    sandbox: Sandbox
    servers: dict[ServerKind, Server]
    baseline: list[str]


def snapshot(box: Sandbox) -> list[str]:
    """Every path under the sandbox's root (the state dir included), without the servers' own logs."""
    return sorted(str(p.relative_to(box.root)) for p in box.root.rglob("*") if not p.name.startswith("server-"))


@pytest.fixture(scope="module")
def api_servers(tmp_path_factory: pytest.TempPathFactory, test_images: Mapping[str, str]) -> Iterator[APIServers]:
    """`invoke serve` twice on one sandbox (env declaring shop): with a bearer token, and with --no-auth."""
    box = new_sandbox(tmp_path_factory.mktemp("api"), test_images)
    servers: dict[ServerKind, Server] = {}
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:  # the servers' environment is taken at start
            clean_environment(monkeypatch, tmp_path_factory)
            servers["token"] = Server(box, free_port())
            servers["token"].start()
            servers["no-auth"] = Server(box, free_port(), token=None)
            servers["no-auth"].start("--no-auth")
        yield APIServers(box, servers, snapshot(box))
    finally:
        for server in servers.values():
            server.stop()
        cleanup_env(box.env)
    assert leftovers(box.env) == [], f"resources left behind for env {box.env}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_precisely_and_creates_nothing(request: pytest.FixtureRequest, case: Case) -> None:
    if case.http is not None:
        check_http(request.getfixturevalue("api_servers"), case, case.http)
    else:
        check_cli(request.getfixturevalue("sandbox"), case)


def check_cli(sandbox: Sandbox, case: Case) -> None:
    if case.env_file is not None:
        (sandbox.root / "envs" / f"{BAD_ENV}.yml").write_text(case.env_file)
    if case.secrets is not None:
        (sandbox.root / "envs" / f"{BAD_ENV}.env").write_text(case.secrets)
    if case.template is not None:
        (sandbox.root / "templates" / "bad.yml.j2").write_text(case.template)
    before = sorted(p.relative_to(sandbox.root) for p in sandbox.root.rglob("*"))
    argv = [sys.executable, "-m", case.via, *(a.replace("{env}", sandbox.env) for a in case.args)]
    result = subprocess.run(argv, cwd=sandbox.root, env=sandbox.environ(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == case.code, (result.returncode, result.stderr)
    assert case.says in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    if case.code == 2 and "restartt" not in case.says:  # a usage error has no banner before it (a run's
        # per-project failure, or an image the engine cannot get, comes after it)
        assert "[Provisioning]" not in result.stderr
    assert not sandbox.state_dir.exists()  # no record, lease, lock or history line
    assert sorted(p.relative_to(sandbox.root) for p in sandbox.root.rglob("*")) == before
    assert leftovers(sandbox.env) == [] and leftovers(BAD_ENV) == []


def check_http(api: APIServers, case: Case, call: HTTPRequest) -> None:
    server = api.servers[call.server]
    log_path = api.sandbox.root / f"server-{server.port}.log"
    seen = log_path.stat().st_size
    response = send(server, call)
    body = problem(response)  # application/problem+json, its status the response's
    assert response.status_code == case.code, (response.status_code, body)
    assert case.says in f"{body['title']}: {body['detail']}", body
    if case.code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
    new_log = access_logged(log_path, seen, call.method, case.code)
    assert "Traceback" not in new_log and "Exception" not in new_log, new_log
    assert server.proc is not None and server.proc.poll() is None, server.log()
    assert snapshot(api.sandbox) == api.baseline  # no record, lease, lock, idempotency key or history line
    assert leftovers(api.sandbox.env) == []


def send(server: Server, call: HTTPRequest) -> httpx.Response:
    headers = dict(call.headers)
    if call.token and server.token:
        headers.setdefault("Authorization", f"Bearer {server.token}")
    content: bytes | Iterator[bytes] | None = call.body
    if call.chunked and call.body is not None:
        content = pieces(call.body)
    with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
        return client.request(call.method, call.path, json=call.json, content=content, headers=headers)


def pieces(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


def access_logged(log_path: Path, seen: int, method: str, status: int, timeout: float = 10) -> str:
    """What the server logged since `seen` (bytes), once the access line of this request is there: it is
    written after the answer went out, so anything the request logged is in the log by then."""
    line = re.compile(rf"^\d\d:\d\d:\d\d {re.escape(method)} [\s\S]*? {status} \d+\.\d+s$", re.MULTILINE)
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_bytes()[seen:].decode(errors="replace")
        if line.search(text) or time.monotonic() > deadline:
            assert line.search(text), f"no access line for {method} ... {status}:\n{text}"
            return text
        time.sleep(0.05)


def test_list_fails_when_every_env_was_skipped(sandbox: Sandbox) -> None:
    (sandbox.root / "envs" / f"{sandbox.env}.yml").write_text(
        "owner: repo-0001\nbackend: coolify\nimages: {db: a, api: b}\n")  # no Coolify credentials
    result = subprocess.run([sys.executable, "-m", "invoke", "list"], cwd=sandbox.root, env=sandbox.environ(),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and "every env was skipped" in result.stderr and "COOLIFY_API_TOKEN" in result.stderr


def test_there_are_at_least_forty_cases() -> None:
    cli = [c for c in CASES if c.http is None]
    http = [c for c in CASES if c.http is not None]
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
    assert len(cli) >= 10 and len(http) >= 10
    assert {c.via for c in cli} == {"provision", "invoke"}
    assert {c.http.server for c in http if c.http is not None} == {"token", "no-auth"}
    assert all(not c.args and c.env_file is c.template is c.secrets is None for c in http)
