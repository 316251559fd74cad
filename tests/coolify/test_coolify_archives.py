"""Continuous archiving on Coolify, request by request, against the pure-mode emulator: `backups` reads the archive
with one short scheduled task in the archiver container (its command within the 255 characters Coolify stores, the
task deleted again), and restore --to-time pushes the stack with the one-shot restore service, then without it; a
failed restore returns the project to its old volume and says recovery's log. The archiver's "container" here is a
shell whose /repo is a directory of the test (the script it runs is the one the pushed compose gives it)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from provision.backends.coolify.archives import (
    drill_command,
    drill_report_command,
    read_command,
    report_command,
)
from provision.backends.coolify.tasks import TASK_COMMAND_MAX
from provision.core import archive_scripts, archiving
from provision.core.archive_scripts import DrillRequest
from provision.core.errors import ProvisionError
from tests.coolify.conftest import TOKEN, coolify_env, make_sandbox, stack_changes
from tests.coolify_emulator import REALISTIC, CoolifyEmulator
from tests.coolify_emulator.state import Service
from tests.emulator_selftest.test_request_shapes import FakePsql

ARCHIVING = "backup:\n  continuous: true\n  base_every: 1h\n  retention: 1d\n"
NOW = datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Archiver:
    """The archiver container of the pure-mode emulator: runs a task's command in sh with the ARCHIVE_READ the
    service's compose gives the archiver, /repo being `repo`; a restore service in the compose "ran" at the last
    start with exit code `restore_rc` (its report written as RESTORE_START writes it)."""

    def __init__(self, emu: CoolifyEmulator, repo: Path) -> None:
        self.emu, self.repo, self.restore_rc = emu, repo, 0
        self.psql = FakePsql()
        self.commands: list[tuple[str, str]] = []

    def __call__(self, svc: Service, name: str, command: str) -> tuple[int, str]:
        self.commands.append((name, command))
        if name != "archiver":
            return self.psql(svc, name, command)
        services = self.emu.core.generated_compose(svc)["services"]
        environment = services["archiver"]["environment"]
        restore = services.get("restore")
        if restore is not None:  # what the one-shot service left in the repository
            key = restore["environment"]["RESTORE_KEY"]
            out = self.repo / ".provision"
            out.mkdir(exist_ok=True)
            if not (out / f"restore-{key}.rc").exists():
                log = ("REACHED target\nCOUNT public.marks 1\nLOG recovery stopping before commit" if not self.restore_rc
                       else "FATAL:  could not locate required checkpoint record")
                (out / f"restore-{key}.log").write_text(log + "\n")
                (out / f"restore-{key}.rc").write_text(f"{self.restore_rc}\n")
        done = subprocess.run(["sh", "-c", command.replace("/repo", str(self.repo))], capture_output=True, text=True,
                              timeout=30, check=False,
                              env={"PATH": "/usr/bin:/bin",
                                   "ARCHIVE_READ": str(environment["ARCHIVE_READ"]).replace("$$", "$")})
        return done.returncode, done.stdout + done.stderr


@pytest.fixture
def emu() -> Iterator[CoolifyEmulator]:
    with CoolifyEmulator(token=TOKEN, **REALISTIC) as emulator:
        yield emulator


def _archive(repo: Path, lineage: str = "pgdata") -> None:
    """An archive whose window is the last hour (a base that ended 1 h ago, the archiver current)."""
    base = repo / lineage / "base" / "20260101T000000Z"
    base.mkdir(parents=True)
    (base / "backup_info").write_text(f"start_time={_iso(NOW - timedelta(hours=1, minutes=1))}\n"
                                      f"end_time={_iso(NOW - timedelta(hours=1))}\nstart_wal=000000010000000000000002\n")
    (repo / lineage / "status.json").write_text(json.dumps({
        "updated": _iso(datetime.now(UTC) + timedelta(minutes=5)), "latest_recoverable": _iso(NOW),
        "streaming": True, "lag_seconds": 0, "lag_bytes": 0, "size_bytes": 1024}))


def _setup(tmp_path: Path, emu: CoolifyEmulator, kind: type[Archiver] = Archiver) -> tuple[Any, Archiver, str]:
    """A provisioned archiving project whose tasks run in `kind` (over tmp_path/repo), and its service's uuid."""
    repo = tmp_path / "repo"
    repo.mkdir()
    archiver = kind(emu, repo)
    emu.core.task_runner = archiver
    emu.rate_limit = 100_000
    box = make_sandbox(tmp_path, emu)
    box.write_env_text(coolify_env(extra=ARCHIVING))
    box.cli("provision")
    _archive(repo)
    uuid = next(s["uuid"] for s in emu.find_services() if "shop" in s["name"])
    return box, archiver, uuid


