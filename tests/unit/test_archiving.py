"""Continuous archiving without Docker: the backup: settings, time specs, the window and health read from the
archiver's files, the base a restore starts from, retention (Python's and the archiver script's own), the rendered
archiver service on both backends, and the verbs' refusals through the fake backend."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from provision.core import archiving
from provision.core.archiving import ArchiveFacts, BackupSettings, BaseBackup
from provision.core.config import load_env
from provision.core.errors import ConfigError, ConfirmationRequired, NotSupported, ProjectConflict
from provision.core.model import Observed, Ports, Target
from provision.core.render import ARCHIVER_SCRIPT, build_context, render_stack
from provision.core.roles import ARCHIVER, Roles, digest, ensure_sql
from provision.core.secrets import Secret
from provision.service import Provisioner
from provision.service.archive import OutsideWindow
from provision.state.records import StateStore
from tests.conftest import write_env
from tests.unit.fakes import DataBackend, FakeDatabase
from tests.unit.userland import Userland

NOW = datetime(2026, 12, 8, 14, 0, tzinfo=UTC)
ENV = """
images:
  db: postgres:17
  api: postgrest/postgrest:v12.2.3
backup:
  continuous: true
  retention: 7d
projects:
  - name: shop
  - name: blog
    backup:
      continuous: false
  - name: wiki
    backup:
      retention: 2d
      max_lag: 30s
