"""`provision doctor` against the emulator: one test per failure it names, the all-ok run, --json, and that it
leaves nothing behind (no throwaway in Coolify, no state, no task ever run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.coolify.conftest import coolify_env, make_sandbox
from tests.coolify_emulator import CoolifyEmulator
from tests.sandbox import CLIResult, Sandbox

CHECKS = ["version", "abilities", "server", "lock project", "task"]


def lines(result: CLIResult) -> dict[str, str]:
    """Each check's first line, by name (the status is the line's first word)."""
    found = {}
    for line in result.stdout.splitlines():
        for name in CHECKS:
            if line.split(maxsplit=1)[-1].startswith(name + " ") and line.split()[0] in ("ok", "failed", "skipped"):
                found.setdefault(name, line)
    return found


def flat(result: CLIResult) -> str:
    """stdout with the wrapping undone (every run of whitespace one space)."""
    return " ".join(result.stdout.split())


def status(result: CLIResult) -> dict[str, str]:
    return {name: line.split()[0] for name, line in lines(result).items()}


def nothing_left(emulator: CoolifyEmulator, sandbox: Sandbox) -> None:
    emulator.wait_idle(10)
    assert [p["name"] for p in emulator.find_projects()] == []
    assert emulator.find_services() == []
    assert emulator.count(method="POST", path=r".*/execute") == 0  # a doctor never runs a task
    state = sandbox.state_dir / sandbox.env
    assert not state.exists() or not any(state.iterdir())  # no record, no secrets


def test_all_checks_pass_and_leave_nothing_behind(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    result = sandbox.cli("doctor")
    assert status(result) == {name: "ok" for name in CHECKS}, result.output
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    assert "4.3.11" in lines(result)["version"]
    assert "all checks passed" in result.stdout
    # what provision itself sends was sent: a project, the lock's description, a lock, a service, a task
    assert emulator.count(method="POST", path=r"^/projects$") == 1
    assert emulator.count(method="PATCH", path=r"^/projects/[^/]+$") == 1
    assert emulator.count(method="POST", path=r"^/projects/[^/]+/envs$") == 2  # the lock, and a refused second taker
    assert emulator.count(method="POST", path=r"^/projects/[^/]+/envs$", status=409) == 1
    assert emulator.count(method="POST", path=r"^/services$", status=201) == 1
    assert emulator.count(method="POST", path=r".*/scheduled-tasks", status=201) == 1
    assert emulator.count(method="DELETE", path=r".*/scheduled-tasks/[^/]+", status=200) == 1
    nothing_left(emulator, sandbox)


def test_json_lists_every_check(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    data = sandbox.cli("doctor", "--json").json()
    assert data["ok"] is True and data["backend"] == "coolify" and data["env"] == sandbox.env
    assert [c["name"] for c in data["checks"]] == CHECKS
    for check in data["checks"]:
        assert set(check) == {"name", "ok", "status", "detail", "fix"}
        assert check["ok"] is True and check["status"] == "ok" and check["detail"] and check["fix"] == ""


def test_an_old_coolify_fails_and_nothing_is_created(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    emulator.core.version = "4.2.9"
    result = sandbox.cli("doctor", check=False)
    assert result.returncode == 1, result.output
    assert status(result) == {"version": "failed", **{name: "skipped" for name in CHECKS[1:]}}
    assert f"Coolify 4.2.9 answers at {emulator.base_url}; provision needs 4.3.0 or newer" in flat(result)
    assert "fix: upgrade Coolify to 4.3.0 or newer" in flat(result)
    assert {r.method for r in emulator.requests} == {"GET"}
    data = sandbox.cli("doctor", "--json", check=False).json()
    assert [c["ok"] for c in data["checks"]] == [False] * 5  # a check that could not run is not a pass
    assert [c["status"] for c in data["checks"]] == ["failed"] + ["skipped"] * 4


def test_an_unreachable_server_fails(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    sandbox = make_sandbox(tmp_path, emulator)
    sandbox.write_env_text(coolify_env(extra="  server: localhost\n"))
    emulator.set_server(emulator.localhost["uuid"], is_reachable=False)
    result = sandbox.cli("doctor", check=False)
    assert result.returncode == 1, result.output
    assert status(result) == {"version": "ok", "abilities": "ok", "server": "failed", "lock project": "ok",
                              "task": "skipped"}
    assert "unreachable in Coolify's last check" in flat(result)
    assert "fix: make the server reachable from Coolify over SSH" in flat(result)
    nothing_left(emulator, sandbox)


@pytest.mark.parametrize(("abilities", "missing"), [
    (("read", "write", "read:sensitive"), "deploy"),
    (("read", "write", "deploy"), "read:sensitive"),
])
def test_a_missing_ability_fails(tmp_path: Path, emulator: CoolifyEmulator, abilities: tuple[str, ...],
                                 missing: str) -> None:
    emulator.add_token("8|limited", abilities)
    sandbox = make_sandbox(tmp_path, emulator, token="8|limited")
    result = sandbox.cli("doctor", check=False)
    assert result.returncode == 1, result.output
    assert status(result) == {"version": "ok", "abilities": "failed", "server": "ok", "lock project": "ok",
                              "task": "ok"}
    data = sandbox.cli("doctor", "--json", check=False).json()
    abilities_check = data["checks"][1]
    assert f"missing {missing}:" in abilities_check["detail"]
    assert "root, or read + write + deploy + read:sensitive" in abilities_check["fix"]
    assert emulator.count(method="POST", path=r".*/(start|stop|restart|deploy|execute)") == 0
    nothing_left(emulator, sandbox)


def test_without_write_nothing_is_created(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    emulator.add_token("8|readonly", ("read", "deploy", "read:sensitive"))
    sandbox = make_sandbox(tmp_path, emulator, token="8|readonly")
    result = sandbox.cli("doctor", check=False)
    assert result.returncode == 1
    assert status(result) == {"version": "ok", "abilities": "failed", "server": "ok", "lock project": "skipped",
                              "task": "skipped"}
    assert "missing write" in flat(result)
    assert {r.method for r in emulator.requests} == {"GET"}


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_refused_description_fails(sandbox: Sandbox, emulator: CoolifyEmulator, method: str) -> None:
    """A Coolify that refuses provision's project (POST) or lock project (PATCH) description, as 4.3.11's
    descriptionRules() refuse a ':' or a '—'."""
    emulator.inject("422", method=method, path=r"^/projects(/[^/]+)?$", times=None,
                    body=json.dumps({"message": "Validation failed.",
                                     "errors": {"description": ["The description field format is invalid."]}}).encode())
    result = sandbox.cli("doctor", check=False)
    assert result.returncode == 1, result.output
    assert status(result)["lock project"] == "failed"
    assert status(result)["task"] == ("skipped" if method == "POST" else "ok")
    assert "The description field format is invalid." in flat(result)
    assert "refuses provision's description" in flat(result)
    nothing_left(emulator, sandbox)


def test_a_refused_task_fails(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    """Coolify's answer to a command longer than its varchar(255) column: a 500 from the database."""
    emulator.inject("500", method="POST", path=r"/scheduled-tasks$", times=None)
    result = sandbox.cli("doctor", check=False)
    assert result.returncode == 1, result.output
    assert status(result) == {"version": "ok", "abilities": "ok", "server": "ok", "lock project": "ok",
                              "task": "failed"}
    assert "255 characters of its scheduled_tasks.command column" in flat(result)
    nothing_left(emulator, sandbox)


