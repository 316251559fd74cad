"""A service's scheduled tasks (ScheduledTasksController, ScheduledTaskJob): CRUD, execute, executions."""

from __future__ import annotations

import time

import httpx

from tests.coolify_emulator import CoolifyEmulator


def _finished(client: httpx.Client, service: str, task: str, timeout: float = 10) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.get(f"/services/{service}/scheduled-tasks/{task}/executions").json()
        if runs and runs[0]["status"] != "running":
            return dict(runs[0])
        time.sleep(0.05)
    raise AssertionError("the execution did not finish")


def test_create_execute_read_delete(client: httpx.Client, emu: CoolifyEmulator, service: str) -> None:
    client.post(f"/services/{service}/start")
    emu.wait_idle()
    seen: list[tuple[str, str]] = []

    def runner(svc: object, container: str, command: str) -> tuple[int, str]:
        seen.append((container, command))
        return (0, "  PROVISION_RC=0\n") if "ok" in command else (3, "boom")

    emu.core.task_runner = runner
    created = client.post(f"/services/{service}/scheduled-tasks", json={
        "name": "provision-ok", "command": "echo ok", "frequency": "0 0 1 1 *", "container": "db", "enabled": False})
    assert created.status_code == 201
    task = created.json()
    assert (task["timeout"], task["enabled"], task["container"]) == (300, False, "db")
    assert client.get(f"/services/{service}/scheduled-tasks/{task['uuid']}/executions").json() == []
    queued = client.post(f"/services/{service}/scheduled-tasks/{task['uuid']}/execute")
    assert queued.json() == {"message": "Scheduled task execution queued."}  # no execution uuid
    run = _finished(client, service, task["uuid"])
    assert run["status"] == "success" and run["message"] == "PROVISION_RC=0" and isinstance(run["duration"], str)
    assert seen == [("db", "echo ok")]  # disabled tasks run on execute too

    client.patch(f"/services/{service}/scheduled-tasks/{task['uuid']}", json={"command": "false"})
    client.post(f"/services/{service}/scheduled-tasks/{task['uuid']}/execute")
    time.sleep(0.3)
    failed = _finished(client, service, task["uuid"])
    assert failed["status"] == "failed" and failed["message"] == "Job permanently failed after 1 attempts: boom"
    assert len(client.get(f"/services/{service}/scheduled-tasks/{task['uuid']}/executions").json()) == 2

    assert client.delete(f"/services/{service}/scheduled-tasks/{task['uuid']}").json() == {
        "message": "Scheduled task deleted."}
    assert client.get(f"/services/{service}/scheduled-tasks").json() == []
    assert client.post(f"/services/{service}/scheduled-tasks/{task['uuid']}/execute").status_code == 404


def test_fields_are_validated(client: httpx.Client, service: str) -> None:
    url = f"/services/{service}/scheduled-tasks"
    missing = client.post(url, json={"name": "x"})
    assert missing.status_code == 422 and {"command", "frequency"} <= set(missing.json()["errors"])
    bad_cron = client.post(url, json={"name": "x", "command": "true", "frequency": "now"})
    assert bad_cron.json()["errors"] == {"frequency": ["Invalid cron expression or frequency format."]}
    extra = client.post(url, json={"name": "x", "command": "true", "frequency": "daily", "user": "root"})
    assert extra.json()["errors"]["user"] == ["This field is not allowed."]
    task = client.post(url, json={"name": "x", "command": "true", "frequency": "daily"}).json()
    # updateTask calls validateIncomingRequest first (ScheduledTasksController.php:125-128): `{}` is "Empty JSON."
    assert client.patch(f"{url}/{task['uuid']}", json={}).json() == {"message": "Invalid request.",
                                                                      "error": "Empty JSON."}


def test_no_running_container_fails_the_run(client: httpx.Client, service: str) -> None:
    task = client.post(f"/services/{service}/scheduled-tasks", json={
        "name": "x", "command": "true", "frequency": "daily", "container": "db"}).json()
    client.post(f"/services/{service}/scheduled-tasks/{task['uuid']}/execute")
    run = _finished(client, service, task["uuid"])
    assert run["status"] == "failed" and "No containers running" in str(run["message"])


def test_a_command_over_255_characters_is_a_server_error(client: httpx.Client, service: str) -> None:
    """scheduled_tasks.command is varchar(255) (database/migrations/2023_12_31_173041_create_scheduled_tasks_table.php
    :19) and no rule limits it (ScheduledTasksController.php:62): PostgreSQL refuses the row, Laravel answers its
    production 500 and no task is stored; 255 characters are fine, on create and on update."""
    url = f"/services/{service}/scheduled-tasks"
    fits = client.post(url, json={"name": "x", "command": "x" * 255, "frequency": "daily"})
    assert fits.status_code == 201 and len(fits.json()["command"]) == 255
    too_long = client.post(url, json={"name": "y", "command": "x" * 256, "frequency": "daily"})
    assert (too_long.status_code, too_long.json()) == (500, {"message": "Server Error"})
    assert [t["name"] for t in client.get(url).json()] == ["x"]
    patched = client.patch(f"{url}/{fits.json()['uuid']}", json={"command": "y" * 256})
    assert (patched.status_code, patched.json()) == (500, {"message": "Server Error"})
    assert client.get(url).json()[0]["command"] == "x" * 255  # unchanged


def test_the_version_can_be_set(emu: CoolifyEmulator, client: httpx.Client) -> None:
    assert client.get("/version").text == "4.3.11"
    emu.version = "4.2.0"
    assert (client.get("/version").text, emu.version) == ("4.2.0", "4.2.0")
    with CoolifyEmulator(version="4.3.0") as other:
        assert other.version == "4.3.0"
