"""Continuous archiving on the real engine with real PostgreSQL 15 and 17 (issue 22's core slice): the archiver in
the stack, `backups` (window, health, --check), and `restore --to-time` into a new volume with --rollback and
--finalize; targets under a concurrent write load land exactly."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from provision.backends.local import archives
from provision.backends.local.compose import ComposeCLI
from provision.backends.local.engine import Engine
from provision.core import archiving
from provision.core.roles import ADMIN
from tests.archives import archive, archive_when
from tests.conftest import Sandbox, sql

PG17 = "provision-test/postgres:17"
ARCHIVING = "backup:\n  continuous: true\n  base_every: 1h\n  retention: 1d\n  max_lag: 60s\n"


def _start(sandbox: Sandbox, db_image: str) -> str:
    sandbox.write_env(["shop"], images={**sandbox.images, "db": db_image}, extra=ARCHIVING)
    sandbox.cli("provision", "--project=shop")
    return str(sandbox.cli("outputs", "--project=shop", "--format=json").json()["db_url"])


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _volumes(sandbox: Sandbox) -> set[str]:
    return set(subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=io.provision.env={sandbox.env}"],
                              capture_output=True, text=True, timeout=60, check=True).stdout.split())


@pytest.mark.parametrize("db_image", ["provision-test/postgres:15", PG17])
def test_restore_to_a_second_brings_that_moment_back_and_keeps_the_old_data(sandbox: Sandbox, db_image: str) -> None:
    db_url = _start(sandbox, db_image)
    archive_when(sandbox, lambda s: s["health"] == "ok")
    sql(db_url, "create table marks (id serial primary key, name text)")
    sql(db_url, "create table keep (id int)")
    sql(db_url, "insert into keep select generate_series(1, 5)")
    sql(db_url, "insert into marks (name) values ('A')")
    time.sleep(1)
    moment = datetime.now(UTC)
    time.sleep(1)
    sql(db_url, "insert into marks (name) values ('B')")
    sql(db_url, "drop table keep")
    status = archive_when(sandbox, lambda s: s["latest"] and _moment(s["latest"]) > moment + timedelta(seconds=1))
    assert status["lineage"] == "pgdata" and status["bases"] >= 1 and status["error"] is None

    # outside the window: refused before anything changes, naming the window
    before = _volumes(sandbox)
    early = _moment(status["earliest"]) - timedelta(hours=1)
    refused = sandbox.cli("restore", "--project=shop", f"--to-time={_iso(early)}", "--yes", check=False)
    assert refused.returncode == 2 and "recoverable window" in refused.output and "nothing was changed" in refused.output
    assert status["earliest"][:19] in refused.output
    assert _volumes(sandbox) == before and sql(db_url, "select count(*) from marks")[0][0] == 2

    done = sandbox.cli("restore", "--project=shop", f"--to-time={_iso(moment)}", "--yes", "--json").json()
    assert done["details"]["reached"] == "target" and done["details"]["row_counts"]["public.keep"] == 5
    assert [r[0] for r in sql(db_url, "select name from marks order by id")] == ["A"]  # A there, B not
    assert sql(db_url, "select count(*) from keep")[0][0] == 5  # the dropped table is back
    kept = done["details"]["kept_volume"]
    assert kept in _volumes(sandbox) and done["details"]["volume"] in _volumes(sandbox)

    # the restored data archives as a lineage of its own; --rollback returns to the data before, as it was
    assert archive(sandbox)["lineage"] == f"pgdata_pitr_{done['details']['volume'].rsplit('_pitr_', 1)[1]}"
    sandbox.cli("restore", "--project=shop", "--rollback", "--yes")
    assert [r[0] for r in sql(db_url, "select name from marks order by id")] == ["A", "B"]
    assert sql(db_url, "select count(*) from pg_tables where tablename = 'keep'")[0][0] == 0
    assert _volumes(sandbox) == before

    if db_image != PG17:
        return
    # again, then --finalize deletes the old volume
    again = sandbox.cli("restore", "--project=shop", f"--to-time={_iso(moment)}", "--yes", "--json").json()
    sandbox.cli("restore", "--project=shop", "--finalize", "--yes")
    assert kept not in _volumes(sandbox) and again["details"]["volume"] in _volumes(sandbox)
    assert [r[0] for r in sql(db_url, "select name from marks order by id")] == ["A"]
    # a new project from the past, the source taking writes meanwhile and never stopped
    sql(db_url, "insert into marks (name) values ('C')")
    copy = sandbox.cli("clone", "--project=shop", "--to=shop-past", f"--at={_iso(moment)}", "--json",
                       check=False)
    assert copy.returncode == 2 and "recoverable window" in copy.output  # the restored lineage starts after it
    archive_when(sandbox, lambda s: s["health"] == "ok")
    now = datetime.now(UTC)
    sql(db_url, "insert into marks (name) values ('D')")
    archive_when(sandbox, lambda s: _moment(s["latest"]) > now)
    sql(db_url, "create table load (id bigserial primary key)")
    started = _started_at(sandbox)
    stop = threading.Event()
    load: list[int] = []

    def write() -> None:  # the source takes writes the whole time the clone runs
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not stop.is_set():
                load.append(conn.execute("insert into load default values returning id").fetchone()[0])  # type: ignore[index]
                time.sleep(0.01)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        copy = sandbox.cli("clone", "--project=shop", "--to=shop-past", f"--at={_iso(now)}", "--json").json()
        during = len(load)
        time.sleep(0.3)
        assert len(load) > during > 0  # still writing after the clone: never stopped
    finally:
        stop.set()
        writer.join(timeout=30)
    assert _started_at(sandbox) == started  # the source's db container was never restarted
    assert copy["details"]["row_counts"]["public.marks"] == 2 and copy["details"]["source"] == "shop"
    past_url = str(sandbox.cli("outputs", "--project=shop-past", "--format=json").json()["db_url"])
    assert [r[0] for r in sql(past_url, "select name from marks order by id")] == ["A", "C"]
    assert [r[0] for r in sql(db_url, "select name from marks order by id")] == ["A", "C", "D"]
    _check_fails_when_the_archiver_stops(sandbox)


def _started_at(sandbox: Sandbox) -> str:
    return subprocess.run(["docker", "inspect", "--format", "{{.State.StartedAt}}", f"{sandbox.compose_name('shop')}-db-1"],
                          capture_output=True, text=True, timeout=60, check=True).stdout.strip()


def _check_fails_when_the_archiver_stops(sandbox: Sandbox) -> None:
    """`backups --check` exits 1 when the archiver's container stops, and says why."""
    archive_when(sandbox, lambda s: s["health"] == "ok")
    assert sandbox.cli("backups", "--project=shop", "--check").returncode == 0
    assert _backup_column(sandbox) == ("ok", "ok")
    subprocess.run(["docker", "stop", "-t", "5", f"{sandbox.compose_name('shop')}-archiver-1"], capture_output=True,
                   timeout=60, check=True)
    failed = sandbox.cli("backups", "--project=shop", "--check", check=False)
    assert failed.returncode == 1 and "failed" in failed.output and "archiver container is not running" in failed.output
    down = archive(sandbox)
    assert down["health"] == "failed" and "its replication slot holds" in down["reason"] and down["slot_held_bytes"] >= 0
    assert _backup_column(sandbox) == ("failed", "failed")
    [shown] = sandbox.cli("status", "--project=shop", "--json").json()["projects"]
    assert "backup failed: the archiver container is not running" in " ".join(shown["messages"])