def _refused(emu: CoolifyEmulator) -> list[str]:
    return [f"{r.method} {r.path} {r.status} {r.answer}" for r in emu.requests if r.status >= 400]


def test_backups_reads_the_archive_with_one_short_task_in_the_archiver(tmp_path: Path, emu: CoolifyEmulator) -> None:
    box, archiver, uuid = _setup(tmp_path, emu)
    compose = emu.core.generated_compose(emu.core.store.services[uuid])["services"]
    assert compose["archiver"]["environment"]["ARCHIVE_READ"].replace("$$", "$") == archive_scripts.READ_SCRIPT
    emu.requests.clear()
    found = box.cli("backups", "--project=shop", "--json").json()["archives"][0]
    assert found["health"] == "ok" and found["lineage"] == "pgdata" and found["bases"] == 1
    assert found["earliest"].startswith(_iso(NOW - timedelta(hours=1))[:19]) and found["latest"][:19] == _iso(NOW)[:19]
    made = [r for r in emu.requests if r.method == "POST" and r.path.endswith("/scheduled-tasks")]
    assert [(r.body["container"], r.body["command"], r.body["enabled"]) for r in made] == [
        ("archiver", read_command("pgdata"), False)]
    assert len(read_command("pgdata")) <= TASK_COMMAND_MAX
    assert [f"{r.method} {re.sub(r'scheduled-tasks/[^/]+', 'scheduled-tasks/T', r.path)}" for r in emu.requests
            if "scheduled-tasks" in r.path and r.method != "GET"] == [
        f"POST /services/{uuid}/scheduled-tasks", f"POST /services/{uuid}/scheduled-tasks/T/execute",
        f"DELETE /services/{uuid}/scheduled-tasks/T"]
    assert _refused(emu) == [] and not emu.find_services()[0].get("scheduled_tasks")
    assert box.cli("backups", "--check", "--project=shop", check=False).returncode == 0
    assert box.cli("backups", "--json").json()["archives"][0]["health"] == "ok"  # the env's listing too
    # status's BACKUP column reads it too, also from the env's listing (summary views: the archiver asked again)
    for argv in (("status", "--json"), ("status", "--json", "--project=shop")):
        shown = box.cli(*argv).json()["projects"][0]["details"]["backup"]
        assert shown["health"] == "ok", (argv, shown)

    # what needs a one-off container is refused before anything changes (verify drills in the archiver: below)
    emu.requests.clear()
    refused = box.cli("clone", "--project=shop", "--to=past", "--at=latest", check=False)
    assert refused.returncode != 0 and "one-off container" in refused.output, refused.output
    assert stack_changes(emu) == [] and not (box.state_dir / box.env / "past").exists()

    # an archiver that does not run: failed, said without a task in it (the slot's hold is asked of the db)
    emu.set_service_status(uuid, "exited", app="archiver")
    emu.requests.clear()
    down = box.cli("backups", "--project=shop", "--json").json()["archives"][0]
    assert down["health"] == "failed" and down["reason"].startswith(archiving.NOT_RUNNING)
    assert [r.body["container"] for r in emu.requests if r.method == "POST" and r.path.endswith("/scheduled-tasks")] \
        == ["db"]
    assert box.cli("backups", "--check", "--project=shop", check=False).returncode != 0


def test_restore_pushes_the_one_shot_service_then_drops_it(tmp_path: Path, emu: CoolifyEmulator) -> None:
    box, archiver, uuid = _setup(tmp_path, emu)
    emu.requests.clear()
    target = _iso(NOW - timedelta(minutes=10))
    done = box.cli("restore", "--project=shop", f"--to-time={target}", "--yes", "--json").json()
    key = done["details"]["volume"].removeprefix(f"{uuid}_").replace("-", "_")
    assert key.startswith("pgdata_pitr_") and done["details"]["row_counts"] == {"public.marks": 1}
    assert done["details"]["kept_volume"] == f"{uuid}_pgdata" and done["details"]["reached"] == "target"
    pushed = [archiving_compose(r.body) for r in emu.requests if r.method == "PATCH" and r.path == f"/services/{uuid}"]
    assert len(pushed) == 2
    first, second = pushed
    restore = first["services"]["restore"]
    assert restore["restart"] == "no" and restore["image"] == first["services"]["db"]["image"]
    assert restore["volumes"] == [f"{key}:/var/lib/postgresql/data", "pgarchive:/repo"]
    env = restore["environment"]
    assert (env["RESTORE_KEY"], env["LINEAGE"], env["BASE"]) == (key, "pgdata", "20260101T000000Z")
    assert env["TARGET"] == archiving.pg_time(datetime.fromisoformat(target.replace("Z", "+00:00")))
    assert env["RESTORE_SCRIPT"].replace("$$", "$") == archive_scripts.RESTORE_SCRIPT.read_text(encoding="utf-8")
    assert first["services"]["db"]["depends_on"] == {"restore": {"condition": "service_completed_successfully"}}
    assert f"{key}:/var/lib/postgresql/data" in first["services"]["db"]["volumes"]
    assert "restore" not in second["services"] and "depends_on" not in second["services"]["db"]
    assert f"{key}:/var/lib/postgresql/data" in second["services"]["db"]["volumes"]
    # Coolify leaves a `restart: "no"` service out of the status (parsers.php:2704): the stack read up meanwhile
    assert _refused(emu) == []
    reports = [c for n, c in archiver.commands if c == report_command(key)]
    assert reports and all(len(c) <= TASK_COMMAND_MAX for _, c in archiver.commands)
    record = json.loads((box.state_dir / box.env / "shop" / "state.json").read_text())
    assert record["db_volume"] == key and record["kept_data"]["state"] == "done"
    assert "restore" not in record["kept_data"]

    # --finalize cannot delete a volume through Coolify's API: it says so and forgets it
    final = box.cli("restore", "--project=shop", "--finalize", "--yes", "--json").json()
    assert final["details"]["deleted_volume"] is None and "stays" in final["messages"][0]


