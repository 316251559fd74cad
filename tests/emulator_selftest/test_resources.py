"""Servers, destinations, projects, environments and the service model."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import yaml

from tests.coolify_emulator import CoolifyEmulator

from .conftest import SIMPLE_COMPOSE, b64, make_client


def test_servers_and_destinations(emu: CoolifyEmulator, client: httpx.Client) -> None:
    servers = client.get("/servers").json()
    assert [(s["name"], s["ip"], s["is_usable"], s["is_reachable"]) for s in servers] == [
        ("localhost", "host.docker.internal", True, True)]
    assert "id" not in servers[0] and servers[0]["settings"]["wildcard_domain"] is None
    uuid = servers[0]["uuid"]
    dests = client.get(f"/servers/{uuid}/destinations").json()
    assert [(d["name"], d["network"], d["type"], d["server_uuid"]) for d in dests] == [
        ("coolify", "coolify", "standalone", uuid)]
    assert client.get("/destinations").json() == dests
    assert client.get(f"/destinations/{dests[0]['uuid']}").json() == dests[0]
    assert client.get("/servers/nope").json() == {"message": "Server not found."}
    build = emu.add_server("builder", "10.0.0.9", build_server=True)
    down = emu.add_server("down", "10.0.0.10", reachable=False, usable=False, wildcard_domain="https://apps.test")
    by_name = {s["name"]: s for s in client.get("/servers").json()}
    assert by_name["builder"]["settings"]["is_build_server"] is True
    assert by_name["down"]["is_reachable"] is False and by_name["down"]["settings"]["wildcard_domain"]
    assert build["uuid"] != down["uuid"]


def test_project_lifecycle(client: httpx.Client) -> None:
    uuid = client.post("/projects", json={"name": "acme", "description": "demo"}).json()["uuid"]
    listed = client.get("/projects").json()
    assert listed == [{"id": listed[0]["id"], "uuid": uuid, "name": "acme", "description": "demo"}]
    project = client.get(f"/projects/{uuid}").json()
    assert [e["name"] for e in project["environments"]] == ["production"]  # auto-created
    resp = client.patch(f"/projects/{uuid}", json={"name": "acme-2"})
    assert resp.status_code == 201 and resp.json() == {"uuid": uuid, "name": "acme-2", "description": "demo"}
    assert client.get("/projects/nope").json() == {"message": "Project not found."}
    assert client.delete(f"/projects/{uuid}").json() == {"message": "Project deleted."}
    assert client.get(f"/projects/{uuid}").status_code == 404


def test_environments(client: httpx.Client, project: str, service: str) -> None:
    resp = client.post(f"/projects/{project}/environments", json={"name": "staging"})
    assert resp.status_code == 201
    staging = resp.json()["uuid"]
    resp = client.post(f"/projects/{project}/environments", json={"name": "staging"})
    assert (resp.status_code, resp.json()) == (409, {"message": "Environment with this name already exists."})
    assert client.post("/projects/nope/environments", json={"name": "x1x"}).status_code == 404
    assert client.post(f"/projects/{project}/environments", json={"name": "x"}).status_code == 422
    assert client.post(f"/projects/{project}/environments",
                       json={"name": "ok1", "description": "d"}).json()["errors"] == {
        "description": ["This field is not allowed."]}
    envs = client.get(f"/projects/{project}/environments").json()
    assert [e["name"] for e in envs] == ["production", "staging"]
    assert set(envs[0]) == {"id", "name", "uuid"}
    # by name, then by uuid; resources included
    prod = client.get(f"/projects/{project}/production").json()
    assert [s["uuid"] for s in prod["services"]] == [service]
    assert prod["applications"] == [] and "postgresqls" in prod
    assert client.get(f"/projects/{project}/{staging}").json()["name"] == "staging"
    assert client.get(f"/projects/{project}/nope").json() == {"message": "Environment not found."}
    resp = client.patch(f"/projects/{project}/environments/staging", json={"name": "production"})
    assert resp.status_code == 409
    resp = client.patch(f"/projects/{project}/environments/{staging}", json={"description": "stage"})
    assert resp.json() == {"uuid": staging, "name": "staging", "description": "stage"}
    resp = client.delete(f"/projects/{project}/environments/production")
    assert (resp.status_code, resp.json()["message"]) == (400, "Environment has resources, so it cannot be deleted.")
    assert client.delete(f"/projects/{project}/environments/staging").json() == {"message": "Environment deleted."}
    resp = client.delete(f"/projects/{project}")
    assert (resp.status_code, resp.json()) == (400, {"message": "Project has resources, so it cannot be deleted."})


def test_service_model(client: httpx.Client, emu: CoolifyEmulator, service: str) -> None:
    svc = client.get(f"/services/{service}").json()
    assert svc["name"] == "stack" and svc["status"] == "exited" and svc["server_status"] is True
    assert "id" not in svc
    apps = {a["name"]: a for a in svc["applications"]}
    dbs = {d["name"]: d for d in svc["databases"]}
    assert set(apps) == {"api"} and set(dbs) == {"db"}  # postgres is a known database image
    assert apps["api"]["fqdn"] == f"http://api-{service}.127.0.0.1.sslip.io:3000"
    assert apps["api"]["image"] == "postgrest/postgrest:v12" and apps["api"]["status"] == "exited"
    # stored compose is re-dumped: same data, comments lost
    assert yaml.safe_load(svc["docker_compose_raw"]) == yaml.safe_load(SIMPLE_COMPOSE)
    generated = yaml.safe_load(svc["docker_compose"])
    assert generated["services"]["api"]["container_name"] == f"api-{service}"
    assert generated["services"]["db"]["volumes"] == [f"{service}_pg-data:/var/lib/postgresql/data"]
    assert generated["networks"][service] == {"name": service, "external": True}
    envs = {e["key"]: e["value"] for e in client.get(f"/services/{service}/envs").json()}
    assert envs["POSTGRES_PASSWORD"] == "changeme" and envs["JWT_SECRET"] is None
    assert envs["SERVICE_FQDN_API"] == f"api-{service}.127.0.0.1.sslip.io"
    assert envs["SERVICE_URL_API"] == f"http://api-{service}.127.0.0.1.sslip.io"
    assert "SERVICE_FQDN_API_3000" in envs
    listed = client.get("/services").json()
    assert [s["uuid"] for s in listed] == [service] and "environment_id" in listed[0]
    resources = client.get(f"/servers/{emu.localhost['uuid']}",
                           params={"resources": "true"}).json()["resources"]
    assert [(r["uuid"], r["type"], r["status"]) for r in resources] == [(service, "service", "exited")]


def test_comments_are_lost_and_patch_rules(client: httpx.Client, service: str) -> None:
    compose = "# my comment\nservices:\n  web:\n    image: nginx:1  # pinned\n"
    resp = client.patch(f"/services/{service}", json={"docker_compose_raw": b64(compose), "name": "renamed"})
    assert resp.status_code == 200 and resp.json() == {"uuid": service, "domains": []}
    svc = client.get(f"/services/{service}").json()
    assert svc["docker_compose_raw"] == "services:\n  web:\n    image: nginx:1\n"
    assert [a["name"] for a in svc["applications"]] == ["web"] and svc["databases"] == []
    assert svc["name"] == "renamed"
    resp = client.patch(f"/services/{service}", json={"tags": ["a1"], "destination_uuid": "x"})
    assert set(resp.json()["errors"]) == {"tags", "destination_uuid"}
    resp = client.patch(f"/services/{service}", json={"connect_to_docker_network": True})
    assert resp.status_code == 200
    assert client.get(f"/services/{service}").json()["connect_to_docker_network"] is True
    assert client.patch("/services/nope", json={"name": "x"}).json() == {"message": "Service not found."}


def test_destination_rules(emu: CoolifyEmulator, create_service: Callable[..., httpx.Response]) -> None:
    multi = emu.add_server("multi", "10.0.0.5", destinations=["coolify", "backend"])
    none = emu.add_server("none", "10.0.0.6", destinations=0)
    foreign = emu.localhost["destinations"][0]["uuid"]
    resp = create_service(server_uuid=multi["uuid"])
    assert (resp.status_code, resp.json()["message"]) == (
        400, "Server has multiple destinations and you do not set destination_uuid.")
    resp = create_service(server_uuid=multi["uuid"], destination_uuid=foreign)
    assert resp.status_code == 422 and isinstance(resp.json()["errors"]["destination_uuid"], str)
    resp = create_service(server_uuid=multi["uuid"], destination_uuid=multi["destinations"][1]["uuid"])
    assert resp.status_code == 201
    resp = create_service(server_uuid=none["uuid"])
    assert (resp.status_code, resp.json()) == (400, {"message": "Server has no destinations."})
    # exactly one destination: a foreign destination_uuid is ignored
    assert create_service(destination_uuid="whatever").status_code == 201
    build = emu.add_server("build", "10.0.0.7", build_server=True)
    assert "server_uuid" in create_service(server_uuid=build["uuid"]).json()["errors"]
    for field, message in (("project_uuid", "Project not found."), ("server_uuid", "Server not found."),
                           ("environment_name", "Environment not found.")):
        resp = create_service(**{field: "nope"})
        assert (resp.status_code, resp.json()) == (404, {"message": message})


def test_environment_uuid_and_wildcard_domain(emu: CoolifyEmulator, client: httpx.Client, project: str,
                                             create_service: Callable[..., httpx.Response]) -> None:
    env_uuid = client.get(f"/projects/{project}/production").json()["uuid"]
    wild = emu.add_server("wild", "10.0.0.8", wildcard_domain="https://apps.example.com")
    resp = create_service(environment_name=..., environment_uuid=env_uuid, server_uuid=wild["uuid"])
    assert resp.status_code == 201
    uuid = resp.json()["uuid"]
    assert resp.json()["domains"] == [f"https://api-{uuid}.apps.example.com:3000"]
    other = emu.add_server("other", "203.0.113.5")
    resp = create_service(server_uuid=other["uuid"])
    uuid = resp.json()["uuid"]
    assert resp.json()["domains"] == [f"http://api-{uuid}.203.0.113.5.sslip.io:3000"]


def test_urls_and_domain_conflicts(client: httpx.Client, create_service: Callable[..., httpx.Response]) -> None:
    resp = create_service(urls=[{"name": "api", "url": "https://api.example.com:3000"}])
    assert resp.status_code == 201 and resp.json()["domains"] == ["https://api.example.com:3000"]
    first = resp.json()["uuid"]
    envs = {e["key"]: e["value"] for e in client.get(f"/services/{first}/envs").json()}
    assert envs["SERVICE_URL_API"] == "https://api.example.com"
    resp = create_service(name="second", urls=[{"name": "api", "url": "https://api.example.com"}])
    assert resp.status_code == 409
    body = resp.json()
    assert body["message"] == "Domain conflicts detected. Use force_domain_override=true to proceed."
    assert body["conflicts"][0]["resource_uuid"] == first and body["conflicts"][0]["resource_type"] == "service"
    assert [s["name"] for s in client.get("/services").json()] == ["stack"]  # the 409'd create was rolled back
    resp = create_service(name="second", force_domain_override=True,
                          urls=[{"name": "api", "url": "https://api.example.com"}])
    assert resp.status_code == 201
    second = resp.json()["uuid"]
    resp = client.patch(f"/services/{second}", json={"urls": [{"name": "api", "url": "ftp://nope"}]})
    assert resp.status_code == 422 and isinstance(resp.json()["errors"], list)
    resp = client.patch(f"/services/{second}", json={"urls": [{"name": "ghost", "url": "http://a.b"}]})
    assert resp.status_code == 422
    resp = client.patch(f"/services/{second}", json={"urls": [{"name": "api", "url": None}]})
    assert resp.json() == {"uuid": second, "domains": []}


def test_service_applications_subresource(client: httpx.Client, service: str) -> None:
    apps = client.get(f"/services/{service}/applications").json()
    assert [a["name"] for a in apps] == ["api"]
    app_uuid = apps[0]["uuid"]
    assert client.get(f"/services/{service}/applications/{app_uuid}").json()["uuid"] == app_uuid
    resp = client.patch(f"/services/{service}/applications/{app_uuid}", json={"url": "http://api.local.test:3000"})
    assert resp.status_code == 200 and resp.json()["fqdn"] == "http://api.local.test:3000"


def test_concurrent_clients_are_consistent(emu: CoolifyEmulator) -> None:
    emu.rate_limit = 10_000

    def worker(n: int) -> list[str]:
        with make_client(emu) as c:
            return [c.post("/projects", json={"name": f"p-{n}-{i}"}).json()["uuid"] for i in range(15)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        uuids = [u for batch in pool.map(worker, range(8)) for u in batch]
    assert len(uuids) == len(set(uuids)) == 120
    projects = emu.find_projects()
    assert len(projects) == 120
    env_uuids = {e["uuid"] for p in projects for e in p["environments"]}
    assert len(env_uuids) == 120  # one auto-created "production" each
