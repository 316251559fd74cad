"""Placement across coolify.servers on the emulator: spread by capacity, full and unreachable servers take
nothing, nothing is created when a project fits nowhere, and placement is sticky and found again from Coolify."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.coolify.conftest import TOKEN, coolify_env
from tests.coolify_emulator import CoolifyEmulator
from tests.sandbox import Sandbox
from tests.timing import Clock


@pytest.fixture
def emulator(clock: Clock) -> Iterator[CoolifyEmulator]:
    """Coolify without its queue delays: placement is about where stacks go, not how long Coolify takes."""
    with CoolifyEmulator(token=TOKEN, action_delay=0, clock=clock) as emu:
        yield emu

SERVERS = """  servers:
    - {name: small, max_stacks: 1}
    - {name: big, max_stacks: BIG, memory: 1GiB}
    - {name: down, max_stacks: 10}
"""


def _env(sandbox: Sandbox, projects: tuple[str, ...], big: int = 3) -> None:
    sandbox.write_env_text(coolify_env(projects=projects) + SERVERS.replace("BIG", str(big)))


def _servers_of(emulator: CoolifyEmulator, uuids: dict[str, str]) -> dict[str, str]:
    names = {uuid: name for name, uuid in uuids.items()}
    return {s["name"]: names[s["server_uuid"]] for s in emulator.find_services()}


def test_new_projects_go_where_there_is_room_and_stay_there(sandbox: Sandbox, emulator: CoolifyEmulator,
                                                           tmp_path: Path) -> None:
    uuids = {name: emulator.add_server(name, ip)["uuid"]
             for name, ip in (("small", "10.0.0.2"), ("big", "10.0.0.3"))}
    uuids["down"] = emulator.add_server("down", "10.0.0.4", reachable=False)["uuid"]
    projects = ("pr1", "pr2", "pr3", "pr4")

    # five projects, room for four (down is unreachable): refused before anything is created
    _env(sandbox, (*projects, "pr5"))
    plan = sandbox.cli("plan", check=False)
    assert "no server can take 'pr5'" in plan.stdout, plan.output
    refused = sandbox.cli("provision", check=False)
    assert refused.returncode == 1
    assert "no server can take 'pr5'" in refused.stderr and "small: full: 1 of 1 stacks" in refused.stderr
    assert "big: full: 3 of 3 stacks" in refused.stderr and "down: unreachable" in refused.stderr
    assert emulator.find_services() == []

    _env(sandbox, projects)
    assert "on server big" in sandbox.cli("plan", "--project=pr1").stdout
    sandbox.cli("provision", "--parallel=4")
    placed = _servers_of(emulator, uuids)
    assert sorted(placed.values()) == ["big", "big", "big", "small"]  # 1 of 1 and 3 of 3 (320M each of 1GiB)
    status = sandbox.cli("status", "--json").json()["projects"]
    assert {p["project"]: p["server"] for p in status} == placed
    # the server column is one of those a narrow terminal leaves out (these sslip URLs are long): --wide has it
    assert "SERVER" in sandbox.cli("status", "--wide").stdout
    assert "SERVER" in sandbox.cli("list", f"--env={sandbox.env}", "--wide").stdout

    # sticky: a roomier big server moves nothing, and a fresh state directory finds the same placement
    _env(sandbox, projects, big=50)
    again = sandbox.cli("provision", "--json").json()["projects"]
    assert not any(p["changed"] for p in again) and _servers_of(emulator, uuids) == placed
    fresh = {"PROVISION_STATE_DIR": str(tmp_path / "fresh-state")}
    assert "no changes" in sandbox.cli("plan", extra_env=fresh).stdout
    seen = sandbox.cli("status", "--json", extra_env=fresh).json()["projects"]
    assert {p["project"]: p["server"] for p in seen} == placed

    # a server that is reachable again takes what is new; full servers still take nothing
    emulator.set_server(uuids["down"], is_reachable=True)
    _env(sandbox, (*projects, "pr5"))
    sandbox.cli("provision", "--project=pr5")
    assert _servers_of(emulator, uuids) == {**placed, "pr5": "down"}
    assert placed == {"pr1": "big", "pr2": "big", "pr3": "small", "pr4": "big"}  # pr3: a tie, the first listed
