"""Every fault ends in success after a retry or in a clear error, and never in a duplicate resource."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.coolify.conftest import OWNER, TOKEN, make_sandbox
from tests.coolify_emulator import CoolifyEmulator
from tests.sandbox import Sandbox


def with_lock_project(emulator: CoolifyEmulator) -> None:
    """The owner's lock project, as an earlier change on this server left it."""
    emulator.create_project(f"provision-locks-{OWNER}", description=f"provision: owner:{OWNER} — locks")


RECOVERABLE: list[tuple[str, dict[str, Any]]] = [
    ("500 on a lookup", {"fault": "500", "method": "GET", "path": r"^/projects$"}),
    ("503 on the status poll", {"fault": "503", "method": "GET", "path": r"^/services/[^/]+$", "times": 2}),
    ("429 with Retry-After on the create", {"fault": "429", "method": "POST", "path": r"^/services$", "retry_after": 1}),
    ("hang past the client timeout", {"fault": "hang", "method": "GET", "path": r"^/servers$", "seconds": 5}),
    ("response lost after the project was created", {"fault": "drop", "method": "POST", "path": r"^/projects$", "after": True}),
    ("response lost after the service was created", {"fault": "drop", "method": "POST", "path": r"^/services$", "after": True}),
    ("hang after the service was created", {"fault": "hang", "method": "POST", "path": r"^/services$", "after": True, "seconds": 5}),
    ("environment create answered 500 after it happened", {"fault": "500", "method": "POST", "path": r"/environments$", "after": True}),
    ("lock taken, its answer a 500", {"fault": "500", "method": "POST", "path": r"^/projects/[^/]+/envs$", "after": True}),
    ("malformed JSON on a lookup", {"fault": "malformed", "method": "GET", "path": r"^/projects$"}),
    ("connection reset on the secrets", {"fault": "reset", "method": "PATCH", "path": r"/envs/bulk$"}),
    ("start answer lost", {"fault": "drop", "method": "POST", "path": r"/start$", "after": True}),
    ("latency on everything", {"fault": "latency", "seconds": 0.05}),
]


@pytest.mark.parametrize("fault", [f for _, f in RECOVERABLE], ids=[name for name, _ in RECOVERABLE])
def test_recoverable_faults_end_in_one_running_stack(sandbox: Sandbox, emulator: CoolifyEmulator,
                                                     fault: dict[str, Any]) -> None:
    with_lock_project(emulator)  # so that each fault hits the project's own requests
    emulator.inject(**fault)
    result = sandbox.cli("provision", "--json", timeout=120).json()["projects"][0]
    assert result["status"] == "running"
    assert len(emulator.find_projects("shop")) == 1
    assert len(emulator.find_services()) == 1
    assert len(emulator.find_projects()) == 2  # shop and the lock project
    # and the next run is a clean no-op
    emulator.clear_faults()
    emulator.requests.clear()
    assert sandbox.cli("provision", "--json").json()["projects"][0]["action"] == "no-op"
    assert all(r.method == "GET" for r in emulator.requests)


def test_a_persistent_server_error_is_a_clear_failure(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    emulator.inject("500", method="GET", path=r"^/projects$", times=None)
    result = sandbox.cli("provision", check=False)
    assert result.returncode != 0
    assert "GET" in result.stderr and "/projects" in result.stderr and "500" in result.stderr
    assert "Traceback" not in result.output
    assert emulator.find_projects() == []


def test_validation_errors_show_coolify_field_messages(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    emulator.inject("422", method="POST", path=r"^/services$",
                    body=json.dumps({"message": "Validation failed.", "errors": {"docker_compose_raw": ["The compose is invalid."]}}))
    result = sandbox.cli("provision", check=False)
    assert result.returncode != 0
    assert "422" in result.stderr and "docker_compose_raw: The compose is invalid." in result.stderr
    assert emulator.find_services() == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("bad-token", "invalid or expired"),
        ("api-disabled", "API access"),
        ("ip-not-allowed", "Allowed API IPs"),
        ("read-only-token", "lacks the 'write' ability"),
    ],
)
def test_auth_failures_say_what_to_do(tmp_path: Path, emulator: CoolifyEmulator, setup: str, expected: str) -> None:
    token = TOKEN
    if setup == "bad-token":
        token = "9|not-a-token"
    elif setup == "api-disabled":
        emulator.api_enabled = False
    elif setup == "ip-not-allowed":
        emulator.allowed_ips = ["10.9.8.7"]
    elif setup == "read-only-token":
        token = "8|read-only-token"
        emulator.add_token(token, abilities=("read", "read:sensitive"))
    box = make_sandbox(tmp_path, emulator, token)
    result = box.cli("provision", check=False)
    assert result.returncode != 0
    assert expected in result.stderr
    assert token not in result.output
    assert emulator.find_services() == []


def test_without_read_sensitive_an_existing_password_is_never_replaced(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    box = make_sandbox(tmp_path, emulator)
    box.cli("provision")
    uuid = emulator.find_services()[0]["uuid"]
    password = emulator.envs(uuid)["DB_PASSWORD"]
    limited = "6|no-sensitive"
    emulator.add_token(limited, abilities=("read", "write", "deploy"))
    emulator.requests.clear()
    other = make_sandbox(tmp_path / "other-machine", emulator, limited, env=box.env)
    result = other.cli("provision", check=False)
    assert result.returncode != 0 and "read:sensitive" in result.stderr
    assert emulator.envs(uuid)["DB_PASSWORD"] == password
    assert all(r.method == "GET" for r in emulator.requests)
