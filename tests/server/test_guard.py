"""The Guard and the error paths on an in-process uvicorn (create_app over the sandbox's env, a real socket):
which requests a server without a token refuses, what an unexpected exception answers, how large a 422 gets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn

from provision.core.secrets import Secret
from provision.http.server import create_app
from provision.service.requests import ProjectRequests
from provision.service.workspace import Workspace
from tests.sandbox import Sandbox
from tests.server.conftest import JSON, TOKEN, free_port, problem

pytestmark = pytest.mark.docker

EVIL = "https://evil.example"


@dataclass
class InProcess:
    url: str
    service: ProjectRequests
    access: list[str] = field(default_factory=list)  # the Guard's access lines
    peers: list[tuple[str, int]] = field(default_factory=list)  # the client address of every request

    def client(self, *, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False)


@contextmanager
def serving(sandbox: Sandbox, *, token: str | None) -> Iterator[InProcess]:
    provisioner = Workspace(sandbox.root, environ=sandbox.environ(), state_dir=sandbox.state_dir).provisioner(sandbox.env)
    access: list[str] = []
    app = create_app(provisioner, token=Secret(token) if token else None, workers=2, resume=False,
                     access_log=access.append)
    port = free_port()
    running = InProcess(f"http://127.0.0.1:{port}", app.state.service, access)

    async def recorded(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http":
            host, client_port = scope["client"]
            running.peers.append((host, client_port))
        await app(scope, receive, send)

    server = uvicorn.Server(uvicorn.Config(recorded, host="127.0.0.1", port=port, interface="asgi3",
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.02)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(30)


def refuse_work(monkeypatch: pytest.MonkeyPatch, service: ProjectRequests) -> list[str]:
    """Every state-changing call the service gets is recorded and fails: a refused request never reaches one."""
    calls: list[str] = []

    def called(verb: str) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            calls.append(verb)
            raise RuntimeError(f"the guard let a {verb} through")

        return record

    for verb in ("create", "control", "delete"):
        monkeypatch.setattr(service, verb, called(verb))
    return calls


def test_without_a_token_no_web_page_can_change_anything(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(sandbox, token=None) as server, server.client() as api:
        calls = refuse_work(monkeypatch, server.service)
        empty = {"Content-Length": "0"}
        # what a cross-site page can send: a form (no body, or a simple content type), fetch(mode: no-cors), a beacon
        for method, path in (("POST", "/v1/projects?wait=false"), ("POST", "/v1/projects/shop/stop"),
                             ("DELETE", "/v1/projects/shop")):
            for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Origin": EVIL, **JSON},
                            {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site", **JSON},
                            {"Origin": "http://127.0.0.1.evil.example"}, {"Origin": "http://localhost@evil.example"}):
                refused = api.request(method, path, headers={**empty, **headers})
                assert refused.status_code == 403, (method, path, headers, refused.text)
                assert "\n" not in problem(refused)["detail"]
            for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                 "text/plain; application/json"):
                headers = {**empty, **({"Content-Type": content_type} if content_type else {})}
                bare = api.request(method, path, headers=headers)
                assert bare.status_code == 415, (method, path, headers, bare.text)
                assert "Content-Type: application/json" in problem(bare)["detail"]
        form = api.post("/v1/projects", content=b"name=x", headers={"Content-Type": "text/plain", "Origin": EVIL})
        assert form.status_code == 403
        assert calls == []
        lines = [line.rpartition(" ")[0] for line in server.access]  # without the duration
        assert "POST /v1/projects 403" in lines and "POST /v1/projects/shop/stop 415" in lines

        # the API's own clients: reads need nothing extra (curl), changes are sent as JSON, body or not
        monkeypatch.undo()
        assert api.get("/v1/projects").status_code == 200
        assert api.get("/openapi.json", headers={"Sec-Fetch-Site": "none"}).status_code == 200  # typed in the address bar
        assert api.post("/v1/projects/nothing/stop", headers=JSON).status_code == 404  # reached the service
        assert api.post("/v1/projects/nothing/stop", headers={"Content-Type": "Application/JSON; charset=utf-8"}).status_code == 404
        assert api.delete("/v1/projects/nothing", headers=JSON).status_code == 404
        assert api.post("/v1/projects", json={"name": "Bad Name"}).status_code == 422  # httpx's json= says so itself
        for origin in (f"http://127.0.0.1:{server.url.rpartition(':')[2]}", "http://localhost:8000", "https://localhost",
                       "http://[::1]:8000"):
            for site in ("same-origin", "none"):
                allowed = api.post("/v1/projects/nothing/stop", headers={"Origin": origin, "Sec-Fetch-Site": site, **JSON})
                assert allowed.status_code == 404, (origin, site, allowed.text)
        # reads are refused to other sites too, and the Host allow-list still comes first
        assert api.get("/v1/projects", headers={"Origin": EVIL}).status_code == 403
        assert api.get("/v1/projects", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert api.get("/healthz", headers={"Origin": EVIL}).status_code == 200  # open, as before
        assert api.get("/v1/projects", headers={"Host": "evil.example", "Origin": EVIL}).status_code == 400


def test_with_a_token_the_token_is_the_rule(sandbox: Sandbox) -> None:
    """A browser never sends a bearer token on its own: with one, a bodiless change needs no Content-Type."""
    with serving(sandbox, token=TOKEN) as server, server.client(token=TOKEN) as api:
        assert api.post("/v1/projects/nothing/stop").status_code == 404
        assert api.delete("/v1/projects/nothing").status_code == 404
        with server.client() as anonymous:
            assert anonymous.post("/v1/projects/nothing/stop", headers={"Origin": EVIL}).status_code == 401
        assert api.post("/v1/projects", content=b"name=x", headers={"Content-Type": "text/plain"}).status_code == 415


def test_the_docs_work_offline_and_without_the_token(sandbox: Sandbox) -> None:
    """/docs and /openapi.json are read without the token (a browser sends none) and /docs loads nothing from
    elsewhere; every other route still needs the token, and so does anything but a GET of the docs."""
    import base64
    import hashlib
    import re

    with serving(sandbox, token=TOKEN) as server, server.client() as anonymous:
        page = anonymous.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert not re.search(r"(src|href)\s*=", html, re.I) and "cdn" not in html.lower() and "<link" not in html
        assert "@import" not in html and "url(" not in html
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        for tag in ("script", "style"):  # the inline script and style are the only ones allowed to run
            [inline] = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
            digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
            assert f"{tag}-src 'sha256-{digest}'" in policy
        assert 'fetch("openapi.json"' in html and "innerHTML" not in html  # built from text nodes only
        schema = anonymous.get("/openapi.json")
        assert schema.status_code == 200 and "/v1/projects" in schema.json()["paths"]
        assert TOKEN not in schema.text and "/docs" not in schema.json()["paths"]
        for method, path in (("GET", "/v1/projects"), ("GET", "/v1/projects/shop"), ("POST", "/docs"),
                             ("POST", "/openapi.json"), ("GET", "/redoc"), ("GET", "/docs/oauth2-redirect")):
            assert problem(anonymous.request(method, path))["status"] == 401, (method, path)
        with server.client(token=TOKEN) as api:
            assert api.get("/redoc").status_code == 404 and api.get("/docs").status_code == 200  # no CDN page left
    with serving(sandbox, token=None) as server, server.client() as api:  # without a token: the loopback rules
        assert api.get("/docs", headers={"Sec-Fetch-Site": "none"}).status_code == 200
        assert api.get("/docs", headers={"Origin": EVIL}).status_code == 403
        assert api.get("/openapi.json", headers={"Host": "evil.example"}).status_code == 400


def test_an_unexpected_exception_is_a_500_on_a_kept_connection(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(sandbox, token=TOKEN) as server, server.client(token=TOKEN) as api:

        def broken() -> Any:
            raise ZeroDivisionError("private-detail-42")

        monkeypatch.setattr(server.service, "all_projects", broken)
        failed = api.get("/v1/projects")
        assert failed.status_code == 500
        body = problem(failed)
        assert body["title"] == "Unexpected error" and "incident" in body["detail"] and "private-detail-42" not in failed.text
        assert failed.headers.get("connection", "").lower() != "close"
        assert api.get("/healthz").status_code == 200
        assert api.get("/v1/projects/nothing").status_code == 404
        assert len(server.peers) == 3 and len(set(server.peers)) == 1, server.peers  # one connection, kept alive
        assert any(line.startswith("GET /v1/projects 500 ") for line in server.access), server.access


def test_a_422_stays_small_whatever_the_body(sandbox: Sandbox) -> None:
    with serving(sandbox, token=TOKEN) as server, server.client(token=TOKEN) as api:
        keys = {f"k{i}": 0 for i in range(90_000)}  # unknown keys, each its own error
        body = json.dumps(keys, separators=(",", ":")).encode()
        assert 900_000 < len(body) <= 1024 * 1024
        many = api.post("/v1/projects", content=body, headers=JSON)
        assert many.status_code == 422
        detail = problem(many)["detail"]
        assert len(many.content) < 10_000, len(many.content)
        assert detail.count("Extra inputs are not permitted") == 20
        assert "89980 more" in detail
        for long in ({"x" * 900_000: 1}, {"name": "y" * 900_000}, {"name": ["z" * 900_000]}):
            one = api.post("/v1/projects", json=long)
            assert one.status_code == 422 and len(one.content) < 2_000, (len(one.content), one.text[:300])
        assert "body.name" in problem(api.post("/v1/projects", json={"name": "Bad Name"}))["detail"]