"""
SECRETS = {"DB_PASSWORD": Secret("pw-0123456789"), "JWT_SECRET": Secret("jwt-0123456789"),
           "DB_ADMIN_PASSWORD": Secret("admin-0123456789"), "AUTHENTICATOR_PASSWORD": Secret("auth-0123456789")}


# --- settings -------------------------------------------------------------------------------------------------
def test_the_env_block_is_laid_under_each_project(project_root: Path) -> None:
    write_env(project_root, "dev", ENV)
    config = load_env("dev", project_root, environ={})
    shop, blog, wiki = (config.project(n).backup for n in ("shop", "blog", "wiki"))
    assert shop.continuous and shop.retention == 7 * 86400 and shop.base_every == 86400 and shop.max_lag == 60
    assert not blog.continuous
    assert wiki.continuous and wiki.retention == 2 * 86400 and wiki.max_lag == 30
    assert config.project("undeclared").backup == shop  # the env's
    assert config.project("wiki").key("backup.retention") == "projects[2].backup.retention"
    assert shop.slot_keep_setting == "1024MB"


@pytest.mark.parametrize(("block", "said"), [
    ("backup:\n  repository: s3\n", "backup.repository: 's3' is not a repository this version can write: only "
                                    "'volume'"),
    ("backup:\n  retention: soon\n", "backup.retention: 'soon' is not a duration"),
    ("backup:\n  continous: true\n", "backup.continous: unknown key"),
    ("backup:\n  continuous: yes please\n", "backup.continuous: 'yes please' is not true or false"),
    ("backup:\n  base_every: 30s\n", "backup.base_every: '30s' is too short"),
    ("backup:\n  retention: 1h\n  base_every: 2h\n", "base_every: 2h is longer than retention 1h"),
    ("backup:\n  max_slot_wal_keep_size: 1M\n", "backup.max_slot_wal_keep_size: '1M' is under 64M"),
    ("projects:\n  - name: shop\n    backup:\n      retention: 0s\n", "projects[0].backup.retention: '0s' is too short"),
])
def test_a_bad_setting_names_its_key(project_root: Path, block: str, said: str) -> None:
    write_env(project_root, "dev", "images:\n  db: postgres:17\n  api: postgrest/postgrest:v12.2.3\n" + block)
    with pytest.raises(ConfigError) as caught:
        load_env("dev", project_root, environ={})
    assert said in str(caught.value) and "envs/dev.yml" in str(caught.value)
    if "s3" in block:
        assert "set backup.offsite" in str(caught.value)


def test_repository_volume_is_accepted() -> None:
    assert archiving.backup_settings({"repository": "volume", "continuous": True}).continuous


def test_durations() -> None:
    assert archiving.parse_duration("90") == 90 and archiving.parse_duration("10m") == 600
    assert archiving.parse_duration("1.5h") == 5400 and archiving.parse_duration("2w") == 14 * 86400
    assert [archiving.show_duration(s) for s in (86400, 7 * 86400, 3600, 90, 1.5)] == ["1d", "1w", "1h", "90s",
                                                                                       "1.5s"]
    with pytest.raises(ValueError, match="not a duration"):
        archiving.parse_duration(True)


# --- time specs -----------------------------------------------------------------------------------------------
def test_time_specs() -> None:
    assert archiving.parse_time("latest", NOW) is None
    assert archiving.parse_time("-10m", NOW) == NOW - timedelta(minutes=10)
    assert archiving.parse_time("-90s", NOW) == NOW - timedelta(seconds=90)
    assert archiving.parse_time("2026-12-08T13:03:00.250Z", NOW) == datetime(2026, 12, 8, 13, 3, 0, 250000, UTC)
    assert archiving.parse_time("2026-12-08T15:03:00+02:00", NOW) == datetime(2026, 12, 8, 13, 3, tzinfo=UTC)
    for bad in ("2026-12-08T13:03:00", "yesterday", "-10", "+10m"):
        with pytest.raises(ValueError, match="ISO time with its zone"):
            archiving.parse_time(bad, NOW)
    assert archiving.pg_time(datetime(2026, 12, 8, 13, 3, 0, 250000, UTC)) == "2026-12-08 13:03:00.250000+00"
    assert archiving.iso(datetime(2026, 12, 8, 13, 3, tzinfo=UTC)) == "2026-12-08T13:03:00.000000Z"


# --- window and health ----------------------------------------------------------------------------------------
def _info(start: datetime, end: datetime, wal: str = "000000010000000000000002") -> str:
    return (f"start_time={start:%Y-%m-%dT%H:%M:%SZ}\nend_time={end:%Y-%m-%dT%H:%M:%SZ}\nend_epoch="
            f"{int(end.timestamp())}\nstart_lsn=0/2000028\nend_lsn=0/2000138\nstart_wal={wal}\ntimeline=1\n")


def _facts(*, running: bool = True, updated: datetime = NOW, latest: datetime | None = NOW, lag: str = "0",
           bases: int = 2, **status: object) -> ArchiveFacts:
    body = {"updated": archiving.iso(updated), "streaming": True, "latest_recoverable": archiving.iso(latest) or "",
            "lag_bytes": "0", "lag_seconds": lag, "size_bytes": "1048576", "error": "", "base_error": "", **status}
    infos = {f"b{i}": _info(NOW - timedelta(hours=10 * (i + 1)), NOW - timedelta(hours=10 * (i + 1), seconds=-5))
             for i in range(bases)}
    return ArchiveFacts(lineage="pgdata", running=running, status_text=json.dumps(body), infos=infos)


def test_a_healthy_archive_has_its_window() -> None:
    status = archiving.read_status(_facts(), BackupSettings(continuous=True), NOW)
    assert (status.health, status.reason) == ("ok", "archiving")
    assert status.window == archiving.Window(NOW - timedelta(hours=20, seconds=-5), NOW)
    assert status.last_base is not None and status.last_base.name == "b0" and status.size_bytes == 1048576
    assert status.to_dict()["earliest"] == "2026-12-07T18:00:05.000000Z"


@pytest.mark.parametrize(("facts", "health", "reason"), [
    (_facts(running=False), "failed", "the archiver container is not running"),
    (ArchiveFacts("pgdata", True, None), "failed", "the archiver has written no status yet"),
    (_facts(error="pg_receivewal stopped: connection refused"), "failed", "reports: pg_receivewal stopped"),
    (_facts(streaming=False), "failed", "not streaming WAL"),
    (_facts(updated=NOW - timedelta(seconds=60)), "stale", "status is 60 s old"),
    (_facts(base_error="could not connect"), "failed", "the last base backup failed: could not connect"),
    (_facts(wal_gap="after 000000010000000000000004"), "failed", "a WAL segment is missing from the archive (after"),
    (_facts(bases=0), "failed", "no complete base backup yet"),
    (_facts(lag="75"), "stale", "lags 75 s behind the database (max_lag 1m)"),
    (_facts(latest=None), "stale", "has not yet reached the newest base backup's end"),
])
def test_never_a_false_ok(facts: ArchiveFacts, health: str, reason: str) -> None:
    status = archiving.read_status(facts, BackupSettings(continuous=True), NOW)
    assert status.health == health and reason in status.reason


def test_an_incomplete_base_is_not_counted() -> None:
    facts = _facts(bases=1)
    broken = ArchiveFacts("pgdata", True, facts.status_text, {**facts.infos, "b9": "start_time=2026-12-08T13:00:00Z\n"})
    assert [b.name for b in archiving.read_status(broken, BackupSettings(), NOW).bases] == ["b0"]


# --- planning a restore ---------------------------------------------------------------------------------------
def _base(name: str, end: datetime) -> BaseBackup:
    return BaseBackup(name=name, start=end - timedelta(seconds=5), end=end, start_lsn="", end_lsn="",
                      start_wal=f"0000000100000000000000{name[-2:]}", timeline=1)


def test_refusal_names_the_window_and_the_base_is_the_newest_before_the_target() -> None:
    status = archiving.read_status(_facts(), BackupSettings(continuous=True), NOW)
    early, late = NOW - timedelta(days=2), NOW + timedelta(minutes=1)
    assert "before the recoverable window 2026-12-07T18:00:05.000000Z .. 2026-12-08T14:00:00.000000Z" in str(
        archiving.refusal(early, status))
    assert "is after the recoverable window" in str(archiving.refusal(late, status))
    assert archiving.refusal(NOW - timedelta(hours=5), status) is None and archiving.refusal(None, status) is None
    assert "no recoverable window yet" in str(archiving.refusal(None, archiving.read_status(_facts(bases=0),
                                                                                          BackupSettings(), NOW)))
    bases = [_base("b01", NOW - timedelta(hours=30)), _base("b02", NOW - timedelta(hours=6)),
             _base("b03", NOW - timedelta(hours=1))]
    assert archiving.base_for(NOW - timedelta(hours=2), bases) == bases[1]
    assert archiving.base_for(NOW - timedelta(hours=6), bases) == bases[1]  # ending at the target is enough
    assert archiving.base_for(None, bases) == bases[2]
    assert archiving.base_for(NOW - timedelta(days=3), bases) is None


def test_retention_keeps_the_window_and_the_newest_base_before_it() -> None:
    bases = [_base(f"b{i:02d}", NOW - timedelta(days=d)) for i, d in enumerate((10, 8, 6, 3, 1))]
    assert [b.name for b in archiving.retained(bases, 7 * 86400, NOW)] == ["b01", "b02", "b03", "b04"]
    assert [b.name for b in archiving.retained(bases, 86400 / 2, NOW)] == ["b04"]  # all old: the newest stays
    assert [b.name for b in archiving.retained(bases, 30 * 86400, NOW)] == [b.name for b in bases]


def test_the_archiver_scripts_retention_agrees(tmp_path: Path, userland: Userland) -> None:
    """The archiver's own `retention` function (sh), on a fake repository, with pg_archivecleanup stubbed: it keeps
    what `retained` keeps, and cleans WAL up to the oldest kept base's start WAL."""
    now = datetime.now(UTC)
    repo = tmp_path / "repo"
    days = (10, 8, 6, 3, 1)
    for i, d in enumerate(days):
        base = repo / "base" / f"2026010{i}T000000Z"
        base.mkdir(parents=True)
        end = now - timedelta(days=d)
        (base / "backup_info").write_text(_info(end - timedelta(seconds=5), end, wal=f"0000000100000000000000{i:02d}"))
    (repo / "wal").mkdir()
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "pg_archivecleanup").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/cleaned\n")
    (stub / "pg_archivecleanup").chmod(0o755)
    script = ARCHIVER_SCRIPT.read_text()
    functions = "\n".join(script[script.index(f"{name}() {{"):].split("\n}\n", 1)[0] + "\n}"
                          for name in ("info", "retention"))
    userland.run(f"{functions}\nD={repo}\nRETENTION={7 * 86400}\nretention", stub=stub)
    expected = archiving.retained([_base(f"b{i:02d}", now - timedelta(days=d)) for i, d in enumerate(days)],
                                  7 * 86400, now)
    assert sorted(p.name for p in (repo / "base").iterdir()) == [f"2026010{int(b.name[1:])}T000000Z" for b in expected]
    assert (tmp_path / "cleaned").read_text().split() == [str(repo / "wal"), "000000010000000000000001"]


