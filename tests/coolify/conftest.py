"""Coolify backend fixtures: the emulator on 127.0.0.1 and a project root whose env points at it.

The emulator runs on a ScaledClock (PROVISION_TEST_TIME_SCALE times faster than the real one; default 1, the
real clock, for now) and the sandbox runs the CLI in this process on the same clock; a test marked `subprocess_cli` (or a `make_sandbox(..., subprocess=True)`) runs
it as `python -m invoke` in a subprocess, end to end. PROVISION_TEST_CLI=subprocess runs every test so, on the
real clock (the tier as it was)."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import IN_PROCESS, REPO
from tests.coolify_emulator import REALISTIC, CoolifyEmulator
from tests.sandbox import Sandbox
from tests.timing import SYSTEM, Clock, ScaledClock

TOKEN = "7|tok-" + "s3cr3t" * 6
OWNER = "test-owner-1"  # what a repository's env files carry; another checkout would have another
PUBLIC_IMAGES = {"db": "postgres:16-alpine", "api": "postgrest/postgrest:v12.2.3"}


ALL_SUBPROCESS = not IN_PROCESS
# 1 by default: the backend reads the same clock (Workspace(clock=)), but the suite is CPU-bound on two cores, so
# shorter waits mostly add polling; a larger factor runs the tier faster where cores are free
TIME_SCALE = 1.0 if ALL_SUBPROCESS else float(os.environ.get("PROVISION_TEST_TIME_SCALE", "1"))


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> Clock:
    """The clock of this test's emulators and in-process runs; the real one for a `subprocess_cli` test (its
    run reads the real clock, so its Coolify must too)."""
    if TIME_SCALE == 1 or request.node.get_closest_marker("subprocess_cli") is not None:
        return SYSTEM
    return ScaledClock(TIME_SCALE)


@pytest.fixture
def emulator(clock: Clock) -> Iterator[CoolifyEmulator]:
    with CoolifyEmulator(token=TOKEN, clock=clock, **REALISTIC) as emu:
        yield emu


def coolify_env(images: dict[str, str] = PUBLIC_IMAGES, *, projects: tuple[str, ...] = ("shop",),
                timeout: float = 20, extra: str = "", owner: str = OWNER) -> str:
    listed = "".join(f"  - name: {p}\n" for p in projects)
    return (f"owner: {owner}\nbackend: coolify\nimages:\n  db: {images['db']}\n  api: {images['api']}\n"
            f"projects:\n{listed}health:\n  timeout: {timeout}\n"
            f"coolify:\n  request_timeout: 3\n" + extra)


def make_sandbox(tmp_path: Path, emu: CoolifyEmulator, token: str = TOKEN, env: str | None = None, *,
                 subprocess: bool = False) -> Sandbox:
    """A project root whose env `env` (default: a new name) points at `emu`; its CLI runs in this process on the
    emulator's clock unless `subprocess` (or PROVISION_TEST_CLI=subprocess)."""
    root = tmp_path / "root"
    (root / "envs").mkdir(parents=True)
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    env = env or "st-" + uuid.uuid4().hex[:6]
    in_process = not (subprocess or ALL_SUBPROCESS)
    box = Sandbox(root=root, env=env, images=PUBLIC_IMAGES, in_process=in_process,
                  clock=emu.core.clock if in_process else None)
    box.write_env_text(coolify_env())
    (root / "envs" / f"{env}.env").write_text(f"COOLIFY_API_URL={emu.base_url}\nCOOLIFY_API_TOKEN={token}\n")
    box.extra_environ.update({"HTTP_PROXY": emu.proxy_url, "http_proxy": emu.proxy_url,
                              "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    return box


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, tmp_path: Path, emulator: CoolifyEmulator) -> Sandbox:
    """A sandbox on `emulator`: in process, or a subprocess for a test marked `subprocess_cli`."""
    return make_sandbox(tmp_path, emulator, subprocess=request.node.get_closest_marker("subprocess_cli") is not None)


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
