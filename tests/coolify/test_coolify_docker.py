"""What is pushed to Coolify actually runs: the emulator deploys it on the local Docker Engine."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.conftest import reload_schema, sql
from tests.coolify.conftest import coolify_env, free_port, make_sandbox
from tests.coolify_emulator import CoolifyEmulator

pytestmark = pytest.mark.docker


def test_the_pushed_stack_runs_and_serves_data(tmp_path: Path, docker_emulator: CoolifyEmulator,
                                               test_images: Mapping[str, str]) -> None:
    emu = docker_emulator
    box = make_sandbox(tmp_path, emu)
    port = free_port()
    box.write_env_text(coolify_env(dict(test_images), timeout=90,
                                   extra=f"variables:\n  db_public_port: {port}\n"))
    result = box.cli("provision", "--json", "--show-secrets", timeout=300).json()["projects"][0]
    assert result["status"] == "running" and result["db_url_scope"] == "public"
    assert result["db_url"].startswith("postgresql://app:") and f"@127.0.0.1:{port}/app" in result["db_url"]

    sql(result["db_url"], "CREATE TABLE notes (id serial PRIMARY KEY, body text)")
    sql(result["db_url"], "INSERT INTO notes (body) VALUES ('through coolify')")
    sql(result["db_url"], "GRANT SELECT ON notes TO anon")  # opened to anonymous reads on purpose
    reload_schema(result["db_url"], result["api_url"], "notes", proxy=emu.proxy_url)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": emu.proxy_url}))
    with opener.open(result["api_url"] + "/notes", timeout=10) as response:
        assert json.loads(response.read()) == [{"id": 1, "body": "through coolify"}]

    # a restart through the API keeps the data
    box.cli("restart", "--project=shop", timeout=300)
    assert sql(result["db_url"], "SELECT body FROM notes") == [("through coolify",)]

    # an api image that never answers: the update is rolled back, the old version serves, the data is intact
    broken = {**test_images, "api": "provision-test/debian-base:bookworm"}
    box.write_env_text(coolify_env(broken, timeout=20, extra=f"variables:\n  db_public_port: {port}\n"))
    failed = box.cli("provision", "--json", timeout=300, check=False)
    assert failed.returncode != 0 and failed.json()["projects"][0]["status"] == "rolled back"
    with opener.open(result["api_url"] + "/notes", timeout=10) as response:
        assert json.loads(response.read()) == [{"id": 1, "body": "through coolify"}]
    assert sql(result["db_url"], "SELECT body FROM notes") == [("through coolify",)]
