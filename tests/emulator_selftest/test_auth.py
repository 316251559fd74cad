"""Authentication, abilities, API switches, sensitive fields, rate limiting, routing basics."""

from __future__ import annotations

import httpx
import pytest

from tests.coolify_emulator import CoolifyEmulator

from .conftest import TOKEN, make_client


def test_health_and_version(emu: CoolifyEmulator, client: httpx.Client) -> None:
    for path in ("/api/health", "/api/v1/health"):
        resp = httpx.get(emu.url + path)
        assert resp.status_code == 200 and resp.text == "OK"
    resp = client.get("/version")
    assert resp.status_code == 200 and resp.text == "4.3.11"
    assert httpx.get(emu.base_url + "/version").status_code == 401


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": TOKEN},  # no "Bearer " prefix
    {"Authorization": f"Basic {TOKEN}"},
])
def test_401_unauthenticated(emu: CoolifyEmulator, headers: dict[str, str]) -> None:
    resp = httpx.get(emu.base_url + "/projects", headers={"Accept": "application/json", **headers})
    assert resp.status_code == 401
    assert resp.json() == {"message": "Unauthenticated."}


def test_expired_revoked_and_foreign_team_tokens(emu: CoolifyEmulator) -> None:
    emu.add_token("expired", ("root",), expires_in=-1)
    emu.add_token("left-team", ("root",), in_team=False)
    emu.add_token("member", ("root",), role="member")
    emu.add_token("revoked", ("root",))
    emu.revoke_token("revoked")
    expected = {"expired": (401, "Unauthenticated."), "revoked": (401, "Unauthenticated."),
                "left-team": (401, "Invalid token."), "member": (403, "Missing required team role.")}
    for token, (status, message) in expected.items():
        with make_client(emu, token) as c:
            resp = c.get("/projects")
        assert (resp.status_code, resp.json()["message"]) == (status, message), token


def test_abilities(emu: CoolifyEmulator, client: httpx.Client) -> None:
    emu.add_token("ro", ("read",))
    emu.add_token("wo", ("write",))
    emu.add_token("deployer", ("read", "deploy"))
    project = client.post("/projects", json={"name": "abilities"}).json()["uuid"]
    with make_client(emu, "ro") as ro, make_client(emu, "wo") as wo, make_client(emu, "deployer") as dep:
        assert ro.get("/projects").status_code == 200
        resp = ro.post("/projects", json={"name": "nope"})
        assert (resp.status_code, resp.json()) == (403, {"message": "Missing required permissions: write"})
        # write does NOT imply read
        assert wo.get("/projects").json() == {"message": "Missing required permissions: read"}
        assert wo.post("/projects", json={"name": "yes"}).status_code == 201
        assert wo.delete(f"/projects/{project}").status_code == 200
        resp = wo.post("/deploy", params={"uuid": "x"})
        assert (resp.status_code, resp.json()) == (403, {"message": "Missing required permissions: deploy"})
        assert dep.post("/deploy", params={"uuid": "x"}).status_code == 404  # passes the ability check


def test_api_disabled_and_allowed_ips(emu: CoolifyEmulator, client: httpx.Client) -> None:
    emu.api_enabled = False
    resp = client.get("/projects")
    assert (resp.status_code, resp.json()) == (403, {"success": True, "message": "API is disabled."})
    assert httpx.get(emu.base_url + "/projects").status_code == 401  # auth runs first
    assert client.post("/enable").json() == {"message": "API enabled."}  # skips ApiAllowed
    assert client.get("/projects").status_code == 200
    emu.allowed_ips = ["10.1.2.3", "192.168.0.0/16"]
    resp = client.get("/projects")
    assert resp.json() == {"success": True, "message": "You are not allowed to access the API."}
    emu.allowed_ips = ["10.1.2.3", "127.0.0.0/8"]
    assert client.get("/projects").status_code == 200
    emu.allowed_ips = ["0.0.0.0"]
    assert client.get("/projects").status_code == 200
    emu.add_token("other-team", ("root",), team_id=7)
    with make_client(emu, "other-team") as other:
        assert other.post("/disable").json() == {"message": "You are not allowed to disable the API."}
        assert other.get("/servers").json() == []  # team scoping


