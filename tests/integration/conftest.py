"""Integration fixtures: a real Docker Engine, locally built images, throwaway envs cleaned up by label.

A missing engine FAILS these tests (it never skips them): CI must prove the product works.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import REPO, _docker
from tests.sandbox import Sandbox

pytestmark = pytest.mark.docker


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