# --- rendering and roles --------------------------------------------------------------------------------------
def _render(root: Path, project: str, backend: str) -> dict:  # type: ignore[type-arg]
    write_env(root, "dev", ENV)
    config = load_env("dev", root, environ={})
    context = build_context(config, config.project(project), backend=backend,
                            ports=Ports(api=20001, db=20000) if backend == "local" else None)
    return yaml.safe_load(render_stack(config.template_path, context, SECRETS).text)  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", ["local", "coolify"])
def test_the_archiver_runs_in_the_stack_on_the_db_image(project_root: Path, backend: str) -> None:
    doc = _render(project_root, "shop", backend)
    archiver, db = doc["services"]["archiver"], doc["services"]["db"]
    assert archiver["image"] == db["image"] == "postgres:17"
    assert "pgsocket:/var/run/postgresql" in db["volumes"] and "pgsocket:/var/run/postgresql" in archiver["volumes"]
    assert "pgarchive:/repo" in archiver["volumes"] and "pgarchive:/repo" not in db["volumes"]
    assert archiver["environment"]["PGUSER"] == ARCHIVER and archiver["environment"]["ARCHIVE_DIR"] == "/repo/pgdata"
    assert archiver["environment"]["BASE_EVERY"] == "86400" and archiver["environment"]["RETENTION"] == "604800"
    assert "$$ARCHIVE_DIR" in archiver["environment"]["ARCHIVER_SCRIPT"]  # escaped for compose: no interpolation
    assert "max_slot_wal_keep_size=1024MB" in db["command"]
    assert {"pgdata", "pgsocket", "pgarchive"} <= set(doc["volumes"])
    if backend == "local":
        assert doc["volumes"]["pgarchive"]["labels"]["io.provision.project"] == "shop"


