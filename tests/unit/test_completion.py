"""Completion of flag values from env files and state, as the shells hand the typed words over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from provision.cli.completion import flag_values
from tests.conftest import write_env


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_env(tmp_path, "dev", "images: {db: a, api: b}\nprojects:\n  - name: shop\n  - name: blog\n")
    write_env(tmp_path, "staging", "images: {db: a, api: b}\nprojects:\n  - name: crm\n")
    (tmp_path / ".provision" / "dev" / "made-by-post").mkdir(parents=True)
    (tmp_path / ".provision" / "dev" / "made-by-post" / "state.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize(("typed", "offered"), [
    ("provision plan --env", ["dev", "staging"]),
    ("provision plan --env = st", ["staging"]),  # bash splits --env=st into three words
    ("provision plan --env=st", ["--env=staging"]),  # zsh keeps it whole
    ("provision outputs --env=dev --project", ["shop", "blog", "made-by-post"]),
    ("provision outputs --env staging --project c", ["crm"]),
    ("provision outputs --project", ["shop", "blog", "crm", "made-by-post"]),
    ("provision logs --env=dev --project=shop --service", ["db", "api"]),
    ("provision outputs --format", ["env", "json"]),
    ("provision plan", None),  # task names and flags: Invoke's own completion
    ("provision plan --json", None),
    ("provision plan --env 'unclosed", []),
])
def test_flag_values(root: Path, typed: str, offered: list[str] | None) -> None:
    assert flag_values(typed, lambda: root) == offered


def test_no_project_directory_offers_nothing() -> None:
    def nowhere() -> Path:
        raise Exit("error: no envs/ directory", code=2)

    assert flag_values("provision plan --env", nowhere) == []


def test_the_console_program_completes_values(root: Path) -> None:
    argv = [sys.executable, "-m", "provision", "--complete", "--", "provision", "plan", "--env"]
    result = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["dev", "staging"]
    script = subprocess.run([sys.executable, "-m", "provision", "--print-completion-script", "bash"], cwd=root,
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert "provision --complete" in script
