"""A Coolify server shared by several checkouts and runners, as a real one behaves (realistic timings)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from provision.backends.coolify import marks
from tests.coolify.conftest import OWNER, coolify_env, make_sandbox, methods, stack_changes
from tests.coolify_emulator import CoolifyEmulator
from tests.coolify_emulator.validation import is_valid_description
from tests.sandbox import Sandbox


def _checkout(tmp_path: Path, emulator: CoolifyEmulator, name: str, owner: str, projects: tuple[str, ...]) -> Sandbox:
    box = make_sandbox(tmp_path / name, emulator, env="st-shared")
    box.write_env_text(coolify_env(projects=projects, owner=owner))
    return box


def test_two_checkouts_share_an_env_without_touching_each_other(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    team_a = _checkout(tmp_path, emulator, "a", "team-a-0001", ("shop",))
    team_b = _checkout(tmp_path, emulator, "b", "team-b-0001", ("blog",))
    team_a.cli("provision")
    team_b.cli("provision")
    listed = team_a.cli("status", "--json").json()["projects"]
    assert [p["project"] for p in listed] == ["shop"]
    plan = team_a.cli("plan", "--json").json()["projects"]
    assert [(p["project"], p["outcome"]) for p in plan] == [("shop", "no-op")]  # blog is no orphan of A's
    team_a.cli("provision", "--prune", "--yes")
    assert sorted(s["name"] for s in emulator.find_services()) == ["blog", "shop"]
    assert emulator.service_status(emulator.find_services("blog")[0]["uuid"]).startswith("running")

    # B declares a project named like A's: refused, and A's stack is not changed
    [shop] = emulator.find_services("shop")
    before = emulator.service(shop["uuid"])
    team_b.write_env_text(coolify_env(projects=("blog", "shop"), owner="team-b-0001"))
    refused = team_b.cli("provision", "--project=shop", check=False)
    assert refused.returncode != 0 and "belongs to another checkout or team (owner team-a-0001" in refused.stderr
    after = emulator.service(shop["uuid"])
    assert after is not None and before is not None
    assert (after["description"], after["docker_compose_raw"]) == (before["description"], before["docker_compose_raw"])
    assert team_b.cli("destroy", "--project=shop", check=False).returncode != 0
    assert emulator.find_services("shop")


def test_destroy_leaves_a_hand_made_project_and_environment_alone(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    project = emulator.create_project("shop")
    emulator.create_environment(project["uuid"], sandbox.env)
    sandbox.cli("destroy", "--project=shop")
    assert emulator.find_projects("shop") and not [m for m in methods(emulator) if m.startswith("DELETE")]


def _old_form(description: str, *, owner: bool = True) -> str:
    """A service description as provision wrote it before marks.py (`key:value`, ` — `; without an owner id
    before owner ids), with the marks of `description`."""
    found = marks.parse(description)
    mem = f" mem:{found.memory}" if found.memory else ""
    return (f"provision:{found.config_hash} compose:{found.compose}" + (f" owner:{found.owner}" if owner else "")
            + f"{mem} — managed by provision; edits to the compose in Coolify are reported as drift")


def test_a_legacy_service_is_adopted_only_when_asked(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    [service] = emulator.find_services("shop")
    [project] = emulator.find_projects("shop")
    # as provision made them before owner ids
    emulator.core.store.services[service["uuid"]].description = _old_form(service["description"], owner=False)
    emulator.core.store.projects[project["uuid"]].description = marks.LEGACY_PROJECT
    refused = sandbox.cli("provision", check=False)
    assert refused.returncode != 0 and "without an owner id" in refused.stderr and "invoke adopt" in refused.stderr
    assert sandbox.cli("adopt", "--project=shop", check=False).returncode != 0  # needs --yes
    adopted = sandbox.cli("adopt", "--project=shop", "--yes", "--json").json()
    assert adopted["changed"] is True
    # both now carry the owner, in the form Coolify's description rule takes, the stack's hashes kept
    described = emulator.core.store.services[service["uuid"]].description or ""
    assert described == service["description"]  # as provision writes it now
    assert emulator.project(project["uuid"])["description"] == marks.project_description(OWNER)
    assert is_valid_description(described) and len(described) <= 255
    assert sandbox.cli("provision", "--json").json()["projects"][0]["action"] == "no-op"


def test_stacks_described_in_the_old_form_stay_ours(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    """Service, project and lock project described as provision did before its descriptions passed Coolify's
    rule: a fresh clone finds them as its own, changes no description just to rewrite it, writes the new form
    with the next change it makes anyway, and destroy still removes the (old-form) project it made."""
    sandbox.cli("provision")
    [service] = emulator.find_services("shop")
    [project] = emulator.find_projects("shop")
    [locks] = emulator.find_projects(f"provision-locks-{OWNER}")
    store = emulator.core.store
    store.services[service["uuid"]].description = old = _old_form(service["description"])
    store.projects[project["uuid"]].description = f"provision: owner:{OWNER} — managed by provision"
    store.projects[locks["uuid"]].description = (
        f"provision: owner:{OWNER} server:{service['server_uuid']} — locks of provision runs (a project variable per "
        f"running change); new services go to that server")
    shutil.rmtree(sandbox.state_dir)  # a fresh clone: everything is found by name and description
    emulator.requests.clear()
    again = sandbox.cli("provision", "--json").json()["projects"][0]
    assert (again["action"], again["changed"]) == ("no-op", False)  # ours, and its hash still read
    assert stack_changes(emulator) == [] and "POST /projects" not in methods(emulator)  # not even the lock project
    assert store.services[service["uuid"]].description == old  # never PATCHed just to rewrite it

    sandbox.write_env_text(coolify_env(extra="resources:\n  db: {memory: 512M}\n"))  # a change: PATCHed anyway
    changed = sandbox.cli("provision", "--json").json()["projects"][0]
    assert changed["action"] == "update" and [s["uuid"] for s in emulator.find_services("shop")] == [service["uuid"]]
    described = store.services[service["uuid"]].description or ""
    assert described.startswith("provision=") and f" owner={OWNER} mem=" in described and ":" not in described
    assert is_valid_description(described) and len(described) <= 255
    assert sandbox.cli("provision", "--json").json()["projects"][0]["action"] == "no-op"

    sandbox.cli("destroy", "--project=shop")
    assert emulator.find_projects("shop") == []  # the old-form project was recognised as provision's own


def test_a_create_answered_after_the_client_timeout_makes_one_service(sandbox: Sandbox,
                                                                     emulator: CoolifyEmulator) -> None:
    # the request reaches Coolify only after the client (request_timeout 3 s) gave up on it
    emulator.inject("latency", method="POST", path=r"^/services$", seconds=5, times=1)
    result = sandbox.cli("provision", "--json", timeout=120).json()["projects"][0]
    assert result["status"] == "running"
    assert len(emulator.find_services()) == 1
    assert emulator.count(method="POST", path=r"/services") == 1


def test_duplicates_made_by_hand_stop_the_run_naming_each(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    [first] = emulator.find_services("shop")
    service = emulator.service(first["uuid"])
    assert service is not None
    second = emulator.create_service(emulator.find_projects("shop")[0]["uuid"], service["docker_compose_raw"],
                                     name="shop", environment=sandbox.env)
    emulator.core.store.services[second].description = service["description"]
    shutil.rmtree(sandbox.state_dir)  # a fresh clone: found by name
    failed = sandbox.cli("provision", check=False)
    assert failed.returncode != 0 and first["uuid"] in failed.stderr and second in failed.stderr


def test_an_unreadable_password_is_never_replaced(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    [service] = emulator.find_services("shop")
    env = next(e for e in emulator.core.store.envs_of(emulator.core.store.services[service["uuid"]])
               if e.key == "DB_PASSWORD")
    env.is_shown_once = True
    password = env.value
    sandbox.write_env_text(coolify_env({"db": "postgres:16-alpine", "api": "postgrest/postgrest:v12.2.4"}))
    emulator.requests.clear()
    refused = sandbox.cli("provision", check=False)
    assert refused.returncode != 0 and "will not give an existing database a new password" in refused.stderr
    # nothing generated, pushed or restarted (the run only took and released its lock)
    assert [m for m in methods(emulator) if "/services" in m and not m.startswith("GET")] == []
    assert emulator.envs(service["uuid"])["DB_PASSWORD"] == password


def test_restart_returns_only_after_the_restart_ran(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    [service] = emulator.find_services("shop")
    restarted = sandbox.cli("restart", "--project=shop", "--json").json()
    assert restarted["changed"] is True and restarted["status"] == "running"
    snapshot = emulator.service(service["uuid"])
    assert snapshot is not None and snapshot["pending"] == []  # the job had finished when restart returned
    history = [json.loads(line) for line in sandbox.cli("history", "--project=shop", "--json").stdout.splitlines()]
    assert [h["action"] for h in history][-1] == "restart"


# --- the lock every runner sees ------------------------------------------------------------------
def _hold_lock(emulator: CoolifyEmulator, box: Sandbox, *, expires: str, holder: str = "ci@other-runner") -> str:
    """A lock on `shop` as another runner holds it: the lock project and its variable, made by hand."""
    locks = emulator.create_project("provision-locks-test-owner-1",
                                    description="provision: owner:test-owner-1 — locks of provision runs")
    emulator.create_project_variable(
        locks["uuid"], f"lock.{box.env}.shop".replace("-", "_"), "held",
        comment=f"provision lock holder={holder} pid=4242 since=2026-11-30T08:00:00Z expires={expires}")
    return str(locks["uuid"])


def test_two_runners_on_different_machines_make_one_service(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    first = _checkout(tmp_path, emulator, "runner-1", "test-owner-1", ("shop",))
    second = _checkout(tmp_path, emulator, "runner-2", "test-owner-1", ("shop",))  # its own state directory
    runs = [box.popen("provision", "--json") for box in (first, second)]
    results = []
    for proc in runs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out)["projects"][0])
    assert sorted(r["action"] for r in results) == ["create", "no-op"]
    assert len(emulator.find_services("shop")) == 1 and len(emulator.find_projects("shop")) == 1
    assert emulator.count(method="POST", path=r"/projects/[^/]+/envs", status=409) >= 1  # one waited
    assert first.cli("lock", "--json").json() == {"locks": []}  # released


def test_a_held_lock_makes_a_change_wait_and_unlock_breaks_it(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    _hold_lock(emulator, sandbox, expires="2099-01-01T00:00:00Z")
    shown = sandbox.cli("lock", "--json").json()["locks"]
    assert [(lock["project"], lock["holder"], lock["stale"]) for lock in shown] == [
        ("shop", "ci@other-runner pid 4242", False)]
    waited = sandbox.cli("provision", "--lock-timeout=2", check=False)
    assert waited.returncode != 0 and "holds the Coolify lock" in waited.stderr and "ci@other-runner" in waited.stderr
    assert not emulator.find_services()
    assert sandbox.cli("unlock", "--project=shop", check=False).returncode != 0  # needs --yes
    assert "broke the lock" in sandbox.cli("unlock", "--project=shop", "--yes").stdout
    assert sandbox.cli("provision", "--json").json()["projects"][0]["action"] == "create"


def test_a_stale_lock_is_broken_by_the_next_change(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    _hold_lock(emulator, sandbox, expires="2026-01-01T00:00:00Z")
    assert sandbox.cli("lock", "--json").json()["locks"][0]["stale"] is True
    assert sandbox.cli("provision", "--json").json()["projects"][0]["action"] == "create"
    assert sandbox.cli("lock", "--json").json() == {"locks": []}


def test_a_no_op_takes_no_lock(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    emulator.requests.clear()
    assert sandbox.cli("provision", "--json").json()["projects"][0]["action"] == "no-op"
    assert [m for m in methods(emulator) if not m.startswith("GET")] == []
    assert len(emulator.requests) <= 3