def test_no_archiver_without_continuous(project_root: Path) -> None:
    doc = _render(project_root, "blog", "local")
    assert "archiver" not in doc["services"] and set(doc["volumes"]) == {"pgdata"}
    assert "max_slot_wal_keep_size" not in json.dumps(doc)


def test_the_archiver_role_can_replicate_and_nothing_else() -> None:
    with_archiver = Roles(owner="app", archiver=ARCHIVER)
    sql = ensure_sql(with_archiver, "app", SECRETS)
    assert (f"ALTER ROLE \"{ARCHIVER}\" NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT LOGIN REPLICATION "
            f"PASSWORD NULL;") in sql
    without = ensure_sql(Roles(owner="app"), "app", SECRETS)
    assert "REPLICATION PASSWORD NULL" not in without  # archiving off: no role made, and its slot dropped
    assert f"pg_drop_replication_slot(slot_name)) AS dropped FROM pg_replication_slots WHERE slot_name = '{ARCHIVER}'" \
        in without
    # a stack without archiving keeps its digest (no roles run again on upgrade); switching it on changes it
    assert digest(Roles(owner="app"), "app", SECRETS, "pgdata") != digest(with_archiver, "app", SECRETS, "pgdata")


# --- the verbs, through the engine, on a backend that keeps its archive in memory ------------------------------
@dataclass
class ArchiveBackend(DataBackend):
    """A DataBackend with an archive: `past` is the rows a restore brings back; every base ended an hour ago and the
    archive reaches now."""

    past: dict[str, int] = field(default_factory=dict)
    requests: list[archiving.RestoreRequest] = field(default_factory=list)

    def archive_facts(self, target: Target, observed: Observed, lineage: str) -> ArchiveFacts:
        now = datetime.now(UTC)
        status = {"updated": archiving.iso(now), "streaming": True, "latest_recoverable": archiving.iso(now),
                  "lag_seconds": "0"}
        return ArchiveFacts(lineage, True, json.dumps(status),
                            {"b1": _info(now - timedelta(hours=1, seconds=5), now - timedelta(hours=1))})

    def restore_archive(self, target: Target, volume_key: str, request: archiving.RestoreRequest, *,
                        into: Target | None = None) -> archiving.Restored:
        project = (into or target).project
        assert volume_key not in self.volumes.get(project, {})
        self.requests.append(request)
        self.volumes.setdefault(project, {})[volume_key] = {"major": 17, "rows": dict(self.past)}
        return archiving.Restored(volume=f"{project}_{volume_key}", reached="target", row_counts=self.past)


ARCHIVED = """
images: {db: "postgres:17", api: "postgrest/postgrest:v12.2.3"}
projects: [{name: shop}]
backup: {continuous: true}
health: {timeout: 5}
"""


