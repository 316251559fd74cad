"""Branches (issue 23) on the real engine: a clone of a source taking writes, branches recorded as branches
(plan, prune, list, branches, gc, destroy of a parent), reset, masking, and a branch's own secrets."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import Sandbox, sql


def _urls(sandbox: Sandbox, project: str) -> tuple[str, str]:
    out = sandbox.cli("outputs", f"--project={project}", "--format=json").json()
    return str(out["api_url"]), str(out["db_url"])


def _count(db_url: str) -> int:
    return int(sql(db_url, "select count(*) from items")[0][0])


class Writer(threading.Thread):
    """Inserts a row into `items` every few milliseconds until stopped; `written`: how many committed."""

    def __init__(self, db_url: str) -> None:
        super().__init__(daemon=True)
        self.db_url, self.written, self.stop = db_url, 0, threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True, connect_timeout=10) as conn:
            while not self.stop.is_set():
                conn.execute("insert into items (name) values ('written meanwhile')")
                self.written += 1
                time.sleep(0.005)

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=30)


def _seed(db_url: str, rows: int) -> None:
    sql(db_url, "create table items (id serial primary key, name text, email text)")
    sql(db_url, "grant select on items to anon")
    sql(db_url, "insert into items (name, email) select 'item ' || g, 'user' || g || '@example.com' "
                "from generate_series(1, %s) g", rows)


def test_a_clone_of_a_source_taking_writes_is_consistent(sandbox: Sandbox) -> None:
    """The backup's row counts come from the dump's own snapshot: rows arriving meanwhile make no mismatch."""
    sandbox.cli("provision", "--project=shop")
    _, source_url = _urls(sandbox, "shop")
    _seed(source_url, 2000)
    with Writer(source_url) as writer:
        while writer.written < 20:
            time.sleep(0.05)
        cloned = sandbox.cli("clone", "--project=shop", "--to=shop-pr-1", "--json").json()
        made = sandbox.cli("backup", "--project=shop", "--json").json()
    copied = cloned["details"]["row_counts"]["public.items"]
    assert 2020 <= copied < 2000 + writer.written  # a point in the middle of the writes
    assert made["details"]["row_counts"]["public.items"] >= copied
    api_url, branch_url = _urls(sandbox, "shop-pr-1")
    assert _count(branch_url) == copied
    assert _count(source_url) == 2000 + writer.written  # the source kept every write
    assert len(httpx.get(f"{api_url}/items", params={"select": "id"}, timeout=10).json()) == copied


def test_a_branch_is_recorded_masked_kept_reset_and_collected(sandbox: Sandbox) -> None:
    """A branch: its own secrets and ports, masked before its API opens, no drift nor orphan for plan and
    --prune, seen by another checkout through its labels, kept or reset when cloned again, reset in place, its
    parent's destroy refused; an expired one removed by gc."""
    sandbox.write_env(["shop"], extra="branches:\n  prod_like: true\n")
    (sandbox.root / "mask.sql").write_text("update items set email = 'masked@example.com';\n")
    sandbox.cli("provision", "--project=shop")
    source_api, source_url = _urls(sandbox, "shop")
    _seed(source_url, 5)
    refused = sandbox.cli("clone", "--project=shop", "--to=shop-pr-2", check=False)
    assert refused.returncode == 2 and "prod-like" in refused.stderr  # a prod-like parent needs a mask
    made = sandbox.cli("clone", "--project=shop", "--to=shop-pr-2", "--ttl=3d", "--mask=mask.sql", "--json").json()
    branch = made["details"]["branch"]
    assert made["changed"] is True and branch["parent"] == "shop" and branch["expires_at"]
    api_url, branch_url = _urls(sandbox, "shop-pr-2")
    # its own secrets and ports; the parent's password does not open the branch
    ours, theirs = sandbox.secrets("shop-pr-2"), sandbox.secrets("shop")
    for name in ("DB_PASSWORD", "JWT_SECRET", "DB_ADMIN_PASSWORD", "AUTHENTICATOR_PASSWORD"):
        assert ours[name] != theirs[name], name
    assert api_url != source_api and branch_url.split("@")[1] != source_url.split("@")[1]
    parent_password = theirs["DB_PASSWORD"]
    stolen = branch_url.replace(ours["DB_PASSWORD"], parent_password)
    try:
        psycopg.connect(stolen, connect_timeout=5).close()
        raise AssertionError("the parent's password opened the branch")
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
    # masked through the API (it opened only after the mask ran) and in the database; the parent untouched
    served = httpx.get(f"{api_url}/items", params={"select": "email"}, timeout=10).json()
    assert len(served) == 5 and {row["email"] for row in served} == {"masked@example.com"}
    assert sql(source_url, "select count(*) from items where email like 'user%'")[0][0] == 5

    # a branch, not drift nor an orphan: plan passes the release gate, --prune leaves it
    planned = {p["project"]: p for p in sandbox.cli("plan", "--json").json()["projects"]}
    assert planned["shop-pr-2"]["outcome"] == "branch" and "'shop'" in planned["shop-pr-2"]["reason"]
    assert sandbox.cli("plan", "--detailed-exitcode", check=False).returncode == 0
    sandbox.cli("provision", "--prune", "--yes")
    status = sandbox.cli("status", "--project=shop-pr-2", "--json").json()["projects"][0]
    assert status["status"] == "running" and status["details"]["branch"]["parent"] == "shop"
    # another checkout of the same env (no records here) sees it as a branch by its labels
    elsewhere = sandbox.cli("plan", "--json", extra_env={"PROVISION_STATE_DIR": str(sandbox.root / "other")}).json()
    assert {p["project"]: p["outcome"] for p in elsewhere["projects"]}["shop-pr-2"] == "branch"

    # cloned again: kept as it is; with --reset (and by reset) back to the parent's data, same URLs and secrets
    sql(branch_url, "insert into items (name) values ('only in the branch')")
    kept = sandbox.cli("clone", "--project=shop", "--to=shop-pr-2", "--mask=mask.sql", "--json").json()
    assert kept["changed"] is False and _count(branch_url) == 6
    sandbox.cli("clone", "--project=shop", "--to=shop-pr-2", "--reset", "--mask=mask.sql")
    assert _count(branch_url) == 5 and _urls(sandbox, "shop-pr-2") == (api_url, branch_url)
    sql(branch_url, "insert into items (name) values ('again')")
    sql(source_url, "insert into items (name, email) values ('new upstream', 'new@example.com')")
    sandbox.cli("reset", "--project=shop-pr-2")
    assert _count(branch_url) == 6 and sandbox.secrets("shop-pr-2") == ours
    emails = {row["email"] for row in httpx.get(f"{api_url}/items", params={"select": "email"}, timeout=10).json()}
    assert emails == {"masked@example.com"}  # the mask ran again

    # the parent's destroy is refused while it has a live branch, naming it
    refused = sandbox.cli("destroy", "--project=shop", check=False)
    assert refused.returncode == 2 and "shop-pr-2" in refused.stderr and "--leave-branches" in refused.stderr

    # an expired branch (schema only) is listed, then removed by gc; the live one stays
    sandbox.cli("clone", "--project=shop", "--to=shop-pr-3", "--ttl=1s", "--schema-only", "--no-mask")
    _, short_url = _urls(sandbox, "shop-pr-3")
    assert _count(short_url) == 0
    time.sleep(1.5)
    listed = {b["project"]: b for b in sandbox.cli("branches", "--json").json()["branches"]}
    assert listed["shop-pr-3"]["expired"] is True and listed["shop-pr-2"]["expired"] is False
    assert listed["shop-pr-2"]["api_url"] == api_url and listed["shop-pr-2"]["parent"] == "shop"
    dry = sandbox.cli("gc", "--dry-run", "--json").json()
    assert [r["project"] for r in dry["removed"]] == ["shop-pr-3"] and dry["removed"][0]["changed"] is False
    done = sandbox.cli("gc", "--json").json()
    assert [r["project"] for r in done["removed"]] == ["shop-pr-3"]
    assert [b["project"] for b in sandbox.cli("branches", "--json").json()["branches"]] == ["shop-pr-2"]
    sandbox.cli("destroy", "--project=shop-pr-2", "--delete-data", "--yes", "--no-backup")
    sandbox.cli("destroy", "--project=shop")


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    """An XFS filesystem with reflinks, made in an image file and loop-mounted for this test (root needed, as
    in CI; xfsprogs from Debian, scripts/bootstrap.sh), unmounted in teardown (after the sandbox's)."""
    image, mount = tmp_path / "xfs.img", tmp_path / "xfs"
    subprocess.run(["truncate", "-s", "600M", str(image)], check=True, timeout=30)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True, timeout=60)
    mount.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True, timeout=60)
    try:
        (mount / "data").mkdir()
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], timeout=60, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], timeout=60, check=False)  # the loop device goes with it


