"""The emulated Traefik in pure mode: Host-based routing through HTTP_PROXY."""

from __future__ import annotations

import httpx
import pytest

from tests.coolify_emulator import CoolifyEmulator, ProxyContext


def test_routes_by_host_and_status(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    emu.action_delay = 0
    url = f"http://api-{service}.127.0.0.1.sslip.io/"
    with httpx.Client(proxy=emu.proxy_url, timeout=5) as web:
        resp = web.get(url)
        assert (resp.status_code, resp.text) == (503, "no available server\n")  # created, not started
        client.post(f"/services/{service}/start")
        resp = web.get(url)
        assert resp.status_code == 200 and resp.json() == {"swagger": "2.0"}
        assert web.get(f"http://API-{service}.127.0.0.1.sslip.io/todos?select=id").status_code == 200
        resp = web.get("http://unknown.127.0.0.1.sslip.io/")
        assert (resp.status_code, resp.text) == (404, "404 page not found\n")
        client.post(f"/services/{service}/stop")
        assert web.get(url).status_code == 503


def test_http_proxy_environment_variable(emu: CoolifyEmulator, client: httpx.Client, service: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    emu.action_delay = 0
    client.post(f"/services/{service}/start")
    monkeypatch.setenv("HTTP_PROXY", emu.proxy_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with httpx.Client(timeout=5) as web:  # trust_env=True: picks up HTTP_PROXY / NO_PROXY
        assert web.get(f"http://api-{service}.127.0.0.1.sslip.io/").json() == {"swagger": "2.0"}
        assert web.get(emu.url + "/api/health").text == "OK"  # NO_PROXY: straight to the API


def test_custom_responder_and_path_prefix(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    emu.action_delay = 0
    client.patch(f"/services/{service}", json={"urls": [{"name": "api", "url": "http://example.test:3000/rest"}]})
    client.post(f"/services/{service}/start")
    seen: list[ProxyContext] = []

    def responder(ctx: ProxyContext) -> tuple[int, dict[str, str], bytes]:
        seen.append(ctx)
        return 201, {"Content-Type": "text/plain"}, f"{ctx.app_name} {ctx.path}".encode()

    emu.set_proxy_responder(responder)
    with httpx.Client(proxy=emu.proxy_url, timeout=5) as web:
        resp = web.post("http://example.test/rest/items?x=1", content=b"{}")
        assert (resp.status_code, resp.text) == (201, "api /items?x=1")  # prefix stripped
        assert web.get("http://example.test/other").status_code == 404
    assert seen[0].envs["POSTGRES_PASSWORD"] == "changeme" and seen[0].method == "POST"
