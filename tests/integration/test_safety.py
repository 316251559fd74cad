"""Concurrency, interruption, bad input and secrecy on a real Docker Engine."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import Sandbox, _docker, sql
from tests.unit.test_names import BAD_NAMES
from tests.waiting import run_state, wait_until


def test_second_provision_is_a_no_op_with_the_same_ports_and_password(sandbox: Sandbox) -> None:
    first = sandbox.cli("provision", "--json", "--show-secrets").json()["projects"][0]
    password = sandbox.secrets("shop")["DB_PASSWORD"]
    second = sandbox.cli("provision", "--json", "--show-secrets").json()["projects"][0]
    assert second["changed"] is False and second["action"] == "no-op"
    assert (second["api_url"], second["db_url"]) == (first["api_url"], first["db_url"])
    assert sandbox.secrets("shop")["DB_PASSWORD"] == password


def test_concurrent_provisions_of_one_project_are_serialized(sandbox: Sandbox) -> None:
    runs = [sandbox.popen("provision", "--project=shop", "--json") for _ in range(3)]
    results = []
    for proc in runs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out)["projects"][0])
    assert sorted(r["action"] for r in results) == ["create", "no-op", "no-op"]
    assert len({r["db_url"] for r in results}) == 1
    assert len({r["api_url"] for r in results}) == 1
    names = _docker("ps", "-a", "--format", "{{.Names}}", "--filter", f"label=io.provision.env={sandbox.env}").stdout
    assert sorted(names.split()) == [f"shop_{sandbox.env}-api-1", f"shop_{sandbox.env}-db-1"]
    state = json.loads((sandbox.state_dir / sandbox.env / "shop" / "state.json").read_text())
    assert state["status"] == "provisioned"


def test_a_waiting_run_gives_up_clearly_after_the_lock_timeout(sandbox: Sandbox) -> None:
    from filelock import FileLock

    lock_path = sandbox.state_dir / sandbox.env / "shop" / "lock"
    lock_path.parent.mkdir(parents=True)
    with FileLock(str(lock_path)):
        result = sandbox.cli("provision", "--project=shop", "--lock-timeout=1", check=False)
    assert result.returncode != 0
    assert "another run is operating on project 'shop'" in result.stderr and "--lock-timeout" in result.stderr
    assert _docker("ps", "-aq", "--filter", f"label=io.provision.env={sandbox.env}").stdout == ""


def test_provision_killed_mid_way_is_completed_by_the_next_run(sandbox: Sandbox) -> None:
    proc = sandbox.popen("provision", "--project=shop")
    # kill once compose has started creating containers, before the stack is healthy
    wait_until(lambda: _docker("ps", "-aq", "--filter", f"label=io.provision.env={sandbox.env}").stdout.strip(),
               60, "a container of the provision run to appear", detail=lambda: run_state(proc))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    result = sandbox.cli("provision", "--project=shop", "--json", "--lock-timeout=30").json()["projects"][0]
    assert result["status"] == "running"
    _, db_url = (lambda d: (d["api_url"], d["db_url"]))(
        sandbox.cli("outputs", "--project=shop", "--format=json", "--show-secrets").json())
    assert sql(db_url, "SELECT 1") == [(1,)]
    assert sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]["action"] == "no-op"


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_project_names_are_refused_with_nothing_created(sandbox: Sandbox, name: str) -> None:
    result = sandbox.cli("provision", f"--project={name}", check=False)
    assert result.returncode != 0
    assert "project name" in result.stderr
    assert _docker("ps", "-aq", "--filter", f"label=io.provision.env={sandbox.env}").stdout == ""
    assert not (sandbox.state_dir / sandbox.env).exists() or list((sandbox.state_dir / sandbox.env).iterdir()) == []


def test_a_stack_that_never_gets_healthy_fails_with_the_log_tail(sandbox: Sandbox) -> None:
    # the api image is swapped for the bare base image: its command exits at once
    sandbox.write_env(["shop"], timeout=8,
                      images={"db": sandbox.images["db"], "api": "provision-test/debian-base:bookworm"})
    result = sandbox.cli("provision", "--project=shop", check=False)
    assert result.returncode != 0
    # it exits and restarts: the wait ends at once (not after health.timeout), with the log tail
    assert "api restarting" in result.stderr or "api exited" in result.stderr, result.stderr
    assert "crashed: the wait ended at once" in result.stderr and "log tail" in result.stderr


def test_engine_unreachable_is_a_clear_error(sandbox: Sandbox) -> None:
    result = sandbox.cli("provision", "--project=shop", check=False,
                         extra_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode != 0
    assert "Docker Engine is not reachable" in result.stderr
    assert "Traceback" not in result.output


def test_no_secret_appears_in_any_output(sandbox: Sandbox) -> None:
    sandbox.write_env(["shop"], timeout=30)
    sandbox.cli("provision", "--json")
    sandbox.cli("provision")
    sandbox.cli("status", "--json")
    sandbox.cli("status")
    sandbox.cli("render", "--project=shop")
    sandbox.cli("logs", "--project=shop")
    sandbox.cli("list", f"--env={sandbox.env}", "--json")
    sandbox.cli("restart", "--project=shop")
    sandbox.cli("stop", "--project=shop")
    sandbox.cli("outputs", "--project=nope", check=False)
    sandbox.cli("destroy", "--project=shop", "--delete-data", check=False)
    secrets = sandbox.secrets("shop")
    assert len(secrets["DB_PASSWORD"]) >= 32
    for output in sandbox.outputs:
        for value in secrets.values():
            assert value not in output
    # ...but they are there when asked for explicitly, and in outputs for machines (that is their purpose)
    shown = sandbox.cli("outputs", "--project=shop", "--show-secrets").stdout
    assert secrets["DB_PASSWORD"] in shown
    assert secrets["DB_PASSWORD"] in sandbox.cli("outputs", "--project=shop", "--format=json").json()["db_url"]
    # the compose file holds the API's login, never the owner's password (docs/security.md)
    assert secrets["AUTHENTICATOR_PASSWORD"] in sandbox.cli("render", "--project=shop", "--show-secrets").stdout


def test_a_kept_volume_without_its_secrets_file_is_never_given_a_new_password(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    sandbox.cli("destroy", "--project=shop")  # keeps the data volume and the secrets file
    (sandbox.state_dir / sandbox.env / "shop" / "secrets.env").unlink()  # ...which then gets lost
    refused = sandbox.cli("provision", "--project=shop", check=False)
    assert refused.returncode != 0 and "data volume" in refused.stderr and "restore it" in refused.stderr
    project = f"label=com.docker.compose.project={sandbox.compose_name('shop')}"
    assert _docker("ps", "-aq", "--filter", project).stdout == ""  # nothing started on the old data
    assert _docker("volume", "ls", "-q", "--filter", project).stdout.strip()  # the data is still there
    assert not (sandbox.state_dir / sandbox.env / "shop" / "secrets.env").exists()  # no new password made
