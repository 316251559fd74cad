"""status tells a stack that lost a service (an apply interrupted after the db came up) from a running one."""

from __future__ import annotations

from tests.conftest import Sandbox, _docker


def test_a_stack_with_only_its_db_is_partial(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    assert sandbox.cli("status", "--project=shop", "--json").json()["projects"][0]["status"] == "running"
    assert _docker("rm", "-f", f"{sandbox.compose_name('shop')}-api-1").returncode == 0
    [shop] = sandbox.cli("status", "--project=shop", "--json").json()["projects"]
    assert shop["status"] == "partial" and [s["service"] for s in shop["services"]] == ["db"]
    assert "partial" in sandbox.cli("status").stdout
    sandbox.cli("provision", "--project=shop")  # provision completes it
    assert sandbox.cli("status", "--project=shop", "--json").json()["projects"][0]["status"] == "running"