def test_sensitive_fields_hidden_without_read_sensitive(emu: CoolifyEmulator, client: httpx.Client,
                                                        service: str) -> None:
    emu.add_token("plain", ("read",))
    emu.add_token("sensitive", ("read", "read:sensitive"))
    with make_client(emu, "plain") as plain, make_client(emu, "sensitive") as sens:
        svc = plain.get(f"/services/{service}").json()
        assert "docker_compose_raw" not in svc and "docker_compose" not in svc
        envs = plain.get(f"/services/{service}/envs").json()
        assert envs and all("value" not in e and "real_value" not in e for e in envs)
        assert "docker_compose_raw" not in plain.get("/services").json()[0]
        svc = sens.get(f"/services/{service}").json()
        assert "services:" in svc["docker_compose_raw"] and "container_name" in svc["docker_compose"]
        assert all("value" in e for e in sens.get(f"/services/{service}/envs").json())
    assert "docker_compose_raw" in client.get(f"/services/{service}").json()  # root sees everything


def test_rate_limit(emu: CoolifyEmulator, client: httpx.Client) -> None:
    emu.rate_limit = 3
    remaining = [client.get("/projects").headers["X-RateLimit-Remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    resp = client.get("/projects")
    assert resp.status_code == 429
    assert resp.json() == {"message": "Too Many Attempts."}
    assert int(resp.headers["Retry-After"]) >= 1 and resp.headers["X-RateLimit-Limit"] == "3"
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as bare:
        resp = bare.get("/projects")
        assert resp.status_code == 429 and resp.headers["content-type"].startswith("text/html")
    emu.rate_limit_window = 0.2
    emu.reset_rate_limit()
    assert client.get("/projects").status_code == 200


def test_unknown_paths_and_get_on_action_routes(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    resp = httpx.get(emu.base_url + "/nope")  # no auth needed for the fallback
    assert (resp.status_code, resp.json()) == (404, {"message": "Not found.", "docs": "https://coolify.io/docs"})
    assert client.put("/projects", json={"name": "x"}).status_code == 404
    assert client.post("/applications/dockercompose", json={"x": 1}).status_code == 404  # removed in v4.1.0
    for path in (f"/services/{service}/start", f"/services/{service}/stop", f"/services/{service}/restart",
                 "/deploy"):
        resp = client.get(path)
        assert resp.status_code == 405
        assert resp.headers["Allow"] == "POST"
        assert resp.json() == {"message": "This endpoint has changed to a POST request."}


def test_get_on_action_routes_needs_the_actions_ability(emu: CoolifyEmulator, client: httpx.Client,
                                                        service: str) -> None:
    """routes/api.php:144, 185, 384-386: the GETs that answer 405 sit behind the action's own ability, so a
    token's write and deploy abilities can be told apart without doing anything."""
    emu.add_token("ro", ("read",))
    emu.add_token("rwd", ("read", "write", "deploy"))
    server = emu.localhost["uuid"]
    with make_client(emu, "ro") as ro, make_client(emu, "rwd") as rwd:
        for path, ability in (("/deploy", "deploy"), (f"/services/{service}/start", "deploy"),
                              (f"/servers/{server}/validate", "write")):
            resp = ro.get(path)
            assert (resp.status_code, resp.json()) == (403, {"message": f"Missing required permissions: {ability}"})
            assert rwd.get(path).status_code == 405


def test_server_settings_show_the_sentinel_token_only_to_sensitive_readers(emu: CoolifyEmulator,
                                                                          client: httpx.Client) -> None:
    emu.add_token("ro", ("read",))
    emu.add_token("sensitive", ("read", "read:sensitive"))
    server = emu.localhost["uuid"]
    assert client.get(f"/servers/{server}").json()["settings"]["sentinel_token"]  # root
    with make_client(emu, "ro") as ro, make_client(emu, "sensitive") as sensitive:
        assert "sentinel_token" not in ro.get(f"/servers/{server}").json()["settings"]
        assert "sentinel_token" not in ro.get("/servers").json()[0]["settings"]
        assert sensitive.get("/servers").json()[0]["settings"]["sentinel_token"]
