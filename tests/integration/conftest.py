"""Integration fixtures: a real Docker Engine, locally built images, throwaway envs cleaned up by label.

A missing engine FAILS these tests (it never skips them): CI must prove the product works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_IMAGES

pytestmark = pytest.mark.docker


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Fail (not skip) when no engine answers: run ../shared/ci/ensure-docker.sh or start dockerd."""
    try:
        result = _docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except FileNotFoundError:
        pytest.fail("the docker CLI is not installed: these tests need a Docker Engine with Compose v2")
    if result.returncode != 0:
        pytest.fail(f"no Docker Engine is reachable ({result.stderr.strip()}): start dockerd before running the tests")
    if _docker("compose", "version").returncode != 0:
        pytest.fail("`docker compose` (Compose v2) is not installed")


@pytest.fixture(scope="session")
def test_images(docker_engine: None) -> Mapping[str, str]:
    """Build (or reuse, when cached) the stand-in postgres and postgrest images."""
    result = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh")], capture_output=True, text=True,
                            timeout=900, check=False)
    if result.returncode != 0:
        pytest.fail(f"building the test images failed:\n{result.stdout}\n{result.stderr}")
    return TEST_IMAGES


def cleanup_env(env: str) -> None:
    """Remove every container, volume and network labelled with this env."""
    label = f"label=io.provision.env={env}"
    ids = _docker("ps", "-aq", "--filter", label).stdout.split()
    if ids:
        _docker("rm", "-f", "-v", *ids)
    for kind in ("volume", "network"):
        names = _docker(kind, "ls", "-q", "--filter", label).stdout.split()
        if names:
            _docker(kind, "rm", "-f", *names) if kind == "volume" else _docker(kind, "rm", *names)


def leftovers(env: str) -> list[str]:
    label = f"label=io.provision.env={env}"
    found = _docker("ps", "-aq", "--filter", label).stdout.split()
    found += _docker("volume", "ls", "-q", "--filter", label).stdout.split()
    found += _docker("network", "ls", "-q", "--filter", label).stdout.split()
    return found


@dataclass
class CLIResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.stdout)


@dataclass
class Sandbox:
    """A project root (tasks.py, templates/, envs/<env>.yml) with its own state dir and a unique env name."""

    root: Path
    env: str
    images: Mapping[str, str]
    outputs: list[str] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.root / ".provision"

    def write_env(self, projects: list[str] | None = None, *, timeout: float = 60, extra: str = "",
                  images: Mapping[str, str] | None = None, name: str | None = None) -> None:
        images = images or self.images
        lines = ["backend: local", "images:", f"  db: {images['db']}", f"  api: {images['api']}"]
        lines += ["projects:", *(f"  - name: {p}" for p in projects)] if projects else ["projects: []"]
        lines += ["health:", f"  timeout: {timeout}", "  interval: 1", "local:", "  port_range: [32000, 32999]"]
        (self.root / "envs" / f"{name or self.env}.yml").write_text("\n".join(lines) + "\n" + extra)

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COOLIFY_", "PROVISION_"))}
        env.update({"PROVISION_STATE_DIR": str(self.state_dir)}, **extra)
        return env

    def argv(self, task: str, *args: str, env: str | None = None) -> list[str]:
        return [sys.executable, "-m", "invoke", task, f"--env={env or self.env}", *args]

    def cli(self, task: str, *args: str, check: bool = True, timeout: float = 300, env: str | None = None,
            extra_env: Mapping[str, str] | None = None) -> CLIResult:
        argv = self.argv(task, *args, env=env) if task != "list" else [sys.executable, "-m", "invoke", task, *args]
        proc = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=timeout,
                              env=self.environ(**(extra_env or {})), check=False)
        result = CLIResult(tuple(argv[3:]), proc.returncode, proc.stdout, proc.stderr)
        self.outputs.append(result.output)
        if check and proc.returncode != 0:
            raise AssertionError(f"`invoke {' '.join(argv[3:])}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return result

    def popen(self, task: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(task, *args), cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.environ())

    def secrets(self, project: str) -> dict[str, str]:
        path = self.state_dir / self.env / project / "secrets.env"
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

    def compose_name(self, project: str) -> str:
        return f"{project}_{self.env}"


@pytest.fixture
def sandbox(tmp_path: Path, test_images: Mapping[str, str]) -> Iterator[Sandbox]:
    root = tmp_path / "root"
    (root / "envs").mkdir(parents=True)
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    env = "it-" + uuid.uuid4().hex[:8]
    box = Sandbox(root=root, env=env, images=test_images)
    box.write_env(["shop"])
    try:
        yield box
    finally:
        cleanup_env(env)
    assert leftovers(env) == [], f"resources left behind for env {env}"


def sql(url: str, statement: str, *params: object) -> list[tuple]:  # type: ignore[type-arg]
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        cursor = conn.execute(statement, params or None)
        rows = cursor.fetchall() if cursor.description else []
        conn.commit()
        return rows
