from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from provision.core.config import load_env
from provision.core.errors import TemplateError
from provision.core.model import Ports
from provision.core.render import build_context, render_stack, reveal_secrets
from provision.core.secrets import Secret
from provision.core.templating import q
from tests.conftest import write_env

ENV = """
images:
  db: postgres:16-alpine
  api: postgrest/postgrest:v12.2.3
projects:
  - name: shop
"""
PORTS = Ports(api=20001, db=20000)
SECRETS = {"DB_PASSWORD": Secret("pw-0123456789"), "JWT_SECRET": Secret("jwt-0123456789"),
           "DB_ADMIN_PASSWORD": Secret("admin-0123456789"), "AUTHENTICATOR_PASSWORD": Secret("auth-0123456789")}


def _render(root: Path, text: str = ENV, project: str = "shop", ports: Ports | None = PORTS,
            backend: str = "local", secrets: dict[str, Secret] | None = None):  # type: ignore[no-untyped-def]
    write_env(root, "dev", text)
    config = load_env("dev", root, environ={})
    context = build_context(config, config.project(project), backend=backend, ports=ports)
    return render_stack(config.template_path, context, SECRETS if secrets is None else secrets)


def test_default_stack_has_the_postgres_and_postgrest_interfaces(project_root: Path) -> None:
    stack = _render(project_root)
    doc = yaml.safe_load(stack.text)
    db, api = doc["services"]["db"], doc["services"]["api"]
    assert doc["name"] == "shop_dev"
    assert db["image"] == "postgres:16-alpine"
    assert set(db["environment"]) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert db["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert db["ports"] == ["127.0.0.1:20000:5432"]
    assert api["ports"] == ["127.0.0.1:20001:3000"]
    assert api["depends_on"] == {"db": {"condition": "service_started"}}  # the api retries; provision probes
    assert {"PGRST_DB_URI", "PGRST_DB_SCHEMAS", "PGRST_DB_ANON_ROLE", "PGRST_SERVER_PORT"} <= set(api["environment"])
    assert api["environment"]["PGRST_SERVER_PORT"] == "3000"
    for resource in (db, api, doc["volumes"]["pgdata"], doc["networks"]["default"]):
        assert resource["labels"]["io.provision.project"] == "shop"
        assert resource["labels"]["io.provision.env"] == "dev"


def test_secrets_only_enter_as_references(project_root: Path) -> None:
    stack = _render(project_root)
    assert "pw-0123456789" not in stack.text and "jwt-0123456789" not in stack.text
    assert "${AUTHENTICATOR_PASSWORD:?" in stack.text and "${DB_ADMIN_PASSWORD:?" in stack.text
    # the owner's password (db_url's) is in no container: the API logs in as the authenticator
    assert stack.secret_names == ("AUTHENTICATOR_PASSWORD", "DB_ADMIN_PASSWORD", "JWT_SECRET")
    revealed = reveal_secrets(stack.text, SECRETS)
    assert "postgres://authenticator:auth-0123456789@db:5432/app" in revealed
    doc = yaml.safe_load(stack.text)
    assert doc["services"]["db"]["environment"]["POSTGRES_USER"] == "provision_admin"
    assert doc["services"]["api"]["environment"]["PGRST_DB_ANON_ROLE"] == "anon"


def test_variables_cannot_inject_yaml_keys_or_interpolation(project_root: Path) -> None:
    evil = 'public"\n    privileged: true\n    x: "${HOME}'
    stack = _render(project_root, ENV + f"variables:\n  api_schemas: {json.dumps(evil)}\n")
    doc = yaml.safe_load(stack.text)
    api = doc["services"]["api"]
    assert "privileged" not in api
    assert api["environment"]["PGRST_DB_SCHEMAS"] == evil.replace("$", "$$")  # compose turns $$ back into $


def test_quote_filter() -> None:
    assert q("a") == '"a"'
    assert q('a"b') == '"a\\"b"'
    assert q("$X") == '"$$X"'
    assert yaml.safe_load(q("line\nbreak: x")) == "line\nbreak: x"


def test_undefined_template_variable_names_it(project_root: Path) -> None:
    (project_root / "templates" / "custom.j2").write_text("services:\n  db:\n    image: {{ vars.nope | q }}\n")
    with pytest.raises(TemplateError, match="'nope'.*define it under 'variables'"):
        _render(project_root, ENV + "template: templates/custom.j2\n")


def test_rendered_compose_must_have_services(project_root: Path) -> None:
    (project_root / "templates" / "empty.j2").write_text("volumes: {}\n")
    with pytest.raises(TemplateError, match="no 'services:' mapping"):
        _render(project_root, ENV + "template: templates/empty.j2\n")


def test_hashes_are_stable_and_per_service(project_root: Path) -> None:
    first = _render(project_root)
    assert first.service_hashes == _render(project_root).service_hashes
    api_changed = _render(project_root, ENV.replace("postgrest/postgrest:v12.2.3", "postgrest/postgrest:v12.2.4"))
    assert api_changed.service_hashes["db"] == first.service_hashes["db"]
    assert api_changed.service_hashes["api"] != first.service_hashes["api"]
    assert api_changed.config_hash != first.config_hash
    rotated = _render(project_root, secrets={**SECRETS, "DB_ADMIN_PASSWORD": Secret("other")})
    assert rotated.service_hashes["db"] != first.service_hashes["db"]
    owner_rotated = _render(project_root, secrets={**SECRETS, "DB_PASSWORD": Secret("other")})
    assert owner_rotated.service_hashes == first.service_hashes  # no container holds the owner's password
    assert f'"io.provision.config-hash": "{first.service_hashes["db"]}"' in first.text


def test_coolify_render_publishes_no_host_ports(project_root: Path) -> None:
    doc = yaml.safe_load(_render(project_root, ports=None, backend="coolify").text)
    assert "ports" not in doc["services"]["db"] and "ports" not in doc["services"]["api"]


def test_coolify_gets_an_unlabelled_data_volume(project_root: Path) -> None:
    coolify = yaml.safe_load(_render(project_root, ports=None, backend="coolify").text)
    local = yaml.safe_load(_render(project_root, ports=Ports(api=1, db=2), backend="local").text)
    assert coolify["volumes"] == {"pgdata": {}}
    assert local["volumes"]["pgdata"]["labels"]["io.provision.project"] == "shop"


def test_rendering_is_fast(project_root: Path) -> None:
    # a sanity bound only; the real numbers live in bench/ and docs/benchmarks.md
    write_env(project_root, "dev", ENV)
    config = load_env("dev", project_root, environ={})
    started = time.perf_counter()
    for i in range(100):
        context = build_context(config, config.project(f"p{i}"), backend="local", ports=Ports(api=1, db=2))
        render_stack(config.template_path, context, SECRETS)
    assert time.perf_counter() - started < 5


def test_the_owner_id_labels_local_containers_and_network_but_never_the_volume(project_root: Path) -> None:
    owned = ENV + "owner: aaaaaa0001\n"
    local = yaml.safe_load(_render(project_root, owned).text)
    for service in ("db", "api"):
        assert local["services"][service]["labels"]["io.provision.owner"] == "aaaaaa0001"
    assert local["networks"]["default"]["labels"]["io.provision.owner"] == "aaaaaa0001"
    # a volume's labels cannot change once it exists: the file keeps the earlier labels (the backend adds the owner
    # label when it creates the volume itself)
    assert "io.provision.owner" not in local["volumes"]["pgdata"]["labels"]
    assert local["volumes"]["pgdata"]["labels"] == yaml.safe_load(_render(project_root).text)["volumes"]["pgdata"]["labels"]
    coolify = _render(project_root, owned, ports=None, backend="coolify")  # Coolify: descriptions carry it
    assert "io.provision.owner" not in coolify.text
    assert coolify.service_hashes == _render(project_root, ports=None, backend="coolify").service_hashes


def test_an_owner_id_changes_the_local_service_hashes(project_root: Path) -> None:
    # stated in CHANGELOG: a stack made without the label is recreated once, to carry it
    assert _render(project_root, ENV + "owner: aaaaaa0001\n").service_hashes != _render(project_root).service_hashes
