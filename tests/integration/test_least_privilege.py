"""Least privilege on the real engine: the roles every stack gets (docs/security.md), what an anonymous
caller of the API can do, existing stacks moved off the superuser with their data, restores that run as the
owner (a hostile dump changes nothing), and data verbs that a killed run leaves for the next one to finish."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from provision.core.secrets import Secret
from provision.infra.database import password_statement
from tests.conftest import Sandbox, reload_schema, sql


def _urls(sandbox: Sandbox, project: str = "shop") -> tuple[str, str]:
    out = sandbox.cli("outputs", f"--project={project}", "--format=json").json()
    return str(out["api_url"]), str(out["db_url"])


def _jwt(secret: str, claims: dict[str, object]) -> str:
    """An HS256 token as PostgREST accepts it (RFC 7519)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def _admin_sql(sandbox: Sandbox, statement: str, project: str = "shop") -> str:
    """`statement` as the bootstrap superuser over the db container's socket (what only the tool does)."""
    container = f"{sandbox.compose_name(project)}-db-1"
    result = subprocess.run(["docker", "exec", "-i", container, "sh", "-c",
                             'psql -X -A -t -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"'],
                            input=statement, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _roles(db_url: str) -> dict[str, tuple[bool, bool]]:
    rows = sql(db_url, "select rolname, rolsuper, rolcanlogin from pg_roles where rolname !~ '^pg_'")
    return {str(r[0]): (bool(r[1]), bool(r[2])) for r in rows}


def _check_api_roles(api_url: str, db_url: str, jwt_secret: str) -> None:
    """Anonymous callers get nothing; a JWT for `authenticated` reads and writes; a table opened on purpose
    to anon is readable."""
    reload_schema(db_url, api_url, "items")
    assert httpx.get(f"{api_url}/items").status_code == 401
    posted = httpx.post(f"{api_url}/items", json={"id": 5000, "name": "anon"})
    assert posted.status_code == 401, posted.text
    token = {"Authorization": f"Bearer {_jwt(jwt_secret, {'role': 'authenticated'})}"}
    assert httpx.get(f"{api_url}/items?limit=1", headers=token).status_code == 200
    assert httpx.post(f"{api_url}/items", json={"id": 5001, "name": "with a token"}, headers=token).status_code == 201
    forged = {"Authorization": f"Bearer {_jwt('not-the-secret', {'role': 'authenticated'})}"}
    assert httpx.get(f"{api_url}/items", headers=forged).status_code == 401
    sql(db_url, "grant select on items to anon")  # the project opens a table to anonymous reads on purpose
    reload_schema(db_url, api_url, "items")
    assert httpx.get(f"{api_url}/items?limit=1").status_code == 200
    assert httpx.post(f"{api_url}/items", json={"id": 5002, "name": "anon"}).status_code == 401


def test_a_new_stack_hands_out_no_superuser_and_no_anonymous_access(sandbox: Sandbox) -> None:
    sandbox.cli("provision")
    api_url, db_url = _urls(sandbox)
    roles = _roles(db_url)
    assert roles["app"] == (False, True), roles  # db_url's role: a login, not a superuser
    assert roles["authenticator"] == (False, True) and roles["anon"] == (False, False)
    assert roles["authenticated"] == (False, False) and roles["provision_admin"] == (True, True)
    assert sql(db_url, "select current_user")[0][0] == "app"
    sql(db_url, "create table items (id int primary key, name text)")
    sql(db_url, "insert into items values (1, 'one')")
    _check_api_roles(api_url, db_url, sandbox.secrets("shop")["JWT_SECRET"])
    # the owner cannot become the superuser, nor run programs on the server
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sql(db_url, "copy (select 1) to program 'id'")
    with pytest.raises(psycopg.Error):
        sql(db_url, "set role provision_admin")
    assert sandbox.cli("provision").output.count("no-op") >= 1


def test_a_stack_made_before_the_roles_moves_off_the_superuser_with_its_data(sandbox: Sandbox) -> None:
    sandbox.cli("provision")
    _, db_url = _urls(sandbox)
    password = sandbox.secrets("shop")["DB_PASSWORD"]
    # make the stack what earlier versions made: the owner `app` IS the bootstrap superuser, owning the data
    container = f"{sandbox.compose_name('shop')}-db-1"
    script = ("CREATE ROLE legacy_tmp SUPERUSER LOGIN;\n"
              "\\connect - legacy_tmp\n"
              "ALTER DATABASE app OWNER TO provision_admin; DROP OWNED BY app; DROP OWNED BY authenticated; "
              "DROP OWNED BY anon; DROP OWNED BY authenticator; "
              "DROP ROLE app; DROP ROLE authenticated, anon, authenticator;\n"
              "ALTER ROLE provision_admin RENAME TO app;\n"
              + password_statement("app", Secret(password))[0] +
              "\\connect - app\nDROP ROLE legacy_tmp;\n"
              "CREATE TABLE items (id serial PRIMARY KEY, name text);\n"
              "INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 500) g;\n"
              "CREATE SCHEMA reports; CREATE VIEW reports.names AS SELECT name FROM items;\n"
              "CREATE TYPE mood AS ENUM ('ok', 'sad'); CREATE FUNCTION one() RETURNS int LANGUAGE sql AS 'SELECT 1';\n")
    done = subprocess.run(["docker", "exec", "-i", container, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           "-U", "provision_admin", "-d", "app"], input=script, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert _roles(db_url)["app"] == (True, True)  # the legacy state: db_url is a superuser
    state = sandbox.state_dir / sandbox.env / "shop" / "state.json"  # and its record has no roles made
    record = json.loads(state.read_text())
    del record["roles"]
    state.write_text(json.dumps(record))
    # any change of the stack applies the roles: here a new healthcheck interval
    env_file = sandbox.root / "envs" / f"{sandbox.env}.yml"
    env_file.write_text(env_file.read_text().replace("health:\n", "health:\n  interval: 30\n"))
    moved = sandbox.cli("provision")
    assert "moving the owner role 'app' off the superuser" in moved.output
    api_url, db_url = _urls(sandbox)
    assert _roles(db_url)["app"] == (False, True)
    assert sql(db_url, "select count(*) from items")[0][0] == 500
    owners = dict(sql(db_url, "select c.relname, c.relowner::regrole::text from pg_class c "
                              "where c.relname in ('items', 'items_id_seq', 'names')"))
    assert owners == {"items": "app", "items_id_seq": "app", "names": "app"}
    assert sql(db_url, "select nspowner::regrole::text from pg_namespace where nspname = 'reports'")[0][0] == "app"
    assert sql(db_url, "select datdba::regrole::text from pg_database where datname = 'app'")[0][0] == "app"
    sql(db_url, "insert into items (name) values ('after')")  # the sequence is the owner's too
    _check_api_roles(api_url, db_url, sandbox.secrets("shop")["JWT_SECRET"])
    assert "no-op" in sandbox.cli("provision").output


HOSTILE = """
CREATE FUNCTION harmless(id int) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  IF current_user <> 'provision_admin' THEN  -- only in a restore: what a dump crafted for a superuser does
    EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch /tmp/pwned''';
    EXECUTE 'CREATE ROLE evil SUPERUSER LOGIN PASSWORD ''evil''';
  END IF;
  RETURN true;
END $f$;
CREATE TABLE hostile (id int CHECK (harmless(id)));
INSERT INTO hostile VALUES (1), (2);
"""


def test_a_hostile_dump_runs_as_the_owner_and_changes_nothing(sandbox: Sandbox) -> None:
    sandbox.cli("provision")
    _, db_url = _urls(sandbox)
    sql(db_url, "create table items (id int primary key, name text)")
    sql(db_url, "insert into items select g, 'x' from generate_series(1, 50) g")
    container = f"{sandbox.compose_name('shop')}-db-1"
    # the hostile dump is made with a superuser's rights elsewhere; here, in a scratch database of the stack
    _admin_sql(sandbox, "CREATE DATABASE scratch;")
    made = subprocess.run(["docker", "exec", "-i", container, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           "-U", "provision_admin", "-d", "scratch"], input=HOSTILE, capture_output=True,
                          text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    dump = sandbox.root / "hostile.dump"
    with dump.open("wb") as out:
        subprocess.run(["docker", "exec", container, "pg_dump", "-U", "provision_admin", "-Fc", "scratch"],
                       stdout=out, timeout=60, check=True)
    refused = sandbox.cli("restore", "--project=shop", f"--from={dump}", "--yes", check=False)
    assert refused.returncode != 0 and "has no manifest" in refused.output and "--force" in refused.output
    forced = sandbox.cli("restore", "--project=shop", f"--from={dump}", "--yes", "--force", check=False)
    assert forced.returncode != 0, forced.output
    assert "permission denied" in forced.output or "must be superuser" in forced.output, forced.output
    assert sql(db_url, "select count(*) from items")[0][0] == 50
    assert sql(db_url, "select count(*) from pg_roles where rolname = 'evil'")[0][0] == 0
    assert sql(db_url, "select to_regclass('public.hostile') is null")[0][0] is True
    pwned = subprocess.run(["docker", "exec", container, "test", "-e", "/tmp/pwned"], timeout=30, check=False)
    assert pwned.returncode != 0


def test_a_dump_of_another_project_needs_force(sandbox: Sandbox) -> None:
    sandbox.cli("provision")
    _, db_url = _urls(sandbox)
    sql(db_url, "create table items (id int primary key)")
    made = json.loads(sandbox.cli("backup", "--project=shop", "--json").stdout)["details"]
    dump = made["path"]
    manifest = dump[: -len(".dump")] + ".json"
    data = json.loads(Path(manifest).read_text())
    data["project"] = "other"
    Path(manifest).write_text(json.dumps(data))
    refused = sandbox.cli("restore", "--project=shop", f"--from={dump}", "--yes", check=False)
    assert refused.returncode != 0 and "project 'other'" in refused.output and "clone" in refused.output
    assert sandbox.cli("restore", "--project=shop", f"--from={dump}", "--yes", "--force").returncode == 0


def test_a_rotation_killed_after_alter_role_is_finished_by_the_next_run(sandbox: Sandbox) -> None:
    sandbox.cli("provision")
    _, db_url = _urls(sandbox)
    old = sandbox.secrets("shop")["DB_PASSWORD"]
    new = "f" * 48
    # what a kill between ALTER ROLE and storing the secret leaves: the role has the pending password
    pending = sandbox.state_dir / sandbox.env / "shop" / "pending.json"
    pending.write_text(json.dumps({"rotate": {"secret": "DB_PASSWORD", "value": new, "at": "now"}}))
    pending.chmod(0o600)
    _admin_sql(sandbox, password_statement("app", Secret(new))[0])
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(db_url, connect_timeout=5).close()
    healed = sandbox.cli("provision")
    assert "interrupted rotation of DB_PASSWORD is finished" in healed.output
    assert sandbox.secrets("shop")["DB_PASSWORD"] == new and not pending.exists()
    _, db_url = _urls(sandbox)
    assert sql(db_url, "select 1")[0][0] == 1
    # and a kill before ALTER ROLE: the old password stays
    pending.write_text(json.dumps({"rotate": {"secret": "DB_PASSWORD", "value": "e" * 48, "at": "now"}}))
    kept = sandbox.cli("backup", "--project=shop")
    assert "never reached the database: the old password stays" in kept.output
    assert sandbox.secrets("shop")["DB_PASSWORD"] == new != old
    assert sql(db_url, "select 1")[0][0] == 1


def test_a_restore_killed_midway_is_checked_by_the_next_run(sandbox: Sandbox) -> None:
    sandbox.cli("provision")
    _, db_url = _urls(sandbox)
    sql(db_url, "create table items (id int primary key)")
    sql(db_url, "insert into items select generate_series(1, 20)")
    made = json.loads(sandbox.cli("backup", "--project=shop", "--json").stdout)["details"]
    sql(db_url, "insert into items select generate_series(21, 30)")
    pending = sandbox.state_dir / sandbox.env / "shop" / "pending.json"
    pending.write_text(json.dumps({"restore": {"from": made["path"], "safety": None, "at": "now"}}))
    healed = sandbox.cli("provision")
    assert "never committed: the database is as it was" in healed.output
    assert sql(db_url, "select count(*) from items")[0][0] == 30 and not pending.exists()


def test_rotation_proves_the_old_password_is_refused_from_outside(sandbox: Sandbox) -> None:
    """The official image trusts 127.0.0.1 inside its container; the proof goes through the published port."""
    sandbox.cli("provision")
    _, db_url = _urls(sandbox)
    container = f"{sandbox.compose_name('shop')}-db-1"
    hba = subprocess.run(["docker", "exec", container, "sh", "-c", 'grep -v "^#" "$PGDATA/pg_hba.conf"'],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert "127.0.0.1/32" in hba and "trust" in hba  # the official image's rules
    rotated = sandbox.cli("rotate", "--project=shop", "--secret=db_password", "--yes")
    assert "the new password logs in and the old one is refused" in rotated.output
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(db_url, connect_timeout=5).close()


def _kill_at(sandbox: Sandbox, step: str, task: str, *args: str) -> None:
    """Run `task --project=shop *args` until it pauses at `step` (service/data.py, DataVerbs.pause), then SIGKILL it."""
    marker = sandbox.state_dir / f"paused-at-{step}"
    proc = subprocess.Popen(sandbox.argv(task, "--project=shop", *args), cwd=sandbox.root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=sandbox.environ(PROVISION_TEST_PAUSE_AT=step))
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, f"{task} never reached {step}"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    marker.unlink()


@pytest.mark.parametrize("step", ["rotate-pending", "rotate-altered"])
def test_rotate_killed_at_each_step_is_repaired_by_the_next_run(sandbox: Sandbox, step: str) -> None:
    sandbox.cli("provision")
    _, old_url = _urls(sandbox)
    sql(old_url, "create table items (id int primary key)")
    old = sandbox.secrets("shop")["DB_PASSWORD"]
    _kill_at(sandbox, step, "rotate", "--secret=db_password", "--yes")
    healed = sandbox.cli("provision")
    assert "interrupted rotation of DB_PASSWORD" in healed.output
    api_url, db_url = _urls(sandbox)
    assert sql(db_url, "select count(*) from items")[0][0] == 0  # db_url logs in, whichever password won
    assert (sandbox.secrets("shop")["DB_PASSWORD"] == old) is (step == "rotate-pending")
    assert not (sandbox.state_dir / sandbox.env / "shop" / "pending.json").exists()
    assert httpx.get(api_url).status_code == 200
