"""Status polls are paced to what can change them (fake clock): Coolify's stored status moves at its periodic
refresh (about once a minute), so a wait for it backs off to a few seconds instead of asking 2-4 times a second."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from provision.backends.coolify import CoolifyBackend, CoolifyClient, Refs, waits
from provision.core.config import load_env
from provision.core.model import Prepared, Target
from provision.core.secrets import Secret
from tests.conftest import write_env
from tests.coolify.conftest import coolify_env

API = "https://coolify.test/api/v1"
TOKEN = "9|unit-token"
S = "serv0000000000000000001"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_wait_for_coolifys_refresh_polls_every_few_seconds(project_root: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(project_root, "dev", coolify_env(timeout=300))
    config = load_env("dev", project_root, environ={"COOLIFY_API_URL": API, "COOLIFY_API_TOKEN": TOKEN})
    clock = Clock()
    refresh_at = 60.0  # Coolify's next refresh reports the new containers a minute after the start
    polls: list[float] = []

    def coolify(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/api/v1/services/{S}"
        polls.append(clock.now)
        status = "running:healthy" if clock.now >= refresh_at else "exited"
        return httpx.Response(200, json={
            "uuid": S, "name": "shop", "status": status,
            "applications": [{"name": "api", "status": status, "fqdn": "http://api.example.test:3000"}],
            "databases": [{"name": "db", "status": status}]})

    monkeypatch.setattr(waits, "http_probe", lambda url, timeout=5: lambda: None)
    backend = CoolifyBackend(CoolifyClient.connect(API, Secret(TOKEN), transport=httpx.MockTransport(coolify)),
                             config, clock=clock, sleep=clock.sleep)
    backend.wait(Target(config, config.project("shop")), Refs(service_uuid=S, api_fqdn="http://api.example.test:3000"),
                 Prepared(secrets={}), timeout=300)
    gaps = [b - a for a, b in zip(polls, polls[1:], strict=False)]
    assert len(polls) <= 35  # was 53 a minute (0.25-2 s at a tenth of the time waited)
    assert max(gaps) <= 5.0 and min(gaps) >= 0.25  # never faster than 4 a second, never slower than 5 s
    assert sum(1 for g in gaps if g >= 4.0) >= 4  # backed off to a few seconds while nothing could move
    assert polls[-1] - refresh_at <= 0.15 * refresh_at + 0.01  # seen at most ~15% after the refresh
