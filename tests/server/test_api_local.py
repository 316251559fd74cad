"""The HTTP API started for real (uvicorn), on the local Docker Engine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import _docker, reload_schema, sql
from tests.sandbox import Sandbox
from tests.server.conftest import JSON, TOKEN, Server, free_port, problem, run_server
from tests.waiting import wait_until

pytestmark = pytest.mark.docker


def test_full_lifecycle_over_http(sandbox: Sandbox, server_factory: list[Server]) -> None:
    server = run_server(server_factory, sandbox)
    api = server.client()
    assert api.get("/healthz").json() == {"status": "ok", "env": sandbox.env, "backend": "local"}
    assert "/v1/projects" in api.get("/openapi.json").json()["paths"]
    assert api.get("/docs").status_code == 200

    created = api.post("/v1/projects", json={"name": "web"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == "web" and body["status"] == "running" and body["backend"] == "local"
    assert body["api_url"].startswith("http://127.0.0.1:") and body["db_url"].startswith("postgresql://app:")
    sql(body["db_url"], "CREATE TABLE t (v int); INSERT INTO t VALUES (1); GRANT SELECT ON t TO anon")
    reload_schema(body["db_url"], body["api_url"], "t")
    assert httpx.get(body["api_url"] + "/t", timeout=10).json() == [{"v": 1}]
    schema = httpx.get(server.url + "/openapi.json", trust_env=False).text  # no token: holds nothing secret
    assert TOKEN not in schema and "web" not in schema and not any(v in schema for v in sandbox.secrets("web").values())

    assert api.get("/v1/projects/web").json()["status"] == "running"
    assert "web" in [p["id"] for p in api.get("/v1/projects").json()["projects"]]
    assert api.post("/v1/projects/web/stop").json()["status"] == "stopped"
    assert api.post("/v1/projects/web/start").json()["status"] == "running"
    assert api.post("/v1/projects/web/restart").json()["status"] == "running"
    assert sql(body["db_url"], "SELECT v FROM t") == [(1,)]

    generated = api.post("/v1/projects", json={})
    assert generated.status_code == 201 and re.fullmatch(r"[0-9a-f]{12}", generated.json()["id"])

    conflict = api.post("/v1/projects", json={"name": "web"})
    assert conflict.status_code == 409 and "already exists" in problem(conflict)["detail"]
    assert api.get("/v1/projects/nothing-here").status_code == 404
    for bad in ("Bad Name", "../x", "x" * 200, "x;rm -rf /"):
        response = api.post("/v1/projects", json={"name": bad})
        assert response.status_code == 422, response.text
        problem(response)
    assert api.post("/v1/projects", json={"name": 5}).status_code == 422
    assert api.post("/v1/projects", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422

    deleted = api.delete("/v1/projects/web")
    assert deleted.status_code == 200 and deleted.json()["status"] == "destroyed"
    assert _docker("volume", "inspect", f"web_{sandbox.env}_pgdata").returncode == 0  # data kept
    again = api.post("/v1/projects", json={"name": "web"})  # re-creating reattaches the kept data
    assert again.status_code == 201 and sql(again.json()["db_url"], "SELECT v FROM t") == [(1,)]
    gone = api.delete("/v1/projects/web", params={"delete_data": "true"})
    assert gone.json()["status"] == "deleted"
    assert _docker("volume", "inspect", f"web_{sandbox.env}_pgdata").returncode != 0
    api.delete(f"/v1/projects/{generated.json()['id']}", params={"delete_data": "true"})


def test_auth(sandbox: Sandbox, server_factory: list[Server]) -> None:
    server = run_server(server_factory, sandbox)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        response = httpx.get(server.url + "/v1/projects", headers=headers, trust_env=False)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        problem(response)
        assert TOKEN not in response.text
    assert httpx.post(server.url + "/v1/projects", json={"name": "x"}, trust_env=False).status_code == 401
    assert httpx.get(server.url + "/healthz", trust_env=False).status_code == 200
    assert TOKEN not in server.log()


def test_db_url_only_for_authenticated_callers(sandbox: Sandbox, server_factory: list[Server]) -> None:
    server = run_server(server_factory, sandbox, "--no-auth", token=None)
    api = server.client(token=None)
    created = api.post("/v1/projects", json={"name": "open"})
    assert created.status_code == 201 and created.json()["db_url"] is None and created.json()["api_url"]
    assert api.post("/v1/projects/open/stop", headers=JSON).json()["status"] == "stopped"
    assert api.delete("/v1/projects/open", params={"delete_data": "true"}, headers=JSON).json()["status"] == "deleted"


def test_the_server_refuses_to_start_without_a_token(sandbox: Sandbox) -> None:
    base = [sys.executable, "-m", "invoke", "serve", f"--env={sandbox.env}", f"--port={free_port()}"]
    for extra in ([], ["--no-auth", "--host=0.0.0.0"]):
        result = subprocess.run(base + extra, cwd=sandbox.root, env=sandbox.environ(), capture_output=True,
                                text=True, timeout=60)
        assert result.returncode != 0
        assert "PROVISION_API_TOKEN" in result.stderr


def test_no_auth_with_a_token_set_is_ignored_with_a_warning(sandbox: Sandbox, server_factory: list[Server]) -> None:
    server = run_server(server_factory, sandbox, "--no-auth")  # PROVISION_API_TOKEN is set
    assert httpx.get(server.url + "/v1/projects", trust_env=False).status_code == 401  # the token still rules
    assert server.client().get("/v1/projects").status_code == 200
    log = server.log()
    assert "warning: --no-auth is ignored: PROVISION_API_TOKEN is set" in log and TOKEN not in log
    quiet = run_server(server_factory, sandbox)  # no --no-auth: no warning
    assert quiet.log().count("--no-auth is ignored") == 1


def test_idempotency_key_returns_the_same_project(sandbox: Sandbox, server_factory: list[Server]) -> None:
    api = run_server(server_factory, sandbox).client()
    first = api.post("/v1/projects", json={}, headers={"Idempotency-Key": "signup-42"})
    second = api.post("/v1/projects", json={}, headers={"Idempotency-Key": "signup-42"})
    assert first.status_code == 201 and second.status_code in (200, 201)
    assert first.json()["id"] == second.json()["id"]
    ids = [p["id"] for p in api.get("/v1/projects").json()["projects"]]
    assert ids.count(first.json()["id"]) == 1 and len([i for i in ids if re.fullmatch(r"[0-9a-f]{12}", i)]) == 1


def test_a_reused_idempotency_key_with_another_body_is_refused(sandbox: Sandbox, server_factory: list[Server]) -> None:
    api = run_server(server_factory, sandbox).client()
    first = api.post("/v1/projects", json={"name": "once"}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    other = api.post("/v1/projects", json={"name": "twice"}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 422 and "Idempotency-Key 'k-1'" in problem(other)["detail"]
    assert api.get("/v1/projects/twice").status_code == 404
    api.delete("/v1/projects/once", params={"delete_data": "true"})


def test_the_guard_answers_before_reading_bodies(sandbox: Sandbox, server_factory: list[Server]) -> None:
    server = run_server(server_factory, sandbox)
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    anonymous = httpx.post(server.url + "/v1/projects", content=big, headers={"Content-Type": "application/json"},
                           trust_env=False, timeout=30)
    assert anonymous.status_code == 401  # no token: refused before its 2 MiB are read
    api = server.client()
    assert problem(api.post("/v1/projects", content=big, headers={"Content-Type": "application/json"}))["status"] == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    streamed = api.post("/v1/projects", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    assert api.get("/openapi.json").status_code == 200
    # the documentation is readable without the token (a browser sends none); every other route needs it
    assert httpx.get(server.url + "/openapi.json", trust_env=False).status_code == 200
    assert httpx.get(server.url + "/v1/projects", trust_env=False).status_code == 401
    log = server.log()
    assert "POST /v1/projects 401" in log and "POST /v1/projects 413" in log and TOKEN not in log


def test_without_a_token_only_loopback_hosts_and_json_are_served(sandbox: Sandbox, server_factory: list[Server]) -> None:
    server = run_server(server_factory, sandbox, "--no-auth", token=None)
    api = server.client(token=None)
    rebound = api.get("/v1/projects", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 400 and "attacker.example" in problem(rebound)["detail"]
    form = api.post("/v1/projects", content=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert api.get("/v1/projects", headers={"Host": f"localhost:{server.port}"}).status_code == 200
    assert api.get("/v1/projects", headers={"Host": f"[::1]:{server.port}"}).status_code == 200


def test_without_a_token_a_web_page_cannot_create_or_stop(sandbox: Sandbox, server_factory: list[Server]) -> None:
    """The reported attack: a page the operator opens posts a form (no body) to the loopback API."""
    sandbox.cli("provision", "--project=shop")
    server = run_server(server_factory, sandbox, "--no-auth", token=None)
    api = server.client(token=None)
    page = {"Origin": "https://evil.example", "Content-Length": "0"}
    for path in ("/v1/projects?wait=false", "/v1/projects/shop/stop", "/v1/projects/shop/restart"):
        refused = api.post(path, headers=page)
        assert refused.status_code == 403 and "evil.example" in problem(refused)["detail"], refused.text
        fetched = api.post(path, headers={"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"})
        assert fetched.status_code == 403, fetched.text
        bare = api.post(path, headers={"Content-Length": "0"})  # a browser that sends neither header
        assert bare.status_code == 415 and "application/json" in problem(bare)["detail"], bare.text
    assert api.delete("/v1/projects/shop", headers=page).status_code == 403
    assert api.delete("/v1/projects/shop").status_code == 415
    listed = api.get("/v1/projects")  # a read, as curl sends it
    assert listed.status_code == 200 and [p["id"] for p in listed.json()["projects"]] == ["shop"]
    assert listed.json()["projects"][0]["status"] == "running"
    assert api.post("/v1/projects/shop/restart", headers=JSON).json()["status"] == "running"  # the API's own callers
    log = server.log()
    assert "POST /v1/projects 403" in log and "POST /v1/projects/shop/stop 415" in log


def test_a_delete_cancels_a_queued_create(sandbox: Sandbox, server_factory: list[Server]) -> None:
    hooks = sandbox.root / "hooks"
    hooks.mkdir()
    (hooks / "pre-provision").write_text('#!/bin/sh\n[ "$PROVISION_PROJECT" != slow ] || sleep 3\n')
    (hooks / "pre-provision").chmod(0o755)
    api = run_server(server_factory, sandbox, "--workers=1").client()
    assert api.post("/v1/projects", params={"wait": "false"}, json={"name": "slow"}).status_code == 202
    assert api.post("/v1/projects", params={"wait": "false"}, json={"name": "queued"}).status_code == 202
    deleted = api.delete("/v1/projects/queued", params={"delete_data": "true"})  # the one worker is busy
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    # once the one worker is done with 'slow', it would have run 'queued' next, had the DELETE not cancelled it
    wait_until(lambda: api.get("/v1/projects/slow").json()["status"] == "running", 180,
               "project 'slow' to be running", interval=0.2)
    assert api.get("/v1/projects/queued").status_code == 404  # what the DELETE said is final
    assert _docker("ps", "-aq", "--filter", "label=io.provision.project=queued").stdout == ""
    api.delete("/v1/projects/slow", params={"delete_data": "true"})


def test_ten_concurrent_posts_make_ten_running_projects(sandbox: Sandbox, server_factory: list[Server]) -> None:
    server = run_server(server_factory, sandbox)

    def create(i: int) -> httpx.Response:
        with server.client() as api:
            return api.post("/v1/projects", json={"name": f"c{i}"})

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(create, range(10)))
    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses if r.status_code != 201]
    bodies = [r.json() for r in responses]
    assert {b["id"] for b in bodies} == {f"c{i}" for i in range(10)}
    assert len({b["api_url"] for b in bodies}) == 10 and all(b["status"] == "running" for b in bodies)
    for body in bodies:
        assert httpx.get(body["api_url"], timeout=10, trust_env=False).status_code == 200


def test_a_killed_server_loses_nothing(sandbox: Sandbox, server_factory: list[Server]) -> None:
    server = run_server(server_factory, sandbox)
    api = server.client()
    accepted = api.post("/v1/projects", params={"wait": "false"}, json={"name": "phoenix"})
    assert accepted.status_code == 202 and accepted.headers["location"] == "/v1/projects/phoenix"
    assert accepted.json()["status"] == "provisioning"
    wait_until(lambda: _docker("ps", "-q", "--filter", "label=io.provision.project=phoenix").stdout, 60,
               "a container of project 'phoenix' to appear", detail=server.log)
    server.kill()  # mid-provision

    restarted = run_server(server_factory, sandbox)
    api = restarted.client()
    wait_until(lambda: api.get("/v1/projects/phoenix").json()["status"] == "running", 120,
               "project 'phoenix' to be running after the restart", interval=0.5, detail=restarted.log)


def test_cli_and_http_see_the_same_projects(sandbox: Sandbox, server_factory: list[Server]) -> None:
    sandbox.cli("provision", "--project=shop")
    api = run_server(server_factory, sandbox).client()
    assert api.get("/v1/projects/shop").json()["status"] == "running"
    assert api.post("/v1/projects", json={"name": "viahttp"}).status_code == 201
    listed = json.loads(sandbox.cli("list", f"--env={sandbox.env}", "--json").stdout)["projects"]
    assert {"shop", "viahttp"} <= {p["project"] for p in listed}
    assert sandbox.cli("outputs", "--project=viahttp").stdout.startswith("API_URL=")
