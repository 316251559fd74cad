"""Fixtures for the emulator self-tests: a running emulator and httpx clients."""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.coolify_emulator import CoolifyEmulator  # noqa: E402

TOKEN = "1|selftest-root-token"

SIMPLE_COMPOSE = """\
services:
  db:
    image: postgres:16-alpine
    environment:
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-changeme}
      POSTGRES_DB: app
    volumes:
      - pg_data:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U postgres"]
  api:
    image: postgrest/postgrest:v12
    environment:
      - SERVICE_FQDN_API_3000
      - PGRST_DB_URI=postgres://postgres:${POSTGRES_PASSWORD}@db:5432/app
      - PGRST_JWT_SECRET=${JWT_SECRET}
    healthcheck:
      test: ["CMD", "true"]
volumes:
  pg_data:
"""


def b64(text: str) -> str:
    """Standard, padded base64 like Coolify expects."""
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def emu() -> Iterator[CoolifyEmulator]:
    """A pure-mode emulator with a root token and a short action delay; its rate limit is lifted (tests that
    watch a status change poll it every 10 ms; test_rate_limit.py sets its own)."""
    with CoolifyEmulator(token=TOKEN, action_delay=0.05, rate_limit=100_000) as emulator:
        yield emulator


def make_client(emulator: CoolifyEmulator, token: str | None = TOKEN, **kwargs: Any) -> httpx.Client:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=emulator.base_url, headers=headers, timeout=kwargs.pop("timeout", 5.0), **kwargs)


@pytest.fixture
def client(emu: CoolifyEmulator) -> Iterator[httpx.Client]:
    with make_client(emu) as c:
        yield c


@pytest.fixture
def project(client: httpx.Client) -> str:
    resp = client.post("/projects", json={"name": "selftest"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["uuid"])


@pytest.fixture
def create_service(client: httpx.Client, emu: CoolifyEmulator, project: str) -> Callable[..., httpx.Response]:
    """POST /services with sensible defaults; keyword arguments override body fields."""

    def _create(compose: str = SIMPLE_COMPOSE, **fields: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "project_uuid": project,
            "environment_name": "production",
            "server_uuid": emu.localhost["uuid"],
            "docker_compose_raw": b64(compose),
            "name": "stack",
        }
        body.update(fields)
        return client.post("/services", json={k: v for k, v in body.items() if v is not ...})

    return _create


@pytest.fixture
def service(create_service: Callable[..., httpx.Response]) -> str:
    resp = create_service()
    assert resp.status_code == 201, resp.text
    return str(resp.json()["uuid"])