def test_a_failed_restore_returns_to_the_old_volume_with_recoverys_log(tmp_path: Path,
                                                                      emu: CoolifyEmulator) -> None:
    box, archiver, uuid = _setup(tmp_path, emu)
    archiver.restore_rc = 5
    before = emu.service(uuid)["docker_compose_raw"]
    failed = box.cli("restore", "--project=shop", "--to-time=-10m", "--yes", check=False)
    assert failed.returncode != 0
    assert "could not locate required checkpoint record" in failed.output and "exit 5" in failed.output
    assert "runs on its data as it was before; nothing was lost" in failed.output
    record = json.loads((box.state_dir / box.env / "shop" / "state.json").read_text())
    assert record.get("db_volume") in (None, "", "pgdata") and not record.get("kept_data")
    after = archiving_compose({"docker_compose_raw": emu.service(uuid)["docker_compose_raw"]})
    assert "restore" not in after["services"] and "pgdata:/var/lib/postgresql/data" in after["services"]["db"]["volumes"]
    assert archiving_compose({"docker_compose_raw": before})["services"]["db"] == after["services"]["db"]


def test_task_commands_fit_and_refuse_odd_names() -> None:
    longest = "pgdata_pitr_" + "20261208t031500z"
    assert len(read_command(longest)) <= TASK_COMMAND_MAX and len(report_command(longest)) <= TASK_COMMAND_MAX
    with pytest.raises(ProvisionError, match="no lineage or volume key"):
        read_command("pgdata;rm -rf /")


def archiving_compose(body: dict[str, Any]) -> dict[str, Any]:
    """The compose a PATCH or a service snapshot carries (base64 in a request, text in a snapshot)."""
    import base64

    import yaml

    raw = str(body["docker_compose_raw"])
    try:
        text = base64.b64decode(raw, validate=True).decode()
    except ValueError:
        text = raw
    return yaml.safe_load(text)  # type: ignore[no-any-return]


# the drill script the pure-mode archiver runs instead of templates/drill.sh (no PostgreSQL here): it keeps its
# arguments and leaves the report the test gives it (FAKE_REPORT, FAKE_RC) where drill.sh leaves its own
_FAKE_DRILL = ('echo "$T $L $B ${X:-} [${G:-}] $W" >"$REPO/.provision/args-$T";'
               'printf "%s\\n" "$FAKE_REPORT" >"$REPO/.provision/drill-$T.log"; echo "$FAKE_RC" >"$REPO/.provision/drill-$T.rc"')


class DrillingArchiver(Archiver):
    """The archiver, with a drill's start run as its command says (in the background, with DRILL_SCRIPT the fake
    above) and the db's psql printing the marker the test chose."""

    def __init__(self, emu: CoolifyEmulator, repo: Path) -> None:
        super().__init__(emu, repo)
        self.report, self.rc = "", 0

    def __call__(self, svc: Service, name: str, command: str) -> tuple[int, str]:
        if name != "archiver" or "DRILL_SCRIPT" not in command:
            return super().__call__(svc, name, command)
        self.commands.append((name, command))
        environment = self.emu.core.generated_compose(svc)["services"]["archiver"]["environment"]
        assert environment["DRILL_SCRIPT"].replace("$$", "$") == archive_scripts.DRILL_SCRIPT.read_text(encoding="utf-8")
        (self.repo / ".provision").mkdir(exist_ok=True)
        done = subprocess.run(["sh", "-c", command.replace("/repo", str(self.repo))], capture_output=True, text=True,
                              timeout=30, check=False,
                              env={"PATH": "/usr/bin:/bin", "ARCHIVE_READ": "x", "DRILL_SCRIPT": _FAKE_DRILL,
                                   "REPO": str(self.repo), "FAKE_REPORT": self.report, "FAKE_RC": str(self.rc)})
        time.sleep(0.2)  # the drill runs in the background: done when the report is read
        return done.returncode, done.stdout + done.stderr


