"""Asynchronous start/stop/restart/delete/deploy with status lag (pure mode)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.coolify_emulator import CoolifyEmulator, aggregate_status

NO_HEALTHCHECK = "services:\n  web:\n    image: nginx:1\n  worker:\n    image: busybox:1\n"


def status(client: httpx.Client, uuid: str) -> str:
    return str(client.get(f"/services/{uuid}").json()["status"])


def wait_status(client: httpx.Client, uuid: str, wanted: str, timeout: float = 5.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = status(client, uuid)
        if not seen or seen[-1] != current:
            seen.append(current)
        if current == wanted:
            return seen
        time.sleep(0.01)
    raise AssertionError(f"never reached {wanted}: {seen}")


def test_start_stop_with_lag(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    emu.action_delay, emu.start_seconds, emu.stop_seconds = 0.4, 0.3, 0.2
    resp = client.post(f"/services/{service}/start")
    assert resp.json() == {"message": "Service starting request queued."}
    assert status(client, service) == "exited"  # queued: the stored status does not move
    assert wait_status(client, service, "running:healthy") == ["exited", "starting:unhealthy", "running:healthy"]
    apps = client.get(f"/services/{service}").json()
    assert apps["applications"][0]["status"] == "running:healthy" and apps["config_hash"]
    resp = client.post(f"/services/{service}/start")
    assert (resp.status_code, resp.json()) == (400, {"message": "Service is already running."})
    assert client.post(f"/services/{service}/stop").json() == {"message": "Service stopping request queued."}
    assert status(client, service) == "running:healthy"  # still running until the job ran
    wait_status(client, service, "exited")
    resp = client.post(f"/services/{service}/stop")
    assert (resp.status_code, resp.json()) == (400, {"message": "Service is already stopped."})


def test_restart_keeps_the_old_status_while_it_stops_the_old_containers(
        emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    """StartService runs StopService first: the stored running:healthy stays while the job is queued and
    while the old containers are removed; starting:unhealthy shows only while the start activity runs."""
    emu.action_delay, emu.start_seconds, emu.stop_seconds = 0, 0.3, 0
    client.post(f"/services/{service}/start")
    assert emu.wait_idle(5)
    emu.action_delay, emu.stop_seconds = 0.3, 0.4
    started = time.monotonic()
    client.post(f"/services/{service}/restart")
    seen = wait_status(client, service, "starting:unhealthy")
    assert seen == ["running:healthy", "starting:unhealthy"] and time.monotonic() - started >= 0.6
    assert wait_status(client, service, "running:healthy") == ["starting:unhealthy", "running:healthy"]


def test_stored_statuses_lag_until_the_next_refresh(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    emu.action_delay, emu.start_seconds, emu.stop_seconds, emu.refresh_interval = 0, 0.2, 0, 1.0
    while time.monotonic() % 1.0 > 0.05:  # start just after a refresh tick, so the next is 0.8 s after the job
        time.sleep(0.005)
    client.post(f"/services/{service}/start")
    seen = wait_status(client, service, "running:healthy", timeout=5)
    # after the activity the containers run, but Coolify shows the stale "exited" until its next refresh
    assert seen == ["starting:unhealthy", "exited", "running:healthy"]


def test_stop_and_restart_store_exited_at_once(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    """StopService writes `exited` on every sub-resource right after removing the containers (StopService.php:
    49-53), not at the next refresh: a stop reads exited as soon as its job ran, and a restart reads exited after
    its start activity until the refresh that finds the new containers (never the old running:healthy)."""
    emu.action_delay, emu.start_seconds, emu.stop_seconds, emu.refresh_interval = 0, 0.05, 0, 0
    client.post(f"/services/{service}/start")
    assert emu.wait_idle(5) and status(client, service) == "running:healthy"
    emu.refresh_interval = 3.0
    while time.monotonic() % 3.0 > 0.05:  # just after a refresh tick: the next one is ~3 s away
        time.sleep(0.005)
    emu.action_delay, emu.start_seconds = 0.2, 0.3
    before = client.get(f"/services/{service}").json()
    client.post(f"/services/{service}/stop")
    assert status(client, service) == "running:healthy"  # queued: nothing moved yet
    seen = wait_status(client, service, "exited", timeout=1.0)  # the job ran: long before the next tick
    assert seen == ["running:healthy", "exited"]
    after = client.get(f"/services/{service}").json()
    subs = after["applications"] + after["databases"]
    assert {a["status"] for a in subs} == {"exited"}
    assert all(a["last_online_at"] != b["last_online_at"]  # stamped by the status change (the model's saving)
               for a, b in zip(subs, before["applications"] + before["databases"], strict=True))

    emu.refresh_interval, emu.action_delay = 0, 0
    client.post(f"/services/{service}/start")
    assert emu.wait_idle(5) and status(client, service) == "running:healthy"
    emu.refresh_interval = 3.0
    while time.monotonic() % 3.0 > 0.05:
        time.sleep(0.005)
    client.post(f"/services/{service}/restart")
    seen = wait_status(client, service, "running:healthy", timeout=5)
    assert seen == ["starting:unhealthy", "exited", "running:healthy"]


def test_every_refresh_stamps_last_online_at(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    emu.action_delay, emu.start_seconds, emu.refresh_interval = 0, 0.05, 0.5
    client.post(f"/services/{service}/start")
    assert emu.wait_idle(5)

    def stamps() -> list[str | None]:
        body = client.get(f"/services/{service}").json()
        return [a["last_online_at"] for a in body["applications"] + body.get("databases", [])]

    time.sleep(0.6)
    first, again = stamps(), stamps()
    if again != first:  # a refresh tick fell between the two reads (a loaded host): the next pair is settled
        first, again = again, stamps()
    assert all(first) and again == first  # within one refresh interval nothing moves
    time.sleep(0.6)
    assert all(a != b for a, b in zip(stamps(), first, strict=True))  # the next refresh stamps every container


def test_a_starting_healthcheck_aggregates_to_running_healthy(emu: CoolifyEmulator, client: httpx.Client,
                                                              service: str) -> None:
    emu.action_delay, emu.start_seconds, emu.health_start_seconds = 0, 0.1, 2.0
    client.post(f"/services/{service}/start")
    assert emu.wait_idle(5)
    body = client.get(f"/services/{service}").json()
    assert body["status"] == "running:healthy"
    assert "running:starting" in {a["status"] for a in body["applications"] + body.get("databases", [])}
    assert aggregate_status([("created", False)], False) == "starting:unknown"


def test_logs_of_containers_that_do_not_run(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    emu.action_delay, emu.start_seconds = 0, 0.05
    name = client.get(f"/services/{service}").json()["applications"][0]["name"]
    gone = client.get(f"/services/{service}/logs", params={"sub_service_name": name})
    assert (gone.status_code, gone.json()) == (404, {"message": "Container not found."})
    client.post(f"/services/{service}/start")
    assert emu.wait_idle(5)
    assert client.get(f"/services/{service}/logs", params={"sub_service_name": name}).status_code == 200
    emu.set_service_status(service, "exited", app=name)  # crashed: the container exists but does not run
    stopped = client.get(f"/services/{service}/logs", params={"sub_service_name": name})
    assert (stopped.status_code, stopped.json()) == (400, {"message": "Container is not running."})


def test_running_unknown_without_healthchecks(emu: CoolifyEmulator, client: httpx.Client,
                                              create_service: Callable[..., httpx.Response]) -> None:
    emu.action_delay = 0
    uuid = create_service(NO_HEALTHCHECK, instant_deploy=True).json()["uuid"]
    assert status(client, uuid) == "running:unknown"
    assert client.post(f"/services/{uuid}/restart").json() == {"message": "Service restarting request queued."}
    assert status(client, uuid) == "running:unknown"


def test_restart_and_deploy_endpoint(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    emu.action_delay, emu.start_seconds = 0, 0.3
    resp = client.post("/deploy", params={"uuid": service})
    assert resp.json() == {"deployments": [{
        "message": "Service stack started. It could take a while, be patient.", "resource_uuid": service}]}
    assert status(client, service) == "starting:unhealthy"
    assert emu.wait_idle(5)
    assert status(client, service) == "running:healthy"
    # no "already running" check on /deploy, and restart always queues
    assert client.post("/deploy", params={"uuid": service}).status_code == 200
    assert client.post(f"/services/{service}/restart", params={"latest": "true"}).status_code == 200
    assert status(client, service) == "starting:unhealthy"
    assert emu.wait_idle(5)
    assert client.post("/deploy", params={"uuid": "nope"}).json() == {"message": "No resources found."}
    assert client.post("/deploy").status_code == 400
    assert client.post("/deploy", params={"uuid": service, "tag": "x"}).status_code == 400


def test_deploy_by_tag(emu: CoolifyEmulator, client: httpx.Client,
                       create_service: Callable[..., httpx.Response]) -> None:
    emu.action_delay = 0
    uuid = create_service(tags=["blue", "green"]).json()["uuid"]
    create_service(name="untagged")
    resp = client.post("/deploy", params={"tag": "green"})
    assert [d["resource_uuid"] for d in resp.json()["deployments"]] == [uuid]


def test_delete_is_async_with_options(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    emu.action_delay = 0.4
    resp = client.delete(f"/services/{service}", params={"delete_volumes": "false"})
    assert resp.json() == {"message": "Service deletion request queued."}
    assert client.get(f"/services/{service}").status_code == 200  # still there for a while
    assert client.get(f"/services/{service}/envs").status_code == 200
    assert emu.requests.matching(method="DELETE")[0].query == {"delete_volumes": "false"}
    deadline = time.monotonic() + 5
    while client.get(f"/services/{service}").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert client.get(f"/services/{service}").json() == {"message": "Service not found."}
    assert client.get(f"/services/{service}/envs").status_code == 404
    assert client.delete(f"/services/{service}").status_code == 404
    assert emu.find_services() == []


def test_unreachable_server_never_runs(emu: CoolifyEmulator, client: httpx.Client,
                                       create_service: Callable[..., httpx.Response]) -> None:
    emu.action_delay = 0
    down = emu.add_server("down", "10.9.9.9", reachable=False)
    uuid = create_service(server_uuid=down["uuid"]).json()["uuid"]
    svc = client.get(f"/services/{uuid}").json()
    assert svc["server_status"] is False
    client.post(f"/services/{uuid}/start")
    assert status(client, uuid) == "exited"


def test_simulated_crash_and_helpers(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    emu.action_delay = 0
    client.post(f"/services/{service}/start")
    assert emu.service_status(service) == "running:healthy"
    emu.set_service_status(service, "exited", app="api")
    assert status(client, service) == "degraded:unhealthy"
    assert client.post(f"/services/{service}/start").status_code == 200  # not "running" any more
    assert status(client, service) == "running:healthy"
    emu.set_service_status(service, "running:unhealthy", app="db")
    assert status(client, service) == "running:unhealthy"
    emu.set_service_status(service, None)
    assert status(client, service) == "running:healthy"
    emu.edit_service_compose(service, NO_HEALTHCHECK)
    snap = emu.service(service)
    assert snap is not None and [a["name"] for a in snap["applications"]] == ["web", "worker"]
    assert emu.find_services(name="stack")[0]["uuid"] == service


def test_logs(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    emu.action_delay = 0
    client.post(f"/services/{service}/start")
    resp = client.get(f"/services/{service}/logs", params={"sub_service_name": "api", "lines": 10})
    assert resp.status_code == 200 and "Started" in resp.json()["logs"]
    # ServicesController::logs_by_uuid (:928-931, 941-943): no validator; the name first, then the container
    resp = client.get(f"/services/{service}/logs")
    assert (resp.status_code, resp.json()) == (400, {"message": "Sub service name is required."})
    assert client.get("/services/nope/logs", params={"sub_service_name": "api"}).status_code == 404
    resp = client.get(f"/services/{service}/logs", params={"sub_service_name": "x"})
    assert (resp.status_code, resp.json()) == (404, {"message": "Container not found."})
    # normalizeLogLines (bootstrap/helpers/docker.php:1480-1488): a bad `lines` is 100, never a 422
    assert client.get(f"/services/{service}/logs", params={"sub_service_name": "api", "lines": "x"}).status_code == 200


def test_volumes_and_deployed_config(emu: CoolifyEmulator, client: httpx.Client,
                                     create_service: Callable[..., httpx.Response]) -> None:
    emu.action_delay = 0
    keep = create_service(name="keep", instant_deploy=True).json()["uuid"]
    drop = create_service(name="drop", instant_deploy=True).json()["uuid"]
    assert emu.volumes() == sorted([f"{keep}_pg-data", f"{drop}_pg-data"])
    snap = emu.service(keep)
    assert snap is not None and snap["deployed_envs"]["POSTGRES_PASSWORD"] == "changeme"
    assert snap["config_changed"] is False
    client.patch(f"/services/{keep}/envs", json={"key": "POSTGRES_PASSWORD", "value": "rotated"})
    snap = emu.service(keep)
    assert snap is not None and snap["config_changed"] is True  # needs a restart to apply
    assert snap["deployed_envs"]["POSTGRES_PASSWORD"] == "changeme"
    client.post(f"/services/{keep}/restart")
    snap = emu.service(keep)
    assert snap is not None and snap["deployed_envs"]["POSTGRES_PASSWORD"] == "rotated"
    client.delete(f"/services/{keep}", params={"delete_volumes": "false"})
    client.delete(f"/services/{drop}")
    assert emu.wait_idle(5)
    assert emu.volumes() == [f"{keep}_pg-data"]  # a plain DELETE destroys data volumes


@pytest.mark.parametrize("subs,starting,expected", [
    ([], False, "exited"),
    ([("running:healthy", False), ("running:healthy", False)], False, "running:healthy"),
    ([("running:healthy", False), ("running:unknown", False)], False, "running:unknown"),
    ([("running:healthy", False), ("running:unhealthy", False)], False, "running:unhealthy"),
    ([("running:healthy", False), ("exited", False)], False, "degraded:unhealthy"),
    ([("running:healthy", False), ("exited", True)], False, "running:healthy"),
    ([("exited", True)], False, "unknown:unknown:excluded"),
    ([("exited", False)], True, "starting:unhealthy"),
    ([("starting:unknown", False), ("running:healthy", False)], False, "starting:unknown"),
])
def test_aggregate_status(subs: list[tuple[str, bool]], starting: bool, expected: str) -> None:
    assert aggregate_status(subs, starting) == expected
