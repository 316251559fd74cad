"""plan, drift and rollback on the Coolify backend, against the emulator."""

from __future__ import annotations

import pytest
import yaml

from tests.coolify.conftest import coolify_env
from tests.coolify_emulator import CoolifyEmulator
from tests.sandbox import Sandbox

NEW_API = {"db": "postgres:16-alpine", "api": "postgrest/postgrest:v99"}


def _plan(sandbox: Sandbox) -> tuple[int, list[dict]]:  # type: ignore[type-arg]
    result = sandbox.cli("plan", "--json", "--detailed-exitcode", check=False)
    assert result.returncode in (0, 2), result.stderr
    return result.returncode, result.json()["projects"]


def test_plan_outcomes_and_drift_made_in_coolify(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    code, items = _plan(sandbox)
    assert code == 2 and [i["outcome"] for i in items] == ["create"]
    assert emulator.find_projects() == []  # plan creates nothing

    sandbox.cli("provision")
    emulator.requests.clear()
    code, items = _plan(sandbox)
    assert code == 0 and items[0]["outcome"] == "no-op"
    assert all(r.method == "GET" for r in emulator.requests)

    sandbox.write_env_text(coolify_env(NEW_API))
    code, items = _plan(sandbox)
    assert code == 2 and items[0]["outcome"] == "update"
    assert "+    image: postgrest/postgrest:v99" in items[0]["diff"]
    sandbox.write_env_text(coolify_env())

    # a user edits the compose in Coolify's UI
    [service] = emulator.find_services()
    stored = yaml.safe_load(emulator.service(service["uuid"])["docker_compose_raw"])
    stored["services"]["api"]["environment"]["PGRST_DB_SCHEMAS"] = "edited"
    emulator.edit_service_compose(service["uuid"], yaml.safe_dump(stored))
    code, items = _plan(sandbox)
    assert code == 2 and items[0]["outcome"] == "drift" and "edited" in items[0]["reason"]
    fixed = sandbox.cli("provision", "--json").json()["projects"][0]
    assert fixed["action"] == "drift"
    assert "edited" not in emulator.service(service["uuid"])["docker_compose_raw"]
    assert _plan(sandbox)[0] == 0


def test_orphans_are_reported_and_pruned_only_when_asked(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.write_env_text(coolify_env(projects=("shop", "old")))
    sandbox.cli("provision")
    sandbox.write_env_text(coolify_env(projects=("shop",)))
    code, items = _plan(sandbox)
    assert code == 2 and ("old", "orphan") in [(i["project"], i["outcome"]) for i in items]
    assert len(emulator.find_services()) == 2
    sandbox.cli("provision", "--prune", "--yes")
    assert [s["name"] for s in emulator.find_services()] == ["shop"]


@pytest.mark.subprocess_cli  # end to end: python -m invoke in a subprocess
def test_a_failed_update_is_rolled_back_on_coolify(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.write_env_text(coolify_env(timeout=6))
    sandbox.cli("provision")
    [service] = emulator.find_services()

    def responder(ctx):  # type: ignore[no-untyped-def]
        deployed = emulator.service(ctx.service_uuid) or {}
        broken = "postgrest:v99" in str(deployed.get("docker_compose_raw")) and not deployed.get("config_changed")
        return (503, {}, b"no available server") if broken else (200, {"Content-Type": "application/json"}, b"{}")

    emulator.set_proxy_responder(responder)
    sandbox.write_env_text(coolify_env(NEW_API, timeout=6))
    result = sandbox.cli("provision", "--json", check=False)
    assert result.returncode != 0
    assert result.json()["projects"][0]["status"] == "rolled back"
    stored = emulator.service(service["uuid"])["docker_compose_raw"]
    assert "postgrest/postgrest:v12.2.3" in stored and "v99" not in stored
    sandbox.write_env_text(coolify_env(timeout=6))
    assert sandbox.cli("provision", "--json").json()["projects"][0]["action"] == "no-op"
