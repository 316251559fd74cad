from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from provision.core.config import load_env
from provision.core.errors import ConfigError
from provision.service.scaffold import init
from tests.conftest import write_env


def test_init_makes_a_project_that_loads_and_changes_nothing_the_second_time(project_root: Path) -> None:
    first = init(project_root, env="dev")
    assert first.changed and re.fullmatch(r"[a-z][0-9a-f]{10}", first.owner)
    config = load_env("dev", project_root, environ={})
    assert config.owner == first.owner and [p.name for p in config.projects] == ["demo"]
    assert (project_root / "envs" / "dev.env.example").is_file()
    gitignore = (project_root / ".gitignore").read_text().splitlines()
    assert {".env", "envs/*.env", ".provision/"} <= set(gitignore)
    hook = project_root / "hooks" / "post-provision.example"
    assert os.access(hook, os.X_OK)

    again = init(project_root, env="dev")
    assert not again.changed and again.actions == ()
    assert (project_root / ".gitignore").read_text().splitlines() == gitignore


def test_init_gives_unowned_env_files_the_repository_owner_and_overwrites_nothing(project_root: Path) -> None:
    write_env(project_root, "prod", "owner: team-abc123\nimages: {db: a, api: b}\n")
    write_env(project_root, "staging", "# staging\nbackend: coolify\nimages: {db: a, api: b}\n")
    before = (project_root / "envs" / "prod.yml").read_text()
    result = init(project_root, env="dev", backend="coolify")
    assert result.owner == "team-abc123"
    assert "envs/staging.yml: added owner: team-abc123" in result.actions
    assert (project_root / "envs" / "staging.yml").read_text().startswith("owner: team-abc123\n# staging\n")
    assert (project_root / "envs" / "prod.yml").read_text() == before
    assert "owner: team-abc123" in (project_root / "envs" / "dev.yml").read_text()
    assert "COOLIFY_API_TOKEN=" in (project_root / "envs" / "dev.env.example").read_text()


def test_init_refuses_to_guess_between_owners_and_bad_input(project_root: Path) -> None:
    write_env(project_root, "prod", "owner: team-abc123\nimages: {db: a, api: b}\n")
    write_env(project_root, "staging", "owner: team-def456\nimages: {db: a, api: b}\n")
    write_env(project_root, "qa", "images: {db: a, api: b}\n")
    with pytest.raises(ConfigError, match="different owner ids"):
        init(project_root)
    assert not (project_root / "envs" / "dev.yml").exists()  # nothing half-done
    with pytest.raises(ConfigError, match="--backend 'nomad'"):
        init(project_root, backend="nomad")


def test_new_owner_ids_are_always_read_back_as_text(project_root: Path) -> None:
    import yaml

    from provision.core.envfile import new_owner_id

    for _ in range(2000):  # ids of digits only, or shaped like 12e45, would come back from YAML as numbers
        owner = new_owner_id()
        assert yaml.safe_load(f"owner: {owner}") == {"owner": owner}


def test_init_under_umask_000_makes_hooks_private_and_nothing_world_writable(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    previous = os.umask(0)
    try:
        init(root, env="dev")
    finally:
        os.umask(previous)
    mode = lambda path: path.stat().st_mode & 0o777  # noqa: E731
    assert mode(root / "hooks") == 0o700 and mode(root / "envs") == 0o755
    assert mode(root / "hooks" / "post-provision.example") == 0o700
    assert mode(root / "envs" / "dev.yml") == 0o644 and mode(root / "envs" / "dev.env.example") == 0o644


def test_init_keeps_the_modes_of_directories_that_exist(project_root: Path) -> None:
    (project_root / "envs").chmod(0o750)
    init(project_root, env="dev")
    assert (project_root / "envs").stat().st_mode & 0o777 == 0o750


@pytest.mark.parametrize("line", ["owner: team-abc123 # the repository's id", "owner: team-abc123\t#x",
                                  "owner: 'team-abc123'  # quoted", "owner: team-abc123\r"])
def test_init_reads_an_owner_line_with_a_comment(project_root: Path, line: str) -> None:
    write_env(project_root, "prod", f"{line}\nimages: {{db: a, api: b}}\n")
    before = (project_root / "envs" / "prod.yml").read_text()
    result = init(project_root, env="dev")
    assert (project_root / "envs" / "prod.yml").read_text() == before  # no second owner: line
    assert result.owner == "team-abc123"
    assert "owner: team-abc123\n" in (project_root / "envs" / "dev.yml").read_text()