def _provisioner(root: Path, state: Path, backend: DataBackend) -> Provisioner:
    write_env(root, "dev", ARCHIVED)
    return Provisioner(load_env("dev", root, environ={}), backend, StateStore(state), runner=FakeDatabase(backend),
                       sleep=lambda _: None)


def test_restore_to_time_switches_to_a_new_volume_and_back(project_root: Path, tmp_path: Path) -> None:
    backend = ArchiveBackend(past={"public.items": 1})
    provisioner = _provisioner(project_root, tmp_path / "state", backend)
    provisioner.provision("shop")
    backend.database("shop")["rows"] = {"public.items": 3}
    outside = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    with pytest.raises(OutsideWindow, match="before the recoverable window .* nothing was changed") as refused:
        provisioner.archive.restore("shop", outside, yes=True)
    assert refused.value.exit_code == 2 and backend.requests == [] and list(backend.volumes["shop"]) == ["pgdata"]
    with pytest.raises(ConfirmationRequired):
        provisioner.archive.restore("shop", "-10m")
    done = provisioner.archive.restore("shop", "-10m", yes=True)
    new_key = backend.mounted["shop"]
    assert new_key.startswith("pgdata_pitr_") and backend.database("shop")["rows"] == {"public.items": 1}
    assert backend.requests[0].lineage == "pgdata" and backend.requests[0].base == "b1"
    assert "COMMENT ON DATABASE \"app\" IS 'provision volume=" + new_key in backend.requests[0].mark_sql
    assert done.details["kept_volume"] == "shop_pgdata" and "pgdata" in backend.volumes["shop"]
    with pytest.raises(ProjectConflict, match="before its restore --to-time .* --finalize --yes"):
        provisioner.archive.restore("shop", "latest", yes=True)  # one kept volume at a time
    provisioner.archive.rollback("shop", yes=True)
    assert backend.mounted["shop"] == "pgdata" and backend.database("shop")["rows"] == {"public.items": 3}
    assert new_key not in backend.volumes["shop"]
    provisioner.archive.restore("shop", "latest", yes=True)
    assert backend.requests[-1].target is None
    provisioner.archive.finalize("shop", yes=True)
    assert "pgdata" not in backend.volumes["shop"] and provisioner.record("shop").kept_data == {}  # type: ignore[union-attr]


def test_clone_at_makes_a_new_project_from_the_past_and_only_reads_the_source(project_root: Path,
                                                                               tmp_path: Path) -> None:
    backend = ArchiveBackend(past={"public.items": 1})
    provisioner = _provisioner(project_root, tmp_path / "state", backend)
    provisioner.provision("shop")
    backend.database("shop")["rows"] = {"public.items": 3}
    made = provisioner.archive.clone("shop", "-5m", "shop-copy", lambda name: provisioner.provision(name, create=True),
                                     lambda name: None)
    assert made.action == "clone --at" and made.details["row_counts"] == {"public.items": 1}
    assert backend.database("shop-copy")["rows"] == {"public.items": 1}
    assert backend.database("shop")["rows"] == {"public.items": 3} and backend.mounted["shop"] == "pgdata"
    assert "provision volume=pgdata'" in backend.requests[0].mark_sql
    with pytest.raises(OutsideWindow):
        provisioner.archive.clone("shop", "-3d", "shop-old", lambda name: provisioner.provision(name, create=True),
                                  lambda name: None)
    assert "shop-old" not in backend.volumes


def test_a_backend_without_archives_says_so(project_root: Path, tmp_path: Path) -> None:
    provisioner = _provisioner(project_root, tmp_path / "state", DataBackend())
    provisioner.provision("shop")
    with pytest.raises(NotSupported, match="cannot read 'shop''s continuous archive"):
        provisioner.archive.restore("shop", "latest", yes=True)
    with pytest.raises(NotSupported, match="cannot read 'shop''s continuous archive"):
        provisioner.archive.listing()


