"""A project's shared variables (SharedEnvironmentVariablesController, type=project)."""

from __future__ import annotations

import httpx


def test_a_second_variable_of_one_key_is_refused(client: httpx.Client, project: str) -> None:
    created = client.post(f"/projects/{project}/envs", json={"key": "lock.dev.shop", "value": "held",
                                                              "comment": "holder=a"})
    assert created.status_code == 201 and isinstance(created.json()["id"], int)
    again = client.post(f"/projects/{project}/envs", json={"key": "lock.dev.shop", "value": "x"})
    assert (again.status_code, again.json()) == (
        409, {"message": "Environment variable already exists. Use PATCH request to update it."})
    [listed] = client.get(f"/projects/{project}/envs").json()
    assert (listed["key"], listed["comment"], listed["type"]) == ("lock.dev.shop", "holder=a", "project")
    assert client.delete(f"/projects/{project}/envs/{listed['id']}").json() == {"message": "Environment variable deleted."}
    assert client.delete(f"/projects/{project}/envs/{listed['id']}").status_code == 404
    assert client.get(f"/projects/{project}/envs").json() == []


def test_keys_and_fields_are_validated(client: httpx.Client, project: str) -> None:
    bad_key = client.post(f"/projects/{project}/envs", json={"key": "lock-dev"})
    assert bad_key.status_code == 422 and "key" in bad_key.json()["errors"]
    extra = client.post(f"/projects/{project}/envs", json={"key": "ok", "is_preview": True})
    assert extra.status_code == 422 and extra.json()["errors"]["is_preview"] == ["This field is not allowed."]
    assert client.post("/projects/nope/envs", json={"key": "ok"}).status_code == 404
