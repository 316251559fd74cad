"""The HTTP API on the Coolify backend (emulator), and property-based fuzzing from its own OpenAPI document."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import positive_data_acceptance

from tests.coolify.conftest import TOKEN as COOLIFY_TOKEN
from tests.coolify.conftest import coolify_env, make_sandbox
from tests.coolify_emulator import CoolifyEmulator
from tests.server.conftest import TOKEN, Server, problem, run_server

pytestmark = pytest.mark.coolify

# CI fuzzes with a fixed seed, so a run is reproducible; PROVISION_FUZZ_SEED=random explores (or names another seed)
FUZZ_SEED = os.environ.get("PROVISION_FUZZ_SEED", "20261130")


def _seeded(test: Callable[..., Any]) -> Callable[..., Any]:
    return test if FUZZ_SEED == "random" else seed(int(FUZZ_SEED))(test)


@pytest.fixture
def coolify_server(tmp_path: Path, server_factory: list[Server]) -> Iterator[tuple[Server, CoolifyEmulator]]:
    # Coolify-like jobs (a restart shows its start activity), kept short: every operation is fuzzed; the
    # emulator's rate limit is lifted, and so is the run's request budget (coolify.requests_per_minute)
    with CoolifyEmulator(token=COOLIFY_TOKEN, rate_limit=100_000, action_delay=0.05, start_seconds=0.6) as emu:
        box = make_sandbox(tmp_path, emu)
        box.write_env_text(coolify_env(timeout=5, extra="  requests_per_minute: 100000\n"))
        yield run_server(server_factory, box), emu


def test_lifecycle_over_http_on_coolify(coolify_server: tuple[Server, CoolifyEmulator]) -> None:
    server, emu = coolify_server
    api = server.client()
    assert api.get("/healthz").json()["backend"] == "coolify"
    created = api.post("/v1/projects", json={"name": "cloudy"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "running" and body["api_url"].startswith("http://api-")
    assert body["db_url"].startswith("postgresql://app:") and "@db-" in body["db_url"]
    assert [s["name"] for s in emu.find_services()] == ["cloudy"]
    assert api.post("/v1/projects/cloudy/stop").json()["status"] == "stopped"
    assert api.post("/v1/projects/cloudy/start").json()["status"] == "running"
    assert api.post("/v1/projects/cloudy/restart").json()["status"] == "running"
    accepted = api.post("/v1/projects", params={"wait": "false"}, json={"name": "later"})
    assert accepted.status_code == 202
    listed = {p["id"]: p for p in api.get("/v1/projects").json()["projects"]}
    assert {"cloudy", "later"} <= set(listed)
    assert api.delete("/v1/projects/cloudy").json()["status"] == "destroyed"
    assert "cloudy" not in [s["name"] for s in emu.find_services()]
    bad = api.post("/v1/projects/cloudy--x/stop")
    assert bad.status_code == 422 and "project name" in problem(bad)["detail"]
    # Coolify cannot dump a service's database: deleting its data needs an explicit no_backup
    refused = api.delete("/v1/projects/later", params={"delete_data": "true"})
    assert refused.status_code == 400 and "no_backup=true" in problem(refused)["detail"]
    assert api.delete("/v1/projects/later", params={"delete_data": "true", "no_backup": "true"}).json()["status"] == "deleted"


def test_fuzz_the_api_from_its_own_openapi(coolify_server: tuple[Server, CoolifyEmulator]) -> None:
    """Every operation, fuzzed from the server's own OpenAPI document: no 5xx, and every response
    (status code, content type, headers, body) conforms to the schema."""
    server, emu = coolify_server
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @_seeded
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def fuzz(case: schemathesis.Case) -> None:
            # some schema-valid requests are refused by design, each with a documented 4xx: deleting a
            # Coolify project's data without no_backup=true (no dump is possible) is a 400
            response = case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                              excluded_checks=[positive_data_acceptance])
            assert response.status_code < 500

        fuzz()
    # the fuzzing reached the backend: valid generated names became real services
    assert emu.find_services()
