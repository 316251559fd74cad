"""The Coolify backend end to end through the real commands, against the emulator."""

from __future__ import annotations

import base64
import shutil

import pytest

from tests.coolify.conftest import TOKEN, coolify_env, methods, stack_changes
from tests.coolify_emulator import CoolifyEmulator
from tests.sandbox import Sandbox
from tests.unit.test_offsite import CA_PEM


@pytest.mark.subprocess_cli  # end to end: python -m invoke in a subprocess
def test_fresh_provision_creates_project_environment_service_and_waits(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    result = sandbox.cli("provision", "--json")
    assert f"[Provisioning] Using Coolify provider ({emulator.base_url})" in result.stderr
    [shop] = result.json()["projects"]
    assert shop["backend"] == "coolify" and shop["status"] == "running" and shop["action"] == "create"
    assert shop["api_url"].startswith("http://api-") and shop["api_url"].endswith(".127.0.0.1.sslip.io")
    assert shop["db_url_scope"] == "internal" and "***" in shop["db_url"]

    [project] = emulator.find_projects("shop")
    services = emulator.find_services()
    assert len(services) == 1
    envs = emulator.envs(services[0]["uuid"])
    assert len(envs["DB_PASSWORD"] or "") == 48 and len(envs["JWT_SECRET"] or "") == 48
    status = emulator.service_status(services[0]["uuid"])
    assert status.startswith("running")
    posts = stack_changes(emulator)
    assert posts[:2] == ["POST /projects", f"POST /projects/{project['uuid']}/environments"]
    assert "POST /services" in posts and f"POST /services/{services[0]['uuid']}/start" in posts


def test_no_op_rerun_makes_only_get_requests(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    emulator.requests.clear()
    again = sandbox.cli("provision", "--json").json()["projects"][0]
    assert again["changed"] is False and again["action"] == "no-op"
    assert emulator.requests and all(r.method == "GET" for r in emulator.requests)
    assert len(emulator.requests) <= 3


def test_a_fresh_provision_takes_ten_requests_and_goes_to_the_remembered_server(
        sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.write_env_text(coolify_env(projects=("shop", "blog", "wiki")))
    sandbox.cli("provision", "--project=shop")  # the first on this server: makes the lock project, finds the server
    [locks] = [p for p in emulator.find_projects() if p["name"].startswith("provision-locks-")]
    [server] = {s["server_uuid"] for s in emulator.find_services()}
    assert f"server={server}" in locks["description"]
    emulator.requests.clear()
    sandbox.cli("provision", "--project=blog")
    sent = [m for m in methods(emulator) if not m.startswith("GET /services/")]  # less the wait's status polls
    # lock included (POST and DELETE of its variable) and GET /version (once, before the lock); the rest is the
    # one-off task that makes the database's roles (docs/security.md): one command runs the script the db
    # container holds in PROVISION_ROLES (set with the secrets), so POST, POST execute, DELETE
    tasks = [r for r in sent if "/scheduled-tasks" in r and not r.startswith("GET ")]
    assert len(tasks) == 3 and tasks[1].endswith("/execute") and tasks[2].startswith("DELETE"), tasks
    assert not any(r.startswith("PATCH") and "/scheduled-tasks/" in r for r in sent), sent  # sent in no pieces
    assert len(sent) - len(tasks) - sum("/executions" in r for r in sent) <= 10, sent
    assert sent.count("GET /version") == 1 and "GET /servers" not in sent, sent
    assert [r for r in sent if "/envs" in r and locks["uuid"] in r] == [
        f"POST /projects/{locks['uuid']}/envs", f"DELETE /projects/{locks['uuid']}/envs/2"]  # the 2nd lock taken

    # a remembered server that is gone is chosen again, and that one remembered
    emulator.core.store.projects[locks["uuid"]].description = locks["description"].replace(server, "gone0000000000000000")
    emulator.requests.clear()
    assert sandbox.cli("provision", "--project=wiki", "--json").json()["projects"][0]["status"] == "running"
    assert "GET /servers" in methods(emulator)
    assert f"server={server}" in str(emulator.project(locks["uuid"])["description"])


def test_a_fresh_state_directory_finds_everything_again(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    first = sandbox.cli("provision", "--json", "--show-secrets").json()["projects"][0]
    shutil.rmtree(sandbox.state_dir)
    emulator.requests.clear()
    again = sandbox.cli("provision", "--json", "--show-secrets").json()["projects"][0]
    assert again["action"] == "no-op" and again["db_url"] == first["db_url"]
    assert all(r.method == "GET" for r in emulator.requests)
    assert len(emulator.find_projects("shop")) == 1 and len(emulator.find_services()) == 1


def test_a_changed_image_patches_and_restarts(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    password = emulator.envs(emulator.find_services()[0]["uuid"])["DB_PASSWORD"]
    sandbox.write_env_text(coolify_env({"db": "postgres:16-alpine", "api": "postgrest/postgrest:v12.2.4"}))
    emulator.requests.clear()
    update = sandbox.cli("provision", "--json").json()["projects"][0]
    assert update["action"] == "update" and update["changed"] is True
    [service] = emulator.find_services()
    changes = stack_changes(emulator)
    uuid = service["uuid"]
    assert changes == [f"PATCH /services/{uuid}", f"PATCH /services/{uuid}/envs/bulk", f"POST /services/{uuid}/restart"]
    assert "postgrest/postgrest:v12.2.4" in emulator.service(uuid)["docker_compose_raw"]
    assert emulator.envs(uuid)["DB_PASSWORD"] == password  # never rotated silently
    assert sandbox.cli("provision", "--json").json()["projects"][0]["action"] == "no-op"


@pytest.mark.subprocess_cli  # end to end: python -m invoke in a subprocess
def test_stop_start_restart(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    uuid = emulator.find_services()[0]["uuid"]
    assert sandbox.cli("stop", "--project=shop", "--json").json()["changed"] is True
    assert not emulator.service_status(uuid).startswith("running")
    assert sandbox.cli("stop", "--project=shop", "--json").json()["changed"] is False  # "already stopped" is fine
    started = sandbox.cli("start", "--project=shop", "--json").json()
    assert started["changed"] is True and started["status"] == "running"
    assert sandbox.cli("start", "--project=shop", "--json").json()["changed"] is False
    assert sandbox.cli("restart", "--project=shop", "--json").json()["status"] == "running"
    status = sandbox.cli("status", "--json").json()["projects"][0]
    assert status["status"] == "running" and status["db_url_scope"] == "internal"
    logs = sandbox.cli("logs", "--project=shop").stdout
    assert "db |" in logs or "api |" in logs or "printed no logs" in logs
    assert sandbox.cli("logs", "--project=shop", "--since=2099-01-01T00:00:00Z").stdout.strip() == ""
    assert "shop" in sandbox.cli("list", f"--env={sandbox.env}").stdout


def test_destroy_keeps_volumes_then_delete_data(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    uuid = emulator.find_services()[0]["uuid"]
    destroyed = sandbox.cli("destroy", "--project=shop")
    [delete] = [r for r in emulator.requests if r.method == "DELETE" and r.path == f"/services/{uuid}"]
    assert delete.query == {"delete_volumes": "false"}
    assert emulator.find_services() == [] and emulator.find_projects("shop") == []
    assert any(v for v in emulator.volumes() if uuid in str(v))  # the data volume stays on the server
    assert "credentials are kept" in destroyed.stderr

    sandbox.cli("provision")
    refused = sandbox.cli("destroy", "--project=shop", "--delete-data", "--yes", check=False)
    assert refused.returncode != 0 and "--no-backup" in refused.stderr
    assert len(emulator.find_services()) == 1
    sandbox.cli("destroy", "--project=shop", "--delete-data", "--yes", "--no-backup")
    deletes = [r.query for r in emulator.requests if r.method == "DELETE" and r.path.startswith("/services/")]
    assert deletes[-1] == {"delete_volumes": "true"}
    assert emulator.find_services() == []


@pytest.mark.subprocess_cli  # end to end: python -m invoke in a subprocess
def test_the_token_never_appears_in_output_or_state(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision", "--json")
    sandbox.cli("status")
    sandbox.cli("outputs", "--project=shop", "--format=json")
    sandbox.cli("render", "--project=shop")
    sandbox.cli("logs", "--project=shop")
    emulator.inject("500", method="GET", path=r"/projects$", times=None)
    sandbox.cli("provision", check=False)
    for output in sandbox.outputs:
        assert TOKEN not in output and "s3cr3t" not in output
    for path in sandbox.state_dir.rglob("*"):
        if path.is_file():
            assert "s3cr3t" not in path.read_text(errors="replace")


def test_a_coolify_older_than_4_3_0_is_refused_before_any_change(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    """Its project shared variables (the lock) and the task execute route came in 4.3.0: one line says so."""
    emulator.version = "4.2.0"
    result = sandbox.cli("provision", check=False)
    assert result.returncode != 0
    assert f"Coolify at {emulator.base_url} is version 4.2.0; provision needs 4.3.0 or newer" in result.stderr
    assert [r for r in emulator.requests if r.method != "GET"] == []  # nothing made, no lock taken
    assert emulator.find_projects() == [] and emulator.count("GET", "/version") == 1

    emulator.version = "4.3.0"
    assert sandbox.cli("provision", "--json").json()["projects"][0]["status"] == "running"


def test_the_offsite_service_gets_the_store_s_ca_without_a_file_and_a_rerun_is_a_no_op(
        sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    """backup.offsite.ca_cert on Coolify, where no file of this machine can be mounted: the PEM is in the offsite
    service's environment (base64, one line) of the stored compose, and the stack reads back unchanged."""
    (sandbox.root / "certs").mkdir()
    (sandbox.root / "certs" / "s3-ca.pem").write_text(CA_PEM)
    with (sandbox.root / "envs" / f"{sandbox.env}.env").open("a") as env:
        env.write("BACKUP_S3_ACCESS_KEY_ID=AKIAEXAMPLE\nBACKUP_S3_SECRET_ACCESS_KEY=s3-secret-value-9\n")
    sandbox.write_env_text(coolify_env(extra=(
        "backup:\n  continuous: true\n  offsite: {endpoint: 'https://minio.internal:9000', bucket: backups, "
        "ca_cert: certs/s3-ca.pem}\n")))
    sandbox.cli("provision", "--project=shop")
    [service] = emulator.find_services()
    offsite = emulator.service(service["uuid"])["compose"]["services"]["offsite"]  # type: ignore[index]
    environment = offsite["environment"]
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    assert base64.b64decode(environment["CA_CERT_BASE64"]).decode() == CA_PEM
    assert "volumes" not in offsite or all("pem" not in str(v) for v in offsite["volumes"])
    again = sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]
    assert again["action"] == "no-op"
