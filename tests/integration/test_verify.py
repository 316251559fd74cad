"""`verify` on the real engine (issue 22): a restore drill writes a marker, restores the archive into a throwaway
stack, checks it and removes it, and records the result that `backups` shows; a drill of an archive that lost a
WAL segment fails and says so, never a false ok."""

from __future__ import annotations

import subprocess
import threading
import time

import psycopg

from tests.archives import archive, archive_when
from tests.conftest import Sandbox, sql

ARCHIVING = "backup:\n  continuous: true\n  base_every: 1h\n  retention: 1d\n  max_lag: 60s\n"


def _ok(sandbox: Sandbox, timeout: float = 90) -> None:
    archive_when(sandbox, lambda s: s["health"] == "ok", timeout)


def _names(kind: str, env: str) -> list[str]:
    argv = ["docker", kind, "ls", "-q"] if kind == "volume" else ["docker", "ps", "-aq", "--format", "{{.Names}}"]
    found = subprocess.run([*argv, "--filter", f"label=io.provision.env={env}"], capture_output=True, text=True,
                           timeout=60, check=True).stdout.split()
    return [name for name in found if "drill" in name]


def test_a_drill_restores_into_a_throwaway_stack_checks_it_and_records_the_result(sandbox: Sandbox) -> None:
    sandbox.write_env(["shop"], images={**sandbox.images, "db": "provision-test/postgres:17"}, extra=ARCHIVING)
    db_url = sandbox.cli("provision", "--project=shop", "--json", "--show-secrets").json()["projects"][0]["db_url"]
    sql(db_url, "create table items (id int primary key, name text)")
    sql(db_url, "insert into items select i, 'item ' || i from generate_series(1, 500) i")
    _ok(sandbox)
    assert archive(sandbox)["last_drill"] is None
    assert "never" in sandbox.cli("backups", "--project=shop").stdout

    # a writer keeps inserting while the drill runs: the restore stops at the marker's commit, so the sampled row
    # counts and page checksums must match exactly
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            n = 100_000
            while not stop.is_set():
                n += 1
                conn.execute("insert into items values (%s, 'during the drill')", (n,))
                time.sleep(0.01)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        done = sandbox.cli("verify", "--project=shop", "--json").json()["drills"][0]["details"]
    finally:
        stop.set()
        writer.join(timeout=30)
    assert done["result"] == "ok" and done["marker"] == "found" and done["rows"] >= 501  # the items, the marker
    assert done["sampled_tables"] == 1 and done["sampled_rows"] > 500 and "xid" in done["to"]
    sql(db_url, "delete from items where id > 100000")
    assert done["tables"] >= 2 and done["indexes_checked"] >= 2 and done["restore_s"] > 0
    assert _names("volume", sandbox.env) == [] and _names("container", sandbox.env) == []  # the throwaway is gone
    drill = archive(sandbox)["last_drill"]
    assert drill["result"] == "ok" and drill["duration_s"] > 0 and "amcheck clean" in drill["detail"]
    assert sql(db_url, "select count(*) from items") == [(500,)]  # the source only got its marker row

    # without reflinks (ext4 here), a branch of an archived project is copied from its archive, and says so
    made = sandbox.cli("clone", "--project=shop", "--to=shop-pr-1", "--format=json", "--show-secrets").json()
    assert made["details"]["method"] == "archive" and made["details"]["branch"]["parent"] == "shop"
    assert "latest archived moment" in made["messages"][0]
    assert sql(made["db_url"], "select count(*) from items") == [(500,)]
    [listed] = sandbox.cli("branches", "--json").json()["branches"]
    assert listed["project"] == "shop-pr-1" and listed["parent"] == "shop"
    # reset --at: the parent as it was then, from its archive, same URLs; a plain reset: the parent now
    sql(made["db_url"], "insert into items values (9999, 'written on the branch')")
    moment = sql(db_url, "select now()")[0][0]
    time.sleep(1)
    sql(db_url, "insert into items select i, 'later' from generate_series(1001, 1100) i")
    deadline = time.monotonic() + 60
    while not (archive(sandbox)["latest"] or "") > moment.isoformat():
        assert time.monotonic() < deadline
        time.sleep(1)
    (sandbox.root / "mask.sql").write_text("update items set name = 'masked';\n")
    back = sandbox.cli("reset", "--project=shop-pr-1", f"--at={moment.isoformat()}", "--mask=mask.sql", "--json",
                       "--show-secrets").json()
    assert back["db_url"] == made["db_url"] and back["api_url"] == made["api_url"]
    assert sql(made["db_url"], "select count(*) from items") == [(500,)]  # neither the branch's row nor later
    assert sql(made["db_url"], "select distinct name from items") == [("masked",)]  # masked before it started
    assert sql(db_url, "select count(*) from items where name = 'masked'") == [(0,)]
    sandbox.cli("reset", "--project=shop-pr-1", "--no-mask")
    assert sql(made["db_url"], "select count(*) from items") == [(600,)]
    sandbox.cli("destroy", "--project=shop-pr-1", "--delete-data", "--yes", "--no-backup")
    sql(db_url, "delete from items where id > 1000")

    # the archive loses its newest finished WAL segment: the drill fails, says why, and is recorded as failed
    sql(db_url, "insert into items select i, 'more' from generate_series(501, 600) i")
    archiver = f"{sandbox.compose_name('shop')}-archiver-1"
    subprocess.run(["docker", "exec", f"{sandbox.compose_name('shop')}-db-1", "sh", "-c",
                    'psql -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "select pg_switch_wal()"'], check=True,
                   capture_output=True, timeout=60)
    time.sleep(2)
    subprocess.run(["docker", "exec", archiver, "sh", "-c",
                    'cd /repo/pgdata/wal && rm -f "$(ls | grep -E "^[0-9A-F]{24}$" | sort | tail -n 1)"'],
                   check=True, capture_output=True, timeout=60)
    failed = sandbox.cli("verify", "--project=shop", check=False)
    assert failed.returncode == 1 and "drill failed" in failed.output
    assert archive(sandbox)["last_drill"]["result"] == "failed"
    assert _names("volume", sandbox.env) == [] and _names("container", sandbox.env) == []
