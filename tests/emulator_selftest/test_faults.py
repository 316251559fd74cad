"""Fault injection: HTTP errors, hangs, dropped/reset connections, malformed bodies, latency."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.coolify_emulator import CoolifyEmulator

from .conftest import make_client


def names(emu: CoolifyEmulator) -> list[str]:
    return [p["name"] for p in emu.find_projects()]


def test_http_error_fault_before_side_effect(emu: CoolifyEmulator, client: httpx.Client) -> None:
    fault = emu.inject("500", method="POST", path=r"^/projects$")
    resp = client.post("/projects", json={"name": "first"})
    assert (resp.status_code, resp.json()) == (500, {"message": "Server Error"})
    assert names(emu) == [] and fault.hits == 1
    assert client.post("/projects", json={"name": "second"}).status_code == 201  # times=1 by default
    emu.inject("503", path="/servers", times=2)
    assert [client.get("/servers").status_code for _ in range(3)] == [503, 503, 200]


def test_error_after_side_effect(emu: CoolifyEmulator, client: httpx.Client) -> None:
    emu.inject("500", method="POST", path=r"/projects$", after=True)
    assert client.post("/projects", json={"name": "created-anyway"}).status_code == 500
    assert names(emu) == ["created-anyway"]


def test_429_fault(emu: CoolifyEmulator, client: httpx.Client) -> None:
    emu.inject("429", method="GET", path="/projects", retry_after=3)
    resp = client.get("/projects")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "3" and resp.json() == {"message": "Too Many Attempts."}
    assert client.get("/projects").status_code == 200


def test_hang_before_and_after(emu: CoolifyEmulator) -> None:
    with make_client(emu, timeout=0.25) as short:
        emu.inject("hang", method="POST", path=r"/projects$", seconds=5)
        with pytest.raises(httpx.ReadTimeout):
            short.post("/projects", json={"name": "lost"})
        assert names(emu) == []  # never processed
        emu.inject("hang", method="POST", path=r"/projects$", after=True, seconds=5)
        with pytest.raises(httpx.ReadTimeout):
            short.post("/projects", json={"name": "done-but-unanswered"})
        assert names(emu) == ["done-but-unanswered"]
        emu.hang_seconds = 5
        emu.inject("hang", path="/servers")  # default duration: emu.hang_seconds
        with pytest.raises(httpx.ReadTimeout):
            short.get("/servers")


def test_drop_and_reset(emu: CoolifyEmulator, client: httpx.Client, project: str) -> None:
    emu.inject("drop", method="POST", path=r"/projects$")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/projects", json={"name": "dropped"})
    assert names(emu) == ["selftest"]
    emu.inject("drop", method="POST", path=r"/projects$", after=True)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/projects", json={"name": "dropped-after"})
    assert names(emu) == ["selftest", "dropped-after"]
    emu.inject("reset", method="GET", path=rf"/projects/{project}$")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.get(f"/projects/{project}")
    assert client.get(f"/projects/{project}").status_code == 200


def test_malformed(emu: CoolifyEmulator, client: httpx.Client) -> None:
    emu.inject("malformed", method="GET", path="/servers")
    resp = client.get("/servers")
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        resp.json()
    emu.inject("malformed", method="POST", path="/projects", after=True)
    resp = client.post("/projects", json={"name": "half-answered"})
    assert resp.status_code == 200 and resp.text.startswith('{"uuid"')
    with pytest.raises(json.JSONDecodeError):
        resp.json()
    assert names(emu) == ["half-answered"]
    emu.inject("malformed", path="/servers", body="<html>gateway</html>")
    assert client.get("/servers").text == "<html>gateway</html>"


def test_latency_applies_to_every_matching_request(emu: CoolifyEmulator, client: httpx.Client) -> None:
    fault = emu.inject("latency", path="/servers", seconds=0.1)
    started = time.monotonic()
    for _ in range(3):
        assert client.get("/servers").status_code == 200
    assert time.monotonic() - started >= 0.3  # a lower bound: the sleeps make it hold on any machine
    assert fault.hits == 3
    emu.clear_faults()
    assert client.get("/servers").status_code == 200
    assert fault.hits == 3  # cleared: that request was not delayed


def test_request_log(emu: CoolifyEmulator, client: httpx.Client) -> None:
    client.post("/projects", json={"name": "logged"})
    emu.inject("drop", method="GET", path="/projects")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/projects")
    client.get("/projects", params={"x": "1"})
    assert [tuple(r) for r in emu.requests] == [
        ("POST", "/projects", {}, 201), ("GET", "/projects", {}, None), ("GET", "/projects", {"x": "1"}, 200)]
    assert emu.requests[0].body == {"name": "logged"}
    assert emu.count(method="GET", path="/projects") == 2
    assert emu.count(status=None) == 1 and emu.count(fault="drop") == 1
    assert emu.count(path="/api/v1/projects") == 3  # the full path works too
    emu.requests.clear()
    assert emu.count() == 0


def test_token_is_never_logged(emu: CoolifyEmulator, client: httpx.Client, capfd: pytest.CaptureFixture[str]) -> None:
    emu.inject("500", path="/projects")
    client.get("/projects")
    client.get("/projects", headers={"Authorization": "Bearer wrong-secret"})
    out, err = capfd.readouterr()
    assert "selftest-root-token" not in out + err and "wrong-secret" not in out + err
    assert "selftest-root-token" not in repr(list(emu.requests))
