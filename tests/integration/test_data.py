"""The data lifecycle on the real engine with real PostgreSQL 15 and 17: backup, restore, clone, major
upgrade (and its rollback and finalize), secret rotation."""

from __future__ import annotations

import json
import stat
import subprocess

import httpx
import psycopg
import pytest

from tests.conftest import Sandbox, anonymous_volumes, anonymous_volumes_left, reload_schema, sql

PG17 = "provision-test/postgres:17"


def _urls(sandbox: Sandbox, project: str) -> tuple[str, str]:
    out = sandbox.cli("outputs", f"--project={project}", "--format=json").json()
    return str(out["api_url"]), str(out["db_url"])


def _seed(db_url: str, rows: int) -> None:
    sql(db_url, "create table if not exists items (id int primary key, name text)")
    sql(db_url, "grant select on items to anon")  # opened to anonymous reads on purpose (docs/security.md)
    sql(db_url, "insert into items select g, 'item ' || g from generate_series(1, %s) g", rows)


def _count(db_url: str) -> int:
    return int(sql(db_url, "select count(*) from items")[0][0])


def _major(db_url: str) -> int:
    return int(sql(db_url, "show server_version_num")[0][0]) // 10000


def _volumes(sandbox: Sandbox) -> list[str]:
    return subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=io.provision.env={sandbox.env}"],
                          capture_output=True, text=True, timeout=60, check=True).stdout.split()


def test_backup_then_restore_brings_the_rows_back(sandbox: Sandbox) -> None:
    """restore --from restores into a new volume beside the running stack and switches to it; the old volume is
    kept (destroy --delete-data refuses meanwhile) until --finalize, --rollback returns to it; a dump pg_restore
    fails on leaves the project untouched."""
    sandbox.cli("provision", "--project=shop")
    api_url, db_url = _urls(sandbox, "shop")
    _seed(db_url, 3)
    made = sandbox.cli("backup", "--project=shop", "--json").json()
    dump = made["details"]["path"]
    assert made["changed"] is True and made["details"]["row_counts"] == {"public.items": 3}
    assert made["details"]["server_major"] == 15 and made["details"]["sha256"]
    from pathlib import Path

    assert stat.S_IMODE(Path(dump).stat().st_mode) == 0o600 and stat.S_IMODE(Path(dump).parent.stat().st_mode) == 0o700
    manifest = json.loads(Path(dump).with_suffix(".json").read_text())
    assert manifest["row_counts"] == {"public.items": 3} and manifest["image"] == sandbox.images["db"]

    old_volume = f"{sandbox.compose_name('shop')}_pgdata"
    sql(db_url, "delete from items where id > 1")  # the data before the restore: one row
    restored = sandbox.cli("restore", "--project=shop", "--from=latest", "--yes", "--json")
    details = restored.json()["details"]
    assert details["restored_from"] == dump and details["safety_backup"] is None  # no safety dump: the volume stays
    assert details["kept_volume"] == old_volume and details["volume"].startswith(f"{old_volume}_restore_")
    assert sorted(_volumes(sandbox)) == sorted([old_volume, details["volume"]])
    assert _count(db_url) == 3
    assert len(httpx.get(f"{api_url}/items", timeout=10).json()) == 3  # the API serves the restored rows
    said = sandbox.cli("restore", "--project=shop", "--from=latest", "--yes", check=False)  # one kept volume at a time
    assert said.returncode == 1 and "--finalize --yes" in said.stderr and "nothing was changed" in said.stderr
    kept = sandbox.cli("destroy", "--project=shop", "--delete-data", "--yes", "--no-backup", check=False)
    assert kept.returncode == 1 and old_volume in kept.stderr and "restore" in kept.stderr, kept.stderr
    back = sandbox.cli("restore", "--project=shop", "--rollback", "--yes")
    assert old_volume in back.stdout
    assert _count(db_url) == 1 and _volumes(sandbox) == [old_volume]  # the rows before; the restored volume gone

    again = sandbox.cli("restore", "--project=shop", "--from=latest", "--yes")
    assert "--finalize --yes" in again.stdout and "--rollback --yes" in again.stdout and old_volume in again.stdout
    assert _count(db_url) == 3
    new_volume = next(v for v in _volumes(sandbox) if v != old_volume)
    sandbox.cli("restore", "--project=shop", "--finalize", "--yes")
    assert _volumes(sandbox) == [new_volume] and _count(db_url) == 3
    listed = sandbox.cli("backups", "--project=shop", "--json").json()["backups"]
    assert [b["label"] for b in listed] == [""]  # no safety backups were written

    # a dump pg_restore fails on (cut short: its header reads, its body does not) leaves the project as it was
    sql(db_url, "insert into items values (4, 'after the restore')")
    cut = sandbox.root / "cut.dump"
    cut.write_bytes(Path(dump).read_bytes()[:-400])
    failed = sandbox.cli("restore", "--project=shop", f"--from={cut}", "--yes", "--force", check=False)
    assert failed.returncode == 1 and "pg_restore: error" in failed.stderr and "nothing was changed" in failed.stderr, failed.stderr
    assert _count(db_url) == 4 and _volumes(sandbox) == [new_volume]
    record = json.loads((sandbox.state_dir / sandbox.env / "shop" / "state.json").read_text())
    assert not record.get("kept_data") and not (sandbox.state_dir / sandbox.env / "shop" / "pending.json").exists()

    # a corrupt dump, and one without --yes, are refused before anything changes
    broken = sandbox.root / "broken.dump"
    broken.write_bytes(Path(dump).read_bytes()[:40])
    refused = sandbox.cli("restore", "--project=shop", f"--from={broken}", "--yes", check=False)
    assert refused.returncode == 2 and "nothing was changed" in refused.stderr
    unconfirmed = sandbox.cli("restore", "--project=shop", "--from=latest", check=False)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert _count(db_url) == 4 and len(sandbox.cli("backups", "--project=shop", "--json").json()["backups"]) == 1

    # --keep prunes older backups once a new one succeeded
    sandbox.cli("backup", "--project=shop")
    sandbox.cli("backup", "--project=shop", "--keep=1")
    assert len(sandbox.cli("backups", "--project=shop", "--json").json()["backups"]) == 1
    history = sandbox.cli("history", "--project=shop", "--json").stdout
    assert '"action": "backup"' in history and '"action": "restore"' in history