def _backup_column(sandbox: Sandbox) -> tuple[str, str]:
    """`status`'s backup health of shop: in its JSON, and in the BACKUP column of its table."""
    found = sandbox.cli("status", "--json").json()["projects"]
    health = next(p for p in found if p["project"] == "shop")["details"]["backup"]["health"]
    lines = sandbox.cli("status").output.splitlines()
    header = next(line for line in lines if line.startswith("PROJECT"))
    row = next(line for line in lines if line.startswith("shop "))
    return health, row[header.index("BACKUP"):].split()[0]


def test_random_targets_under_a_write_load_land_exactly(sandbox: Sandbox) -> None:
    """A writer commits one row per transaction, noting the time before and after each, and keeps writing while the
    restores run; 20 random targets in the gaps between two commits must each restore exactly the rows committed
    before it. Each is restored by the product's own one-off restore (the base chosen for the target, the archive
    replayed, promoted, counted) into a volume of its own; one of them also through `restore --to-time` and back."""
    db_url = _start(sandbox, PG17)
    archive_when(sandbox, lambda s: s["health"] == "ok")
    sql(db_url, "create table counter (id bigint primary key)")
    commits: list[tuple[int, datetime, datetime]] = []
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                before = datetime.now(UTC)
                conn.execute("insert into counter values (%s)", (n,))
                commits.append((n, before, datetime.now(UTC)))
                time.sleep(random.uniform(0.01, 0.08))  # noqa: S311 - a test's jitter

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(6)
        written = list(commits)
        rng = random.Random(22)  # noqa: S311
        picks = sorted(rng.sample(range(len(written) - 1), 20))
        targets = [(written[i][0], written[i][2] + (written[i + 1][1] - written[i][2]) / 2) for i in picks]
        archive_when(sandbox, lambda s: _moment(s["latest"]) > targets[-1][1])
        engine = Engine(ComposeCLI())
        repository = f"{sandbox.compose_name('shop')}_{archiving.REPOSITORY_VOLUME}"
        facts = archives.read_archive(engine, PG17, repository, "pgdata", True, label=sandbox.env, owner=None)
        status = archiving.read_status(facts, archiving.BackupSettings(continuous=True), datetime.now(UTC))
        labels = {"io.provision.managed": "true", "io.provision.env": sandbox.env}

        def restore(index: int, moment: datetime) -> int:
            base = archiving.base_for(moment, status.bases)
            assert base is not None
            volume = archives.create_volume(engine, f"{sandbox.compose_name('shop')}-t{index}", "pgdata", labels, None)
            try:
                request = archiving.RestoreRequest(lineage="pgdata", base=base.name, target=moment, image=PG17,
                                                   admin=ADMIN, dbname="app", mark_sql="SELECT 1")
                made = archives.restore(engine, request, repository=repository, volume=volume, label=sandbox.env,
                                        owner=None)
                return made.row_counts["public.counter"]
            finally:
                subprocess.run(["docker", "volume", "rm", volume], capture_output=True, timeout=60, check=True)

        with ThreadPoolExecutor(max_workers=2) as pool:
            found = list(pool.map(lambda it: restore(it[0], it[1][1]), enumerate(targets)))
        assert found == [expected for expected, _ in targets], [_iso(moment) for _, moment in targets]
        # and one through restore --to-time while the writer keeps writing (its connection ends with the switch)
        stop.set()
        writer.join(timeout=30)
        expected, moment = targets[len(targets) // 2]
        archive_when(sandbox, lambda s: s["health"] == "ok" and s["lineage"] == "pgdata")
        sandbox.cli("restore", "--project=shop", f"--to-time={_iso(moment)}", "--yes")
        assert sql(db_url, "select max(id) from counter")[0][0] == expected, f"target {_iso(moment)}"
        sandbox.cli("restore", "--project=shop", "--rollback", "--yes")
        assert sql(db_url, "select max(id) from counter")[0][0] == commits[-1][0]
    finally:
        stop.set()
        writer.join(timeout=30)


def test_a_damaged_wal_segment_and_a_full_repository_are_reported(sandbox: Sandbox) -> None:
    """Never a false ok: a WAL segment damaged in the archive (bytes overwritten) turns the health failed, naming
    pg_waldump's finding, once the archiver reads it through; a repository with no room for the next segments
    (a 160 MiB tmpfs volume filled up) is failed at once, saying so."""
    sandbox.write_env(["shop"], images={**sandbox.images, "db": "provision-test/postgres:15"})
    db_url = sandbox.cli("provision", "--project=shop", "--json", "--show-secrets").json()["projects"][0]["db_url"]
    # the repository volume made beforehand on a small tmpfs, labelled as compose labels its own (the data volume's)
    data = f"{sandbox.compose_name('shop')}_pgdata"
    labels = json.loads(subprocess.run(["docker", "volume", "inspect", "--format", "{{json .Labels}}", data],
                                       capture_output=True, text=True, timeout=60, check=True).stdout)
    labels["com.docker.compose.volume"] = archiving.REPOSITORY_VOLUME
    repository = f"{sandbox.compose_name('shop')}_{archiving.REPOSITORY_VOLUME}"
    subprocess.run(["docker", "volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", "o=size=160m",
                    *[f"--label={k}={v}" for k, v in labels.items()], repository],
                   capture_output=True, timeout=60, check=True)
    sandbox.write_env(["shop"], images={**sandbox.images, "db": "provision-test/postgres:15"}, extra=ARCHIVING)
    sandbox.cli("provision", "--project=shop")
    archive_when(sandbox, lambda s: s["health"] == "ok")
    archiver = f"{sandbox.compose_name('shop')}-archiver-1"

    def in_archiver(script: str) -> str:
        return subprocess.run(["docker", "exec", archiver, "sh", "-c", script], capture_output=True, text=True,
                              timeout=120, check=False).stdout.strip()

    def switch() -> None:  # a write, then the segment being written is finished
        sql(db_url, "create table if not exists t (x int); insert into t values (1)")
        subprocess.run(["docker", "exec", f"{sandbox.compose_name('shop')}-db-1", "sh", "-c",
                        'psql -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "select pg_switch_wal()"'], check=True,
                       capture_output=True, timeout=60)

    # the newest finished segment is never read through until a newer one is finished: damaged before that, the
    # archiver must find it
    def newest() -> str:
        return in_archiver('ls /repo/pgdata/wal | grep -E "^[0-9A-F]{24}$" | sort | tail -n 1')

    before = newest()
    switch()
    deadline = time.monotonic() + 30
    while newest() == before:
        assert time.monotonic() < deadline, "the switched segment never reached the archive"
        time.sleep(0.2)
    in_archiver(f"dd if=/dev/urandom of=/repo/pgdata/wal/{newest()} bs=1 seek=100 count=400 conv=notrunc")
    switch()
    damaged = archive_when(sandbox, lambda s: "damaged" in s["reason"], timeout=60)
    assert damaged["health"] == "failed" and "record" in damaged["reason"]
    assert sandbox.cli("backups", "--project=shop", "--check", check=False).returncode == 1

    # filled from a container of its own: tmpfs pages count against the memory of the container that writes them
    subprocess.run(["docker", "run", "--rm", "--label", f"io.provision.env={sandbox.env}", "--network", "none",
                    "--entrypoint", "sh", "-v", f"{repository}:/repo", "provision-test/postgres:15", "-c",
                    "dd if=/dev/zero of=/repo/fill bs=1M 2>/dev/null; true"], capture_output=True, timeout=120,
                   check=True)
    full = archive(sandbox)
    assert full["health"] == "failed" and full["reason"].startswith("the repository is full")
    assert full["repository_free_bytes"] < archiving.FULL_BELOW
    in_archiver("rm -f /repo/fill")
