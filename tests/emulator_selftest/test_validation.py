"""Request validation: validateIncomingRequest, allowlists, Laravel rules, compose checks."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest

from tests.coolify_emulator import CoolifyEmulator

from .conftest import SIMPLE_COMPOSE, b64


def test_base64_must_be_standard_padded_and_single_line(create_service: Callable[..., httpx.Response]) -> None:
    encoded = b64(SIMPLE_COMPOSE)
    variants = {
        "raw yaml": SIMPLE_COMPOSE,
        "encodebytes with newlines": base64.encodebytes(SIMPLE_COMPOSE.encode()).decode(),
        "urlsafe alphabet": base64.urlsafe_b64encode(b"services:\n  a:\n    image: x?>>\n").decode(),
        "missing padding": b64("services: {a: {image: x}}\n").rstrip("="),
    }
    assert variants["urlsafe alphabet"] != b64("services:\n  a:\n    image: x?>>\n")
    assert "=" in b64("services: {a: {image: x}}\n")
    for label, value in variants.items():
        resp = create_service(docker_compose_raw=value)
        assert resp.status_code == 422, label
        assert resp.json() == {"message": "Validation failed.",
                               "errors": {"docker_compose_raw": "The docker_compose_raw should be base64 encoded."}}
    assert create_service(docker_compose_raw=encoded).status_code == 201


def test_unknown_fields_and_query_params_are_rejected(client: httpx.Client,
                                                      create_service: Callable[..., httpx.Response]) -> None:
    resp = create_service(domains=["http://x.example.com"], connect_to_docker_network=True)
    assert resp.status_code == 422
    errors = resp.json()["errors"]
    assert errors["domains"] == ["This field is not allowed."]
    assert errors["connect_to_docker_network"] == ["This field is not allowed."]
    # Laravel's $request->all() merges the query string into the input.
    resp = client.post("/projects", params={"foo": "1"}, json={"name": "abc"})
    assert resp.status_code == 422
    assert resp.json()["errors"] == {"foo": ["This field is not allowed."]}


def test_string_booleans_are_rejected(create_service: Callable[..., httpx.Response]) -> None:
    resp = create_service(instant_deploy="false")
    assert resp.status_code == 422
    assert resp.json()["errors"] == {"instant_deploy": ["The instant deploy field must be true or false."]}
    assert create_service(instant_deploy=0).status_code == 201


def test_validate_incoming_request_400s(emu: CoolifyEmulator, client: httpx.Client) -> None:
    cases = [
        ({"content": b'{"name":"abc"}', "headers": {"Content-Type": "text/plain"}},
         "Content-Type must be application/json."),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, "Invalid JSON."),
        ({"content": b"[]", "headers": {"Content-Type": "application/json"}}, "Invalid JSON."),
        ({"content": b"{}", "headers": {"Content-Type": "application/json"}}, "Empty JSON."),
        ({"data": {"name": "abc"}}, "Content-Type must be application/json."),  # form-encoded
    ]
    for kwargs, error in cases:
        resp = client.post("/projects", **kwargs)  # type: ignore[arg-type]
        assert resp.status_code == 400, kwargs
        assert resp.json() == {"message": "Invalid request.", "error": error}


def test_project_name_rules(client: httpx.Client) -> None:
    assert client.post("/projects", json={"name": "ab"}).json()["errors"] == {
        "name": ["The name must be at least 3 characters."]}
    resp = client.post("/projects", json={"name": "bad;name"})
    assert resp.status_code == 422 and "may only contain" in resp.json()["errors"]["name"][0]
    assert client.post("/projects", json={"description": "x"}).json()["errors"] == {
        "name": ["This field is required."]}
    # TrimStrings + ConvertEmptyStringsToNull: "   " becomes null -> required.
    assert client.post("/projects", json={"name": "   "}).json()["errors"] == {"name": ["This field is required."]}
    assert client.post("/projects", json={"name": "Ünïcode (prod) #1"}).status_code == 201
    # Names are not unique.
    first = client.post("/projects", json={"name": "same"}).json()["uuid"]
    second = client.post("/projects", json={"name": "same"}).json()["uuid"]
    assert first != second


DESCRIPTION_REGEX = ("The description may only contain letters (including Unicode), numbers, spaces, and common "
                     "punctuation: - _ . , ! ? ( ) ' \" + = * / @ &")  # ValidationPatterns.php:473


@pytest.mark.parametrize("description", [
    "provision: owner:team-abc123 \u2014 managed by provision",  # what provision wrote before marks.py (`:`, `\u2014`)
    "a: b", "em \u2014 dash", "semi;colon", "hash #1", "<b>bold</b>", "50%", "tilde~", "back`tick", "a\x1cb",
])
def test_project_descriptions_follow_descriptionrules(client: httpx.Client, description: str) -> None:
    """POST/PATCH /projects and PATCH environments: nullable|string|max:255|regex:DESCRIPTION_PATTERN
    (ValidationPatterns.php:18, 438-453; ProjectController.php:250, 369, 769), with combinedMessages."""
    refused = {"message": "Validation failed.", "errors": {"description": [DESCRIPTION_REGEX]}}
    resp = client.post("/projects", json={"name": "described", "description": description})
    assert (resp.status_code, resp.json()) == (422, refused)
    assert not [p for p in client.get("/projects").json() if p["name"] == "described"]  # nothing was made
    uuid = client.post("/projects", json={"name": "described"}).json()["uuid"]
    resp = client.patch(f"/projects/{uuid}", json={"description": description})
    assert (resp.status_code, resp.json()) == (422, refused)
    resp = client.patch(f"/projects/{uuid}/environments/production", json={"description": description})
    assert (resp.status_code, resp.json()) == (422, refused)


def test_what_descriptionrules_take(client: httpx.Client) -> None:
    fine = "provision=project owner=team-abc123 managed by provision, (ok) !? 'q' \"d\" +=* @ / & \u00fcn\u00efc\u00f6d\u00e9"
    resp = client.post("/projects", json={"name": "described", "description": fine})
    assert resp.status_code == 201, resp.text
    uuid = resp.json()["uuid"]
    assert client.get(f"/projects/{uuid}").json()["description"] == fine
    assert client.patch(f"/projects/{uuid}", json={"description": "x" * 255}).status_code == 201
    resp = client.patch(f"/projects/{uuid}", json={"description": "x" * 256})
    assert resp.json()["errors"] == {"description": ["The description may not be greater than 255 characters."]}
    # nullable; TrimStrings + ConvertEmptyStringsToNull make "  " a null; strip_tags stores null as ""
    for empty in (None, "  "):
        resp = client.patch(f"/projects/{uuid}", json={"description": empty})
        assert (resp.status_code, resp.json()["description"]) == (201, "")
    resp = client.patch(f"/projects/{uuid}/environments/production", json={"description": "stage (eu)"})
    assert resp.status_code == 200 and resp.json()["description"] == "stage (eu)"
    # names: nameRules (ValidationPatterns.php:13, 417-433), which allow `:` and `#` but no `;` or `<`
    assert client.patch(f"/projects/{uuid}", json={"name": "a: #1 (x)"}).status_code == 201
    resp = client.patch(f"/projects/{uuid}", json={"name": "a;b"})
    assert resp.json()["errors"]["name"][0].startswith("The name may only contain letters")


def test_service_descriptions_take_any_text_without_tags(create_service: Callable[..., httpx.Response],
                                                         client: httpx.Client, emu: CoolifyEmulator) -> None:
    """The API has no pattern for a service's description (ServicesController.php:384, 1181), but the model's
    HasSafeStringAttribute (app/Traits/HasSafeStringAttribute.php:21-24) applies strip_tags."""
    old_form = "provision:0123456789abcdef owner:team-abc123 \u2014 managed by provision; edits: drift"
    resp = create_service(description=old_form)
    assert resp.status_code == 201, resp.text
    uuid = resp.json()["uuid"]
    assert client.get(f"/services/{uuid}").json()["description"] == old_form
    resp = client.patch(f"/services/{uuid}", json={"description": "a <b>bold</b> x < y <script>alert(1)</script>z"})
    assert resp.status_code == 200
    assert client.get(f"/services/{uuid}").json()["description"] == "a bold x < y alert(1)z"
    client.patch(f"/services/{uuid}", json={"description": None})
    assert emu.service(uuid)["description"] == ""  # strip_tags(null)
    assert client.get(f"/services/{create_service(name='plain').json()['uuid']}").json()["description"] == ""


def test_compose_checks(create_service: Callable[..., httpx.Response], emu: CoolifyEmulator) -> None:
    resp = create_service(docker_compose_raw=b64("services: [unclosed\n"))
    assert resp.status_code == 500
    assert resp.json() == {"message": "Server Error"}
    resp = create_service(docker_compose_raw=b64("version: '3'\nnetworks: {}\n"))
    assert resp.status_code == 422
    assert resp.json()["errors"]["docker_compose_raw"] == 'Docker Compose file must contain a "services" section'
    resp = create_service(docker_compose_raw=b64("services:\n  web:\n    image: x\n    volumes:\n"
                                                 "      - '/data;rm -rf /:/x'\n"))
    assert resp.status_code == 422
    assert "forbidden character ';'" in resp.json()["errors"]["docker_compose_raw"]
    resp = create_service(docker_compose_raw=base64.b64encode(b"services:\n  a:\n    image: \xff\n").decode())
    assert resp.status_code == 422
    assert emu.find_services() == []


def test_malformed_yaml_500_is_html_without_accept_json(emu: CoolifyEmulator, project: str) -> None:
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer 1|selftest-root-token"}) as bare:
        resp = bare.post("/services", json={"project_uuid": project, "environment_name": "production",
                                            "server_uuid": emu.localhost["uuid"],
                                            "docker_compose_raw": b64("services: [")})
    assert resp.status_code == 500
    assert resp.headers["content-type"].startswith("text/html")


def test_type_and_environment_rules(create_service: Callable[..., httpx.Response]) -> None:
    resp = create_service(type="whoami")
    assert resp.status_code == 422
    assert "Use one or the other" in resp.json()["message"]
    resp = create_service(docker_compose_raw=..., type="nope")
    assert resp.status_code == 404
    assert resp.json()["message"] == "Invalid service type."
    assert "whoami" in resp.json()["valid_service_types"]
    assert create_service(docker_compose_raw=..., type="whoami").status_code == 201
    resp = create_service(environment_name=...)
    assert resp.status_code == 422
    assert resp.json() == {"message": "You need to provide at least one of environment_name or environment_uuid."}
    resp = create_service(docker_compose_raw=...)
    assert resp.status_code == 422 and "docker_compose_raw" in resp.json()["errors"]


@pytest.mark.parametrize("field,value,message", [
    ("tags", ["ok", "x"], "The tags.1 field must be at least 2 characters."),
    ("name", "x" * 256, "The name field must not be greater than 255 characters."),
    ("urls", "http://a", "The urls field must be an array."),
])
def test_laravel_rule_messages(create_service: Callable[..., httpx.Response], field: str, value: object,
                               message: str) -> None:
    resp = create_service(**{field: value})
    assert resp.status_code == 422
    assert message in resp.json()["errors"][field if field != "tags" else "tags.1"]
