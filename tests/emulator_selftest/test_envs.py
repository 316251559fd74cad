"""Service environment variables: list/create/update/bulk/delete."""

from __future__ import annotations

import httpx

from tests.coolify_emulator import CoolifyEmulator


def env_map(client: httpx.Client, uuid: str) -> dict[str, str | None]:
    return {e["key"]: e.get("value") for e in client.get(f"/services/{uuid}/envs").json()}


def test_bulk_upsert(client: httpx.Client, service: str) -> None:
    before = client.get(f"/services/{service}/envs").json()
    pw_uuid = next(e["uuid"] for e in before if e["key"] == "POSTGRES_PASSWORD")
    resp = client.patch(f"/services/{service}/envs/bulk", json={"data": [
        {"key": "POSTGRES_PASSWORD", "value": "s3cret"},
        {"key": "NEW_ONE", "value": "1", "is_literal": True, "comment": "added", "ignored_field": "x"},
    ]})
    assert resp.status_code == 201
    body = resp.json()
    assert [(e["key"], e["value"]) for e in body] == [("POSTGRES_PASSWORD", "s3cret"), ("NEW_ONE", "1")]
    assert body[0]["uuid"] == pw_uuid  # updated in place, not recreated
    assert body[1]["is_literal"] is True and body[1]["comment"] == "added"
    envs = env_map(client, service)
    assert envs["POSTGRES_PASSWORD"] == "s3cret" and envs["NEW_ONE"] == "1"
    keys = [e["key"] for e in client.get(f"/services/{service}/envs").json()]
    assert keys == sorted(keys)


def test_bulk_errors(client: httpx.Client, service: str) -> None:
    assert client.patch(f"/services/{service}/envs/bulk", json={"other": 1}).json() == {
        "message": "Bulk data is required."}
    assert client.patch(f"/services/{service}/envs/bulk", json={"data": []}).status_code == 400
    resp = client.patch(f"/services/{service}/envs/bulk", json={"data": [
        {"key": "FIRST_OK", "value": "a"}, {"key": "1BAD", "value": "b"}, {"key": "NEVER", "value": "c"}]})
    assert resp.status_code == 422 and "key" in resp.json()["errors"]
    envs = env_map(client, service)
    assert envs["FIRST_OK"] == "a" and "NEVER" not in envs  # earlier items were saved
    resp = client.patch(f"/services/{service}/envs/bulk", json={"data": [{"key": "NUM", "value": 5}]})
    assert resp.json()["errors"] == {"value": ["The value field must be a string."]}
    resp = client.patch(f"/services/{service}/envs/bulk", json={"data": [{"key": "B", "value": "x",
                                                                            "is_literal": "true"}]})
    assert resp.status_code == 422
    assert client.patch("/services/nope/envs/bulk", json={"data": [{"key": "A"}]}).status_code == 404


def test_create_update_delete(client: httpx.Client, service: str) -> None:
    resp = client.post(f"/services/{service}/envs", json={"key": "API_KEY", "value": "k1", "is_shown_once": True})
    assert resp.status_code == 201
    created = resp.json()
    # a "shown once" value is left out of every answer, even to a read:sensitive (here root) token: the keys are
    # absent, as they are for a token without read:sensitive (ServicesController.php:64-76)
    assert created["key"] == "API_KEY" and created["is_shown_once"] is True and created["uuid"]
    assert "value" not in created and "real_value" not in created
    listed = {e["key"]: e for e in client.get(f"/services/{service}/envs").json()}
    assert "value" not in listed["API_KEY"] and "real_value" not in listed["API_KEY"]
    resp = client.post(f"/services/{service}/envs", json={"key": "API_KEY", "value": "k2"})
    assert (resp.status_code, resp.json()) == (409, {
        "message": "Environment variable already exists. Use PATCH request to update it."})
    # compose-referenced keys exist right after create
    assert client.post(f"/services/{service}/envs", json={"key": "JWT_SECRET", "value": "x"}).status_code == 409
    resp = client.patch(f"/services/{service}/envs", json={"key": "API_KEY", "is_shown_once": False})
    assert resp.status_code == 201 and resp.json()["value"] is None  # value omitted -> null; shown again
    assert client.patch(f"/services/{service}/envs", json={"key": "MISSING", "value": "x"}).json() == {
        "message": "Environment variable not found."}
    # matching is by key: a uuid is not an accepted field
    resp = client.patch(f"/services/{service}/envs", json={"uuid": created["uuid"], "value": "x"})
    assert resp.status_code == 422 and set(resp.json()["errors"]) == {"key", "uuid"}
    assert client.post(f"/services/{service}/envs", json={"key": "bad-key", "value": "x"}).status_code == 422
    resp = client.delete(f"/services/{service}/envs/{created['uuid']}")
    assert resp.json() == {"message": "Environment variable deleted."}
    assert client.delete(f"/services/{service}/envs/{created['uuid']}").status_code == 404
    assert "API_KEY" not in env_map(client, service)


def test_values_are_trimmed_and_empty_becomes_null(client: httpx.Client, service: str,
                                                   emu: CoolifyEmulator) -> None:
    client.patch(f"/services/{service}/envs/bulk", json={"data": [
        {"key": "PADDED", "value": "  v  "}, {"key": "EMPTY", "value": ""}]})
    envs = emu.envs(service)
    assert envs["PADDED"] == "v" and envs["EMPTY"] is None