@pytest.mark.parametrize(("files", "gap"), [
    (["000000010000000000000001", "000000010000000000000002", "000000010000000000000003",
      "0000000100000000000000FF", "000000010000000100000000", "000000010000000100000001.partial"], "after "
     "000000010000000000000003"),
    (["000000010000000000000002", "000000010000000000000003", "000000010000000000000004.partial"], ""),
    (["000000010000000000000002", "0000000100000000000000FF", "000000010000000100000000"], "after 000000010000000000000002"),
    (["0000000100000000000000FE", "0000000100000000000000FF", "000000010000000100000000",
      "00000002.history"], ""),  # across a "log id": FF is followed by 1/00
    (["000000010000000000000003"], "before 000000010000000000000003"),
])
def test_the_archivers_wal_check_finds_a_missing_segment(tmp_path: Path, files: list[str], gap: str,
                                                        userland: Userland) -> None:
    repo = tmp_path / "repo"
    (repo / "wal").mkdir(parents=True)
    first = "0000000100000000000000FE" if files[0].endswith("FE") else "000000010000000000000002"
    (repo / "base" / "20260101T000000Z").mkdir(parents=True)
    (repo / "base" / "20260101T000000Z" / "backup_info").write_text(_info(NOW, NOW, wal=first))
    for name in files:
        (repo / "wal" / name).write_text("")
    script = ARCHIVER_SCRIPT.read_text()
    functions = "\n".join(script[script.index(f"{name}() {{"):].split("\n}\n", 1)[0] + "\n}"
                          for name in ("info", "check_wal"))
    found = userland.run(f"{functions}\nD={repo}\ncheck_wal\nprintf '%s' \"$wal_gap\"").stdout
    assert found == gap


def _slot_facts(**changes: object) -> ArchiveFacts:
    status = {"updated": "2026-12-08T13:59:58Z", "streaming": True, "latest_recoverable": "2026-12-08T13:59:58Z",
              "lag_bytes": "0", "lag_seconds": "0", "error": ""}
    info = "start_time=2026-12-08T10:00:00Z\nend_time=2026-12-08T10:01:00Z\nstart_wal=000000010000000000000002\n"
    facts = ArchiveFacts(lineage="pgdata", running=True, status_text=json.dumps(status), infos={"b1": info})
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def test_a_slot_holding_half_of_its_limit_turns_a_healthy_archive_stale_before_it_is_dropped() -> None:
    settings = BackupSettings(continuous=True, max_slot_wal_keep_size=1024**3)
    ok = archiving.read_status(_slot_facts(), settings, NOW)
    assert ok.health == "ok" and ok.slot_held_bytes == 0
    lagging = json.loads(_slot_facts().status_text or "{}") | {"lag_bytes": str(600 * 1024**2)}
    held = archiving.read_status(_slot_facts(status_text=json.dumps(lagging)), settings, NOW)
    assert held.health == "stale" and held.slot_held_bytes == 600 * 1024**2
    assert "holds 600 MiB of WAL on the db's disk, 424 MiB before max_slot_wal_keep_size (1024 MiB) drops it" in held.reason


def test_a_stopped_archiver_says_what_its_slot_holds_and_a_lost_slot_says_so() -> None:
    settings = BackupSettings(continuous=True)
    down = archiving.read_status(_slot_facts(running=False, slot_status="reserved", slot_held_bytes=48 * 1024**2),
                                 settings, NOW)
    assert down.health == "failed" and down.reason.startswith(archiving.NOT_RUNNING)
    assert "its replication slot holds 48 MiB of WAL" in down.reason and down.to_dict()["slot_held_bytes"] == 48 * 1024**2
    lost = archiving.read_status(_slot_facts(running=False, slot_status="lost"), settings, NOW)
    assert lost.health == "failed" and "its replication slot was lost" in lost.reason


@pytest.mark.parametrize(("stub", "error"), [
    ("echo 'pg_basebackup: error: could not connect to server' >&2; exit 1", "pg_basebackup: error: could not connect"),
    ("kill -9 $$", "pg_basebackup exited with status 137"),  # killed midway: nothing said, its status is the reason
])
def test_a_base_backup_that_dies_midway_leaves_its_reason_and_no_base(tmp_path: Path, stub: str, error: str,
                                                                     userland: Userland) -> None:
    repo = tmp_path / "repo"
    (repo / "base").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pg_basebackup").write_text(f"#!/bin/sh\nmkdir -p \"$2\"; echo partial > \"$2/base.tar.gz\"\n{stub}\n")
    (bin_dir / "pg_basebackup").chmod(0o755)
    script = ARCHIVER_SCRIPT.read_text()
    functions = script[script.index("take_base() {"):].split("\n}\n", 1)[0] + "\n}"
    userland.run(f"{functions}\nD={repo}\ntake_base; true", stub=bin_dir)
    assert (repo / ".base_error").read_text().startswith(f"base_error={error}")
    assert list((repo / "base").iterdir()) == []  # the half-made base is gone: never offered to a restore


