"""Shared fixtures: a throwaway project root with the real template, and a clean environment."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TEST_IMAGES = {"db": "provision-test/postgres:15", "api": "provision-test/postgrest:12"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No developer settings leak into tests: no Coolify credentials, no state dir override, no HOME files."""
    for key in ("COOLIFY_API_URL", "COOLIFY_API_TOKEN", "PROVISION_STATE_DIR", "PROVISION_COMPOSE",
                "DB_PASSWORD", "JWT_SECRET", "PROVISION_API_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


def write_env(root: Path, name: str, text: str) -> Path:
    path = root / "envs" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project_root(tmp_path: Path) -> Iterator[Path]:
    """A project root holding the real template and an `envs/` directory (empty)."""
    root = tmp_path / "root"
    (root / "envs").mkdir(parents=True)
    shutil.copytree(REPO / "templates", root / "templates")
    yield root
