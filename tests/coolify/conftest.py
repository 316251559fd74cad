"""Coolify backend fixtures: the emulator on 127.0.0.1 and a project root whose env points at it."""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.coolify_emulator import REALISTIC, CoolifyEmulator
from tests.sandbox import Sandbox

TOKEN = "7|tok-" + "s3cr3t" * 6
OWNER = "test-owner-1"  # what a repository's env files carry; another checkout would have another
PUBLIC_IMAGES = {"db": "postgres:16-alpine", "api": "postgrest/postgrest:v12.2.3"}


@pytest.fixture
def emulator() -> Iterator[CoolifyEmulator]:
    with CoolifyEmulator(token=TOKEN, **REALISTIC) as emu:
        yield emu


def coolify_env(images: dict[str, str] = PUBLIC_IMAGES, *, projects: tuple[str, ...] = ("shop",),
                timeout: float = 20, extra: str = "", owner: str = OWNER) -> str:
    listed = "".join(f"  - name: {p}\n" for p in projects)
    return (f"owner: {owner}\nbackend: coolify\nimages:\n  db: {images['db']}\n  api: {images['api']}\n"
            f"projects:\n{listed}health:\n  timeout: {timeout}\n"
            f"coolify:\n  request_timeout: 3\n" + extra)


def make_sandbox(tmp_path: Path, emu: CoolifyEmulator, token: str = TOKEN, env: str | None = None) -> Sandbox:
    root = tmp_path / "root"
    (root / "envs").mkdir(parents=True)
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    env = env or "st-" + uuid.uuid4().hex[:6]
    box = Sandbox(root=root, env=env, images=PUBLIC_IMAGES)
    box.write_env_text(coolify_env())
    (root / "envs" / f"{env}.env").write_text(f"COOLIFY_API_URL={emu.base_url}\nCOOLIFY_API_TOKEN={token}\n")
    box.extra_environ.update({"HTTP_PROXY": emu.proxy_url, "http_proxy": emu.proxy_url,
                              "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    return box


@pytest.fixture
def sandbox(tmp_path: Path, emulator: CoolifyEmulator) -> Sandbox:
    return make_sandbox(tmp_path, emulator)


def methods(emu: CoolifyEmulator) -> list[str]:
    return [f"{r.method} {r.path}" for r in emu.requests]


def stack_changes(emu: CoolifyEmulator) -> list[str]:
    """The requests that change something, without those that take and release the run's lock."""
    locks = {p["uuid"] for p in emu.find_projects() if p["name"].startswith("provision-locks-")}

    def on_lock(method: str, path: str, body: object) -> bool:
        creates_lock_project = method == "POST" and path == "/projects" and isinstance(body, dict) \
            and str(body.get("name", "")).startswith("provision-locks-")
        return creates_lock_project or any(uuid in path for uuid in locks)

    return [f"{r.method} {r.path}" for r in emu.requests if r.method != "GET" and not on_lock(r.method, r.path, r.body)]


@pytest.fixture
def docker_emulator(test_images: Mapping[str, str]) -> Iterator[CoolifyEmulator]:
    """An emulator that deploys what is pushed to it on the local Docker Engine."""
    with CoolifyEmulator(token=TOKEN, docker=True, action_delay=0) as emu:
        yield emu


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