def _verify_round(userland: Userland, tmp_path: Path, files: list[str], verified: str = "",
                  fails: bool = False) -> tuple[str, str, str]:
    """One round of the archiver's verify_wal on a fake repository, pg_waldump stubbed: the range it was asked to
    read (or nothing), the position it then holds, and what it reports damaged."""
    repo = tmp_path / "repo"
    (repo / "wal").mkdir(parents=True, exist_ok=True)
    (repo / "base" / "20260101T000000Z").mkdir(parents=True, exist_ok=True)
    (repo / "base" / "20260101T000000Z" / "backup_info").write_text(_info(NOW, NOW, wal="000000010000000000000002"))
    for name in files:
        (repo / "wal" / name).write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    failing = "echo 'pg_waldump: error: error in WAL record at 0/3000060: invalid record length' >&2; exit 1"
    (bin_dir / "pg_waldump").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/asked\n{failing if fails else ''}\n")
    (bin_dir / "pg_waldump").chmod(0o755)
    (tmp_path / "asked").unlink(missing_ok=True)
    script = ARCHIVER_SCRIPT.read_text()
    functions = "\n".join(script[script.index(f"{name}() {{"):].split("\n}\n", 1)[0] + "\n}"
                          for name in ("info", "verify_wal"))
    out = userland.run(f"{functions}\nD={repo}\nverified={verified}\nepoch=$(date +%s)\nverified_at=$epoch\n"
                       f"verify_wal\nprintf '%s|%s' \"$verified\" \"$wal_bad\"", stub=bin_dir).stdout
    asked = (tmp_path / "asked").read_text().strip() if (tmp_path / "asked").exists() else ""
    position, bad = out.split("|")
    return asked, position, bad


def test_the_archiver_reads_each_finished_segment_through_once_but_the_newest(tmp_path: Path,
                                                                               userland: Userland) -> None:
    files = ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004",
             "000000010000000000000005.partial"]
    asked, position, bad = _verify_round(userland, tmp_path, files)
    # from the oldest base's start WAL up to (not into) the newest finished segment, which waits for the next round
    assert asked == f"-q -p {tmp_path}/repo/wal -t 1 -s 0/2000000 -e 0/4000000"
    assert (position, bad) == ("000000010000000000000004", "")
    assert _verify_round(userland, tmp_path, [], verified=position)[0] == ""  # nothing new finished: nothing read again
    asked, position, _ = _verify_round(userland, tmp_path, ["000000010000000000000005", "000000010000000100000000"],
                                       verified=position)
    assert asked.endswith("-s 0/4000000 -e 0/44000000") and position == "000000010000000000000044"  # 64 a round
    asked, position, _ = _verify_round(userland, tmp_path, ["000000010000000100000001"], verified="0000000100000000000000FE")
    assert asked.endswith("-s 0/FE000000 -e 1/1000000") and position == "000000010000000100000001"  # across a log id


def test_a_damaged_segment_is_reported_and_read_again_until_it_reads(tmp_path: Path, userland: Userland) -> None:
    files = ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004"]
    asked, position, bad = _verify_round(userland, tmp_path, files, fails=True)
    assert bad == "error in WAL record at 0/3000060: invalid record length" and position == ""
    assert _verify_round(userland, tmp_path, [], fails=True)[0].endswith("-s 0/2000000 -e 0/4000000")


def test_an_idle_round_of_the_wal_read_through_starts_no_process(tmp_path: Path, userland: Userland) -> None:
    """Nothing new in the WAL directory since the last round: verify_wal returns at once on shell builtins alone
    (with no tool on PATH at all), so that an idle archiver costs no processes every 30 s."""
    files = ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004"]
    _, position, _ = _verify_round(userland, tmp_path, files)
    mark = tmp_path / "repo" / ".verify_mark"
    later = (tmp_path / "repo" / "wal").stat().st_mtime + 5
    os.utime(mark, (later, later))
    script = ARCHIVER_SCRIPT.read_text()
    function = script[script.index("verify_wal() {"):].split("\n}\n", 1)[0] + "\n}"
    found = userland.run(f"{function}\nD={tmp_path / 'repo'}\nverified={position}\nepoch=100\nverified_at=90\n"
                         "verify_wal; echo rc=$?", path=str(tmp_path / "nothing"))
    assert (found.stdout, found.stderr) == ("rc=0\n", "")