def test_a_throwaway_that_could_not_be_removed_is_named(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    emulator.inject("500", method="DELETE", path=r"^/projects/[^/]+$", times=None)
    result = sandbox.cli("doctor", check=False)
    assert result.returncode == 1
    assert status(result)["lock project"] == "failed"
    [left] = [p["name"] for p in emulator.find_projects()]
    assert left.startswith("provision-doctor-") and f"delete the project '{left}'" in flat(result)
    emulator.clear_faults()
    again = sandbox.cli("doctor")  # the next run passes, names the one left, and leaves it alone
    assert left in flat(again) and "interrupted" in flat(again)
    assert [p["name"] for p in emulator.find_projects()] == [left]


def test_a_local_env_checks_the_engine_and_compose(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    """On a local env: the Docker Engine and Compose v2, as provision runs them (PROVISION_COMPOSE here: a
    stand-in that answers like Compose v1, so no engine is needed and the check must fail)."""
    sandbox = make_sandbox(tmp_path, emulator)
    sandbox.write_env(["shop"])
    fake = tmp_path / "compose-v1"
    fake.write_text("#!/bin/sh\necho 1.29.2\n")
    fake.chmod(0o755)
    result = sandbox.cli("doctor", "--json", check=False, extra_env={"PROVISION_COMPOSE": str(fake)})
    assert result.returncode == 1, result.output
    data = result.json()
    assert data["backend"] == "local"
    assert [c["name"] for c in data["checks"]] == ["docker engine", "compose v2"]
    assert data["checks"][1]["ok"] is False and "Compose v1" in data["checks"][1]["detail"]
    assert emulator.requests == [] or all(r.method == "GET" for r in emulator.requests)
