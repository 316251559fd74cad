"""Point-in-time recovery on Coolify, through the emulator's docker mode (the pushed stack runs on the local engine):
the archiver reports its window through a one-off task, restore --to-time restores in the stack (a one-shot restore
service the db depends on) into a new volume, and --rollback returns to the old one, kept as it was; verify then
drills in the archiver, beside the db, which it never restarts."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from provision.core.archiving import POLL_SECONDS
from tests.archives import archive, archive_when
from tests.conftest import sql
from tests.coolify.conftest import coolify_env, free_port, make_sandbox
from tests.coolify_emulator import CoolifyEmulator
from tests.sandbox import Sandbox

pytestmark = pytest.mark.docker

ARCHIVING = "backup:\n  continuous: true\n  base_every: 1h\n  retention: 1d\n  max_lag: 60s\n"


def _when(box: Sandbox, ready: Any, timeout: float = 90) -> dict[str, Any]:
    """The archive's status once `ready(status)` holds, read every POLL_SECONDS (the archiver writes it as often;
    a read, its CLI run included, costs requests of the 200 a minute Coolify allows a user)."""
    return archive_when(box, ready, timeout, interval=POLL_SECONDS, read_timeout=120)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _volumes(uuid: str) -> set[str]:
    listed = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"name={uuid}_"], capture_output=True,
                            text=True, timeout=60, check=True).stdout.split()
    return {name for name in listed if name.startswith(f"{uuid}_pgdata")}


def test_restore_to_time_through_the_api_and_back(tmp_path: Path, docker_emulator: CoolifyEmulator,
                                                  test_images: Mapping[str, str]) -> None:
    emu = docker_emulator
    box = make_sandbox(tmp_path, emu)
    port = free_port()
    box.write_env_text(coolify_env(dict(test_images), timeout=120,
                                   extra=f"variables:\n  db_public_port: {port}\n{ARCHIVING}"))
    made = box.cli("provision", "--json", "--show-secrets", timeout=300).json()["projects"][0]
    db_url = made["db_url"]
    uuid = next(s["uuid"] for s in emu.find_services() if "shop" in s["name"])
    _when(box, lambda s: s["health"] == "ok")
    sql(db_url, "create table marks (id serial primary key, name text)")
    sql(db_url, "insert into marks (name) values ('A')")
    time.sleep(1)
    moment = datetime.now(UTC)
    time.sleep(1)
    sql(db_url, "insert into marks (name) values ('B')")
    status = _when(box, lambda s: s["latest"] and _moment(s["latest"]) > moment + timedelta(seconds=1))
    assert status["lineage"] == "pgdata" and _moment(status["earliest"]) <= moment and status["bases"] >= 1
    # every task command fit Coolify's column; the reads ran in the archiver and were deleted again
    tasks = [r for r in emu.requests if r.method == "POST" and r.path.endswith("/scheduled-tasks")]
    assert tasks and all(len(r.body["command"]) <= 255 and r.body["container"] == "archiver"
                         for r in tasks if "-backups" in r.body["name"])
    assert emu.count("DELETE", r".*/scheduled-tasks/[^/]+") == len(tasks)

    emu.requests.clear()
    done = box.cli("restore", "--project=shop", f"--to-time={_iso(moment)}", "--yes", "--json", timeout=400).json()
    assert done["details"]["reached"] == "target" and done["details"]["row_counts"]["public.marks"] == 1
    assert [r[0] for r in sql(db_url, "select name from marks order by id")] == ["A"]  # A there, B not
    new_volume, kept = done["details"]["volume"], done["details"]["kept_volume"]
    assert kept == f"{uuid}_pgdata" and new_volume.startswith(f"{uuid}_pgdata-pitr-")
    assert _volumes(uuid) == {kept, new_volume}
    # the stack was pushed twice: with the one-shot restore service, then without it
    pushed = [r.body for r in emu.requests if r.method == "PATCH" and r.path == f"/services/{uuid}"]
    assert len(pushed) == 2
    compose = emu.service(uuid)["docker_compose_raw"]
    assert "restore:" not in compose and "pgdata_pitr_" in compose
    assert box.cli("status", "--project=shop", "--json").json()["projects"][0]["status"] == "running"

    # the restored data archives as a lineage of its own; --rollback returns to the data before, as it was
    assert _when(box, lambda s: s["lineage"].startswith("pgdata_pitr_"))["lineage"] == new_volume.replace(
        f"{uuid}_", "").replace("-", "_")
    box.cli("restore", "--project=shop", "--rollback", "--yes", timeout=300)
    assert [r[0] for r in sql(db_url, "select name from marks order by id")] == ["A", "B"]
    assert archive(box, timeout=120)["lineage"] == "pgdata"
    # Coolify deletes a service's volumes only with the service: the restored one stays, unused
    assert _volumes(uuid) == {kept, new_volume}

    # verify drills in the archiver: the archive restored up to the marker's commit into a scratch directory of the
    # repository, checked there and removed, while the db keeps running untouched (no push, no restart)
    sql(db_url, "create table items (id int primary key, name text)")
    sql(db_url, "insert into items select i, 'item ' || i from generate_series(1, 300) i")
    before = _started(f"db-{uuid}")
    # what a drill whose archiver was restarted midway left (its process gone): the next drill removes it
    subprocess.run(["docker", "exec", f"archiver-{uuid}", "sh", "-c", "mkdir -p /repo/.provision/drill-0dead/data && "
                    "echo 999999 >/repo/.provision/drill-0dead/pid"], timeout=60, check=True)
    emu.requests.clear()
    drilled = box.cli("verify", "--project=shop", "--json", timeout=600).json()["drills"][0]["details"]
    assert drilled["result"] == "ok", drilled
    assert drilled["marker"] == "found" and drilled["sampled_tables"] >= 1 and "xid" in drilled["to"]
    assert drilled["tables"] >= 3 and drilled["indexes_checked"] >= 2 and drilled["rows"] >= 302
    assert _started(f"db-{uuid}") == before  # the same container, never restarted
    assert not [f"{r.method} {r.path}" for r in emu.requests if "/scheduled-tasks" not in r.path and (
        r.method in ("PATCH", "PUT") or r.path.endswith(("/restart", "/start", "/stop")))]
    left = subprocess.run(["docker", "exec", f"archiver-{uuid}", "ls", "-A", "/repo/.provision"],
                          capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert not [name for name in left if name.startswith("drill-")], left  # scratch and report both gone
    assert archive(box, timeout=120)["last_drill"]["result"] == "ok"


def _started(container: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", container], capture_output=True,
                          text=True, timeout=60, check=True).stdout.strip()