def _used(path: Path) -> int:
    return int(subprocess.run(["df", "-B1", "--output=used", str(path)], capture_output=True, text=True,
                              check=True, timeout=30).stdout.split()[-1])


def _checkpoint(sandbox: Sandbox, project: str) -> None:
    db = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={sandbox.compose_name(project)}",
                         "--filter", "label=com.docker.compose.service=db"], capture_output=True, text=True,
                        check=True, timeout=30).stdout.split()[0]
    subprocess.run(["docker", "exec", db, "sh", "-c", 'psql -U "$POSTGRES_USER" -d postgres -c checkpoint'],
                   capture_output=True, check=True, timeout=60)


def test_a_branch_by_reflink_of_a_source_taking_writes(xfs: Path, sandbox: Sandbox) -> None:
    """On XFS with reflinks the branch is a copy-on-write copy of the running source taken in backup mode: it
    serves a consistent point of the writes, the source kept every write, the copy took almost no disk, and
    writes on either side stay there; its secrets are its own, so the parent's passwords do not open it."""
    sandbox.write_env(["shop"], extra=f"  data_root: {xfs / 'data'}\n")
    (sandbox.root / "mask.sql").write_text("update items set email = 'masked@example.com';\n\n"
                                           "-- a blank line between statements, as people write them\n")
    sandbox.cli("provision", "--project=shop")
    _, source_url = _urls(sandbox, "shop")
    sql(source_url, "create table items (id serial primary key, name text, email text)")
    sql(source_url, "grant select on items to anon")
    sql(source_url, "insert into items (name, email) select repeat('x', 200), 'u' || g || '@example.com' "
                    "from generate_series(1, 100000) g")
    source_bytes = int(sql(source_url, "select pg_database_size(current_database())")[0][0])
    _checkpoint(sandbox, "shop")  # the seeded rows on disk now: what follows is the branch's
    before = _used(xfs)
    with Writer(source_url) as writer:
        while writer.written < 20:
            time.sleep(0.05)
        started = time.monotonic()
        made = sandbox.cli("clone", "--project=shop", "--to=shop-cow", "--json")
        took = time.monotonic() - started
        written_by_then = writer.written
    branched = made.json()
    assert branched["details"]["method"] == "reflink", made.stderr
    extra = _used(xfs) - before
    api_url, branch_url = _urls(sandbox, "shop-cow")
    copied, top = sql(branch_url, "select count(*), max(id) from items")[0]
    assert 100020 <= copied <= 100000 + written_by_then and top == copied  # a point of the writes, no gap
    assert _count(source_url) == 100000 + writer.written  # the source never stopped and kept every write
    served = httpx.get(f"{api_url}/items", params={"select": "id", "id": "gt.99990"}, timeout=10).json()
    assert len(served) == copied - 99990
    print(f"reflink branch: {took:.2f} s until the API served, backup mode "
          f"{branched['details']['backup_mode_s']} s, extra disk {extra / 2**20:.1f} MiB of a "
          f"{source_bytes / 2**20:.1f} MiB database")
    assert extra < source_bytes * 0.5  # a logical copy takes the whole size again (and more: its WAL)
    [listed] = sandbox.cli("branches", "--json").json()["branches"]
    assert listed["project"] == "shop-cow" and listed["disk_bytes"] is not None
    assert listed["disk_bytes"] < source_bytes * 0.5  # its own blocks: what it has not shared with the parent
    print(f"its own disk (filefrag, not shared): {listed['disk_bytes'] / 2**20:.1f} MiB")
    sql(branch_url, "insert into items (name) values ('only in the branch')")
    sql(source_url, "insert into items (name) values ('only in the source')")
    assert sql(branch_url, "select count(*) from items where name like 'only in%'")[0][0] == 1
    assert sql(source_url, "select count(*) from items where name = 'only in the branch'")[0][0] == 0
    ours, theirs = sandbox.secrets("shop-cow"), sandbox.secrets("shop")
    assert all(ours[name] != theirs[name] for name in ("DB_PASSWORD", "DB_ADMIN_PASSWORD", "JWT_SECRET"))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(branch_url.replace(ours["DB_PASSWORD"], theirs["DB_PASSWORD"]), connect_timeout=5).close()
    # reset by reflink: the parent's data now, the same URLs and secrets
    again = sandbox.cli("reset", "--project=shop-cow", "--json").json()
    assert again["details"]["method"] == "reflink" and _urls(sandbox, "shop-cow") == (api_url, branch_url)
    assert sql(branch_url, "select name from items where name like 'only in%'") == [("only in the source",)]
    assert sandbox.secrets("shop-cow") == ours
    # masked by reflink too: in the copy, in single-user mode, before the branch's API or anyone could connect
    masked = sandbox.cli("clone", "--project=shop", "--to=shop-masked", "--mask=mask.sql", "--json").json()
    assert masked["details"]["method"] == "reflink"
    masked_api, masked_url = _urls(sandbox, "shop-masked")
    served = httpx.get(f"{masked_api}/items", params={"select": "email", "id": "lt.10"}, timeout=10).json()
    assert {row["email"] for row in served} == {"masked@example.com"}
    assert sql(masked_url, "select count(*) from items where email like 'u%'")[0][0] == 0
    assert sql(source_url, "select count(*) from items where email like 'u%'")[0][0] == 100000
    # a mask that fails: no branch is left (no record, secrets, volume or data directory), the source untouched
    (sandbox.root / "broken.sql").write_text("update items set email = 'x';\nupdate no_such_table set a = 1;\n")
    failed = sandbox.cli("clone", "--project=shop", "--to=shop-broken", "--mask=broken.sql", check=False)
    assert failed.returncode != 0 and "no_such_table" in failed.stderr and "removed" in failed.stderr
    assert not any((xfs / "data").glob("*shop-broken*")) and not (sandbox.state_dir / sandbox.env / "shop-broken"
                                                                   / "state.json").exists()
    assert "shop-broken" not in {b["project"] for b in sandbox.cli("branches", "--json").json()["branches"]}
    gone = sandbox.cli("destroy", "--project=shop-cow", "--delete-data", "--yes", "--no-backup")
    assert "deleted its data directory" in gone.output and not any((xfs / "data").glob("shop-cow_*"))


def test_without_reflinks_a_branch_is_copied_logically_and_says_so(tmp_path: Path, sandbox: Sandbox) -> None:
    """local.data_root on a filesystem without reflinks (ext4 here): said once, then the logical copy."""
    root = tmp_path / "plain"
    root.mkdir()
    sandbox.write_env(["shop"], extra=f"  data_root: {root}\n")
    sandbox.cli("provision", "--project=shop")
    _, source_url = _urls(sandbox, "shop")
    _seed(source_url, 7)
    made = sandbox.cli("clone", "--project=shop", "--to=shop-plain", "--json")
    assert made.stderr.count("no copy-on-write clone") == 1 and "cannot make reflinks" in made.stderr
    assert made.json()["details"]["branch"]["method"] == "logical"
    _, branch_url = _urls(sandbox, "shop-plain")
    assert _count(branch_url) == 7 and any(root.glob("shop-plain_*"))  # its own volume in the data root too