def _drill_report(sample: dict[str, Any], *, found: int = 1, heap: int = 0) -> str:
    lines = ["REACHED target", "COUNT public.items 500", "COUNT provision_drill.marks 1", f"FOUND {found}"]
    lines += [f"SAMPLE {table} {json.dumps(value)}" for table, value in sample.items()]
    return "\n".join([*lines, "AMCHECK 3", f"HEAP {heap}", "LOG recovery stopping after commit of transaction 812"])


def test_verify_drills_in_the_archiver_with_short_tasks_and_never_pushes_the_stack(tmp_path: Path,
                                                                                    emu: CoolifyEmulator) -> None:
    box, made_archiver, _ = _setup(tmp_path, emu, DrillingArchiver)
    assert isinstance(made_archiver, DrillingArchiver)
    archiver, repo = made_archiver, tmp_path / "repo"
    sample = {"public.items": {"rows": 500, "pct": 100, "md5": "0f" * 16}}
    archiver.psql.drill_mark = json.dumps({"at": _iso(NOW - timedelta(minutes=10)), "xid": 812, "sample": sample})
    archiver.report = _drill_report(sample)
    emu.requests.clear()
    done = box.cli("verify", "--project=shop", "--json", timeout=120).json()["drills"][0]
    details = done["details"]
    assert details["result"] == "ok", details
    assert (details["marker"], details["sampled_tables"], details["tables"], details["indexes_checked"]) == (
        "found", 1, 2, 3)
    assert details["throwaway"] is None and "archiver" in details["detail"]
    # nothing pushed, restarted or created but the short tasks, each deleted again, each command within 255
    assert [c for c in stack_changes(emu) if "scheduled-tasks" not in c] == []
    made = [r.body for r in emu.requests if r.method == "POST" and r.path.endswith("/scheduled-tasks")]
    assert made and all(len(b["command"]) <= TASK_COMMAND_MAX for b in made)
    assert emu.count("DELETE", r".*/scheduled-tasks/[^/]+") == len(made)
    drills = [b["command"] for b in made if b["container"] == "archiver" and "DRILL_SCRIPT" in b["command"]]
    assert len(drills) == 1
    token = re.search(r"T=([0-9a-f]{16}) ", drills[0]).group(1)  # type: ignore[union-attr]
    assert (repo / ".provision" / f"args-{token}").read_text().split() == [
        token, "pgdata", "20260101T000000Z", "812", "[]", "600"]
    assert any(b["command"] == drill_report_command(token) for b in made)
    # the longest a start can be: a restored lineage, a target time instead of an xid
    longest = DrillRequest(token=token, lineage="pgdata_pitr_20261208t043500z", base="20261208T043500Z", xid=None,
                           target=archiving.pg_time(NOW), wait=86400)
    assert len(drill_command(longest)) <= TASK_COMMAND_MAX and "G='" in drill_command(longest)
    assert not (repo / ".provision" / f"drill-{token}.log").exists()  # the report is removed as it is read
    assert box.cli("backups", "--project=shop", "--json").json()["archives"][0]["last_drill"]["result"] == "ok"

    # never a false ok: a sample that differs, a marker missing, amcheck's problems, a drill that failed
    for report, rc, said in ((_drill_report({"public.items": {**sample["public.items"], "rows": 499}}), 0,
                              "public.items has 499 rows, 500 were sampled"),
                             (_drill_report(sample, found=0), 0, "is not in the restored database"),
                             (_drill_report(sample, heap=2), 0, "amcheck found corruption"),
                             (_drill_report(sample).replace("HEAP 0", ""), 0, "amcheck reported nothing"),
                             (re.sub(r"COUNT .*\n", "", _drill_report(sample)), 0, "no row counts"),
                             ("FATAL:  could not locate required checkpoint record", 5, "could not locate")):
        archiver.report, archiver.rc = report, rc
        failed = box.cli("verify", "--project=shop", "--json", check=False, timeout=120)
        assert failed.returncode != 0, failed.output
        assert failed.json()["drills"][0]["details"]["result"] == "failed" and said in failed.output, failed.output
        last = box.cli("backups", "--project=shop", "--json").json()["archives"][0]["last_drill"]
        assert last["result"] == "failed", last