def test_clone_copies_rows_and_writes_stay_apart(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    _, source_url = _urls(sandbox, "shop")
    _seed(source_url, 5)
    cloned = sandbox.cli("clone", "--project=shop", "--to=shop-pr-42", "--json").json()
    assert cloned["project"] == "shop-pr-42" and cloned["details"]["row_counts"] == {"public.items": 5}
    api_url, clone_url = _urls(sandbox, "shop-pr-42")
    assert _count(clone_url) == 5 and len(httpx.get(f"{api_url}/items", timeout=10).json()) == 5
    sql(clone_url, "insert into items values (100, 'only in the clone')")
    assert _count(clone_url) == 6 and _count(source_url) == 5
    again = sandbox.cli("clone", "--project=shop", "--to=shop-pr-42", "--json").json()  # a branch: kept as it is
    assert again["changed"] is False and _count(clone_url) == 6
    sandbox.cli("provision", "--project=other", "--create")
    taken = sandbox.cli("clone", "--project=shop", "--to=other", check=False)  # no branch of shop: refused
    assert taken.returncode != 0 and "already exists" in taken.stderr
    sandbox.cli("destroy", "--project=other", "--delete-data", "--yes", "--no-backup")
    sandbox.cli("destroy", "--project=shop-pr-42", "--delete-data", "--yes", "--no-backup")
    assert _count(source_url) == 5


def test_major_upgrade_keeps_every_row_and_rolls_back(sandbox: Sandbox) -> None:
    before = anonymous_volumes() or set()
    sandbox.cli("provision", "--project=shop")
    api_url, db_url = _urls(sandbox, "shop")
    _seed(db_url, 7)
    sql(db_url, "grant select on items to anon")  # anonymous reads, on purpose: the upgrade keeps the grant
    old_volume = f"{sandbox.compose_name('shop')}_pgdata"
    sandbox.write_env(["shop"], images={**sandbox.images, "db": PG17})

    planned = sandbox.cli("plan", "--json").json()["projects"]
    assert planned[0]["outcome"] == "upgrade-db" and "15 → 17" in planned[0]["reason"]
    refused = sandbox.cli("provision", "--project=shop", check=False)
    assert refused.returncode == 1 and "upgrade-db" in refused.stderr and "Nothing was changed" in refused.stderr
    assert _major(db_url) == 15 and _count(db_url) == 7  # untouched

    upgraded = sandbox.cli("upgrade-db", "--project=shop", "--yes", "--json").json()
    details = upgraded["details"]
    assert (details["from_major"], details["to_major"]) == (15, 17) and details["downtime_s"] > 0
    # the old volume is kept as it was; the stack moved to a new one
    assert details["kept_volume"] == old_volume and details["volume"].startswith(f"{old_volume}_pg17_")
    assert sorted(_volumes(sandbox)) == sorted([old_volume, details["volume"]])
    assert _major(db_url) == 17 and _count(db_url) == 7
    assert len(httpx.get(f"{api_url}/items", timeout=10).json()) == 7
    assert sandbox.cli("plan", "--json").json()["projects"][0]["outcome"] == "no-op"
    assert sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]["changed"] is False

    # a dump of the 17 server cannot go into a 15 one
    newer = sandbox.cli("backup", "--project=shop", "--json").json()["details"]["path"]
    sql(db_url, "insert into items values (1000, 'written on 17')")
    back = sandbox.cli("upgrade-db", "--project=shop", "--rollback", "--yes", "--json").json()
    assert back["details"]["backup"]  # what was written since the upgrade is saved
    assert _major(db_url) == 15 and _count(db_url) == 7
    assert _volumes(sandbox) == [old_volume]  # back on the old volume; the upgraded one is deleted
    refused_dump = sandbox.cli("restore", "--project=shop", f"--from={newer}", "--yes", check=False)
    assert refused_dump.returncode == 2 and "PostgreSQL 17, newer" in refused_dump.stderr

    # upgrade again: destroy --delete-data keeps the kept volume (and everything else) until finalize deletes it
    upgraded = sandbox.cli("upgrade-db", "--project=shop", "--yes", "--json").json()["details"]
    assert upgraded["kept_volume"] == old_volume and _major(db_url) == 17
    kept = sandbox.cli("destroy", "--project=shop", "--delete-data", "--yes", "--no-backup", check=False)
    assert kept.returncode == 1 and old_volume in kept.stderr and "--finalize --yes" in kept.stderr
    assert _count(db_url) == 7 and sorted(_volumes(sandbox)) == sorted([old_volume, upgraded["volume"]])
    sandbox.cli("upgrade-db", "--project=shop", "--finalize", "--yes")
    assert _volumes(sandbox) == [upgraded["volume"]] and _count(db_url) == 7
    assert anonymous_volumes_left(before) == set()  # the helper containers took their anonymous volumes along


