"""The rules Coolify 4.3.11 applies on the way in, route by route (tests/coolify_emulator/README.md, "What each
route refuses"): controller rules and their order, mutators, and what PostgreSQL refuses (a 500)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.coolify_emulator import CoolifyEmulator
from tests.coolify_emulator.validation import column_overflow, environment_name, strip_tags, tag_names

SERVER_ERROR = {"message": "Server Error"}


def test_strip_tags_like_php() -> None:
    assert strip_tags(None) == ""
    assert strip_tags("a <b>bold</b> c") == "a bold c"
    assert strip_tags("1 < 2 and 3 > 2") == "1 < 2 and 3 > 2"  # `<` then a space is not a tag
    assert strip_tags("x<y") == "x"  # an unclosed tag runs to the end
    assert strip_tags('<a title="1>2">t</a>') == "t"  # a quoted `>` does not close the tag
    assert strip_tags("a<!-- c -->b\0") == "ab"
    assert environment_name("  Staging/EU <i>x</i>") == "staging-eu x"
    assert tag_names(["<b>Prod</b>", " prod ", "x"]) == ["prod", "x"]


def test_varchar_overflow_like_postgresql() -> None:
    assert column_overflow("scheduled_tasks", {"command": "x" * 255}) is None
    assert column_overflow("scheduled_tasks", {"command": "x" * 256}) == "scheduled_tasks.command"
    assert column_overflow("scheduled_tasks", {"command": "x" * 255 + "   "}) is None  # spaces are truncated
    assert column_overflow("services", {"description": "x" * 10_000}) is None  # longText


def test_post_services_rules_and_their_order(emu: CoolifyEmulator, client: httpx.Client,
                                            create_service: Callable[..., httpx.Response]) -> None:
    # Validator::make: Laravel's own required messages, and `required_without` on both type and compose
    resp = create_service(docker_compose_raw=..., project_uuid=...)
    assert resp.json()["errors"] == {
        "type": ["The type field is required when docker compose raw is not present."],
        "docker_compose_raw": ["The docker compose raw field is required when type is not present."],
        "project_uuid": ["The project uuid field is required."]}
    assert create_service(name=None).json()["errors"] == {"name": ["The name field must be a string."]}
    resp = create_service(urls=[{"name": "api", "url": "http://a.example.com", "port": 1}])
    assert resp.json()["errors"] == {
        "urls.0": ["An item in the urls array has invalid fields. Only name and url fields are supported."]}
    # the compose branch validates again: destination_uuid is no longer nullable there
    assert create_service(destination_uuid=None).json()["errors"] == {
        "destination_uuid": ["The destination uuid field must be a string."]}
    build = emu.add_server("builder", build_server=True)
    assert create_service(server_uuid=build["uuid"]).json()["errors"] == {"server_uuid": [
        "The specified server is configured as a build server and cannot host resources."]}
    assert emu.find_services() == []


def test_post_services_tags(emu: CoolifyEmulator, create_service: Callable[..., httpx.Response]) -> None:
    assert create_service(tags=None).status_code == 500  # normalizeTagNames(array): a TypeError
    assert create_service(tags=["ok", " x "]).json()["errors"] == {  # TrimStrings, then `tags.*` min:2
        "tags.1": ["The tags.1 field must be at least 2 characters."]}
    resp = create_service(tags=["<b>a</b>", "ok"])  # 8 characters for the rule, "a" after normalizing
    assert resp.json()["errors"] == {"tags": ["Each tag name must be at least 2 characters after sanitization."]}
    assert emu.find_services() == []
    made = create_service(tags=["<b>Prod</b>", "prod", "Env-1"])
    assert made.status_code == 201
    assert emu.service(made.json()["uuid"])["tags"] == ["prod", "env-1"]  # type: ignore[index]
    too_long = create_service(name="kept", tags=["ok", "t" * 256])  # tags.name is varchar(255), no max rule
    assert (too_long.status_code, too_long.json()) == (500, SERVER_ERROR)
    [kept] = emu.find_services(name="kept")  # saved before the tags: it stays
    assert kept["tags"] == ["ok"]


def test_patch_services_finds_the_service_before_the_rules(client: httpx.Client, service: str) -> None:
    resp = client.patch("/services/nope", json={"domains": "x"})
    assert (resp.status_code, resp.json()) == (404, {"message": "Service not found."})
    assert client.patch(f"/services/{service}", json={"name": None}).json()["errors"] == {
        "name": ["The name field must be a string."]}
    resp = client.patch(f"/services/{service}", json={"docker_compose_raw": None})
    assert resp.json()["errors"] == {"docker_compose_raw": "The docker_compose_raw should be base64 encoded."}


def test_bulk_envs(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    url = f"/services/{service}/envs/bulk"
    # no validateIncomingRequest: a body that is not JSON simply has no `data`
    resp = client.patch(url, content=b"data=1", headers={"Content-Type": "text/plain"})
    assert (resp.status_code, resp.json()) == (400, {"message": "Bulk data is required."})
    assert client.patch(url, json={"data": "x"}).status_code == 500  # foreach over a string
    assert client.patch(url, json={"data": ["x"]}).status_code == 500  # array_key_exists on a string
    assert client.patch(url, json={"data": [{"key": " KEPT ", "value": "v1"}]}).status_code == 201
    assert client.patch(url, json={"data": [{"key": "KEPT", "is_literal": True}]}).status_code == 201
    assert emu.envs(service)["KEPT"] == "v1"  # updateOrCreate: an omitted value keeps the stored one
    resp = client.patch(url, json={"data": [{"key": "FIRST", "value": "1"}, {"key": "1BAD"}]})
    assert resp.status_code == 422 and emu.envs(service)["FIRST"] == "1"  # items before the bad one stay


def test_project_shared_variables(client: httpx.Client, project: str) -> None:
    resp = client.post("/projects/nope/envs", json={"bad": 1})
    assert (resp.status_code, resp.json()) == (404, {"message": "Project not found."})
    assert client.post(f"/projects/{project}/envs", json={"key": "K", "comment": "c" * 257}).json()["errors"] == {
        "comment": ["The comment field must not be greater than 256 characters."]}
    # `where('id', $envId)` on a bigint column: not a number is a PostgreSQL error
    assert client.delete(f"/projects/{project}/envs/abc").status_code == 500
    assert client.delete(f"/projects/{project}/envs/99999999999999999999").status_code == 500
    assert client.delete(f"/projects/{project}/envs/12").status_code == 404


def test_environment_names_are_stored_lower_case(emu: CoolifyEmulator, client: httpx.Client, project: str) -> None:
    assert client.post(f"/projects/{project}/environments", json={}).status_code == 400  # Empty JSON
    assert client.post(f"/projects/{project}/environments", json={"x": 1}).json()["errors"] == {
        "name": ["The name field is required."], "x": ["This field is not allowed."]}
    made = client.post(f"/projects/{project}/environments", json={"name": "Staging/EU"})
    assert made.status_code == 201
    names = [e["name"] for e in client.get(f"/projects/{project}/environments").json()]
    assert "staging-eu" in names
    assert client.get(f"/projects/{project}/Staging%2FEU").status_code == 404  # found by its stored name only
    # the 409 check compares the name as sent; the stored one breaks the unique (name, project_id) index
    resp = client.post(f"/projects/{project}/environments", json={"name": "STAGING-EU"})
    assert (resp.status_code, resp.json()) == (500, SERVER_ERROR)
    assert client.post(f"/projects/{project}/environments", json={"name": "staging-eu"}).status_code == 409


def test_scheduled_task_columns(emu: CoolifyEmulator, client: httpx.Client, service: str) -> None:
    url = f"/services/{service}/scheduled-tasks"
    body = {"name": "<b>t</b>ask", "frequency": "daily"}
    made = client.post(url, json={**body, "command": "x" * 255})
    assert made.status_code == 201 and made.json()["name"] == "task"  # HasSafeStringAttribute
    resp = client.post(url, json={**body, "command": "x" * 256})  # varchar(255), no max rule
    assert (resp.status_code, resp.json()) == (500, SERVER_ERROR)
    assert len(client.get(url).json()) == 1
    assert client.post(url, json={**body, "command": "true", "timeout": None}).json()["errors"] == {
        "timeout": ["The timeout field must be an integer.", "The timeout field must be at least 1."]}
    task = made.json()["uuid"]
    assert client.patch(f"{url}/{task}", json={"command": "y" * 300}).status_code == 500
    assert client.patch(f"{url}/nope", json={"bogus": 1}).status_code == 422  # the input before the task
