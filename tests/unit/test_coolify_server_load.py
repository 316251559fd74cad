"""What placement counts on a server: every resource Coolify lists there (app/Models/Server.php:1001-1008:
applications, standalone databases and services), not only services; memory counts provision's services."""

from __future__ import annotations

from pathlib import Path

import httpx

from provision.backends.coolify import CoolifyBackend, CoolifyClient
from provision.core.config import load_env
from provision.core.secrets import Secret
from tests.conftest import write_env
from tests.coolify.conftest import coolify_env

API = "https://coolify.test/api/v1"
TOKEN = "9|unit-token"


def test_applications_and_standalone_databases_count_against_max_stacks(project_root: Path) -> None:
    write_env(project_root, "dev", coolify_env(timeout=5) + "  servers:\n    - {name: edge, max_stacks: 4}\n")
    config = load_env("dev", project_root, environ={"COOLIFY_API_URL": API, "COOLIFY_API_TOKEN": TOKEN})
    resources = [
        {"uuid": "svc1", "name": "shop", "type": "service"},
        {"uuid": "app1", "name": "website", "type": "application"},
        {"uuid": "pg1", "name": "reports", "type": "standalone-postgresql"},
        {"uuid": "rd1", "name": "cache", "type": "standalone-redis"},
    ]

    def coolify(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        answers = {
            "/servers": [{"uuid": "srv1", "name": "edge", "is_usable": True, "is_reachable": True, "settings": {}}],
            "/services": [{"uuid": "svc1", "name": "shop", "description": "provision=0123456789abcdef mem=335544320"},
                          {"uuid": "other", "name": "elsewhere", "description": "mem=999"}],
            "/servers/srv1/resources": resources,
        }
        return httpx.Response(200, json=answers[path])

    backend = CoolifyBackend(CoolifyClient.connect(API, Secret(TOKEN), transport=httpx.MockTransport(coolify)), config)
    [load] = backend.server_loads()
    assert (load.name, load.stacks, load.memory_used) == ("edge", 4, 335544320)
    assert load.refusal(0) == "full: 4 of 4 stacks"  # a service and three other resources fill four places