def test_rotating_the_db_password(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    api_url, old_url = _urls(sandbox, "shop")
    _seed(old_url, 2)
    reload_schema(old_url, api_url, "items")
    old_password = sandbox.secrets("shop")["DB_PASSWORD"]
    rotated = sandbox.cli("rotate", "--project=shop", "--secret=db_password", "--yes")
    assert old_password not in rotated.output
    new_password = sandbox.secrets("shop")["DB_PASSWORD"]
    assert new_password != old_password
    _, new_url = _urls(sandbox, "shop")
    assert _count(new_url) == 2 and len(httpx.get(f"{api_url}/items", timeout=10).json()) == 2
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(old_url, connect_timeout=10).close()
    jwt = sandbox.cli("rotate", "--project=shop", "--secret=jwt_secret", "--yes")
    assert "tokens signed with the old JWT secret stop working" in jwt.stdout
    assert len(httpx.get(f"{api_url}/items", timeout=10).json()) == 2
    wrong = sandbox.cli("rotate", "--project=shop", "--secret=api_key", "--yes", check=False)
    assert wrong.returncode == 2 and "--secret 'api_key'" in wrong.stderr


def test_one_project_upgraded_on_its_own_image_then_rolled_back_by_setting_the_env_file_back(
        sandbox: Sandbox) -> None:
    """Per-project images: upgrading one project leaves `provision` working for the others; an env file set back to
    the old image makes plan propose --rollback (no downgrade), and the note after it says the file names it."""
    sandbox.write_env(["shop", "blog"])
    sandbox.cli("provision")
    _, db_url = _urls(sandbox, "shop")
    _seed(db_url, 3)
    own = f"\n    images: {{db: {PG17}}}"
    lines = (sandbox.root / "envs" / f"{sandbox.env}.yml").read_text()
    (sandbox.root / "envs" / f"{sandbox.env}.yml").write_text(lines.replace("  - name: shop", "  - name: shop" + own))
    planned = {p["project"]: p["outcome"] for p in sandbox.cli("plan", "--json").json()["projects"]}
    assert planned == {"shop": "upgrade-db", "blog": "no-op"}
    sandbox.cli("upgrade-db", "--project=shop", "--yes")
    assert _major(db_url) == 17 and _count(db_url) == 3
    everyone = sandbox.cli("provision", "--json").json()["projects"]  # blog, not upgraded, provisions as before
    assert [(p["project"], p["changed"]) for p in everyone] == [("shop", False), ("blog", False)]

    (sandbox.root / "envs" / f"{sandbox.env}.yml").write_text(lines)  # shop named on the env's PostgreSQL 15 again
    [item] = [p for p in sandbox.cli("plan", "--json", check=False).json()["projects"] if p["project"] == "shop"]
    assert item["outcome"] == "upgrade-db" and "--rollback --yes" in item["reason"], item
    back = sandbox.cli("upgrade-db", "--project=shop", "--rollback", "--yes", "--no-backup")
    assert f"envs/{sandbox.env}.yml names {sandbox.images['db']} (images.db)" in back.stderr, back.stderr
    assert "still names" not in back.stderr
    assert _major(db_url) == 15 and _count(db_url) == 3
    assert sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]["changed"] is False
