"""Backup files never overwrite and never write through a link: `backup --out=X` refuses a taken X or X's
manifest (a link included), the dump's part file is created new (O_EXCL|O_NOFOLLOW, 0600) and moved into
place only while X is free."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from provision.core.errors import BackupError, ConfigError
from provision.core.secrets import Secret
from provision.infra import database
from provision.service.data import DataVerbs
from provision.state import backups
from tests.unit.fakes import FakeRunner

DUMP = (Path(__file__).resolve().parent.parent / "fixtures" / "dumps" / "pg15.dump").read_bytes()
ACCESS = database.DbAccess(("docker", "exec", "--interactive", "--env", "PGPASSWORD", "shop-db-1"),
                           "127.0.0.1", 5432, "app", "app", {"PGPASSWORD": Secret("pw")}, where="in the db container")


def lifecycle(runner: FakeRunner) -> DataVerbs:
    """DataVerbs over a stub engine: what `dump` asks of it (a reporter, the record, the backend's name)."""
    engine: Any = SimpleNamespace(reporter=SimpleNamespace(step=lambda *args: None), record=lambda project: None,
                                   backend=SimpleNamespace(name="local"))
    return DataVerbs(engine, runner)


TARGET: Any = SimpleNamespace(project="shop", env="dev", images=SimpleNamespace(db="pg:15"))


def dump_runner() -> FakeRunner:
    return FakeRunner().on("pg_dump", writes=DUMP).on("psql", stdout="public.items|3\n")


def test_out_writes_a_private_dump_and_its_manifest(tmp_path: Path) -> None:
    made = lifecycle(dump_runner()).dump(TARGET, ACCESS, out=tmp_path / "shop.dump")
    assert made.path == tmp_path / "shop.dump" and made.path.read_bytes() == DUMP
    assert made.path.stat().st_mode & 0o777 == 0o600 and made.manifest_path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.dump", "shop.json"]


@pytest.mark.parametrize("taken", ["shop.dump", "shop.json"])
def test_out_refuses_when_the_dump_or_its_manifest_exists(tmp_path: Path, taken: str) -> None:
    (tmp_path / taken).write_text("keep me")
    runner = dump_runner()
    with pytest.raises(ConfigError, match=f"{taken} is taken"):
        lifecycle(runner).dump(TARGET, ACCESS, out=tmp_path / "shop.dump")
    assert (tmp_path / taken).read_text() == "keep me" and runner.calls == []


@pytest.mark.parametrize("taken", ["shop.dump", "shop.json"])
def test_out_refuses_a_link_even_a_dangling_one_and_writes_nothing_through_it(tmp_path: Path, taken: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / taken).symlink_to(elsewhere / "victim")
    with pytest.raises(ConfigError, match="symbolic link"):
        lifecycle(dump_runner()).dump(TARGET, ACCESS, out=tmp_path / "shop.dump")
    assert list(elsewhere.iterdir()) == []


def test_a_planted_part_link_receives_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "x.dump.part").symlink_to(victim)
    with pytest.raises(BackupError, match=r"x\.dump\.part exists"):
        database.dump(ACCESS, FakeRunner().on("pg_dump", writes=DUMP), tmp_path / "x.dump", timeout=60)
    assert victim.read_text() == "precious"
    assert not (tmp_path / "x.dump").exists() and (tmp_path / "x.dump.part").is_symlink()


def test_a_dump_never_replaces_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "x.dump"
    path.write_text("someone else's")
    with pytest.raises(BackupError, match="appeared while the dump was written"):
        database.dump(ACCESS, FakeRunner().on("pg_dump", writes=DUMP), path, timeout=60)
    assert path.read_text() == "someone else's" and sorted(p.name for p in tmp_path.iterdir()) == ["x.dump"]


def test_a_manifest_is_never_replaced(tmp_path: Path) -> None:
    dump = tmp_path / "x.dump"
    dump.write_bytes(DUMP)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(BackupError, match=r"x\.json exists"):
        backups.write_manifest(dump, {"sha256": "0"})
    assert (tmp_path / "x.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dump", "x.json"]  # no temporary file left
