"""SQL through Coolify's one-off scheduled tasks: every command fits scheduled_tasks.command (varchar(255)), the SQL
arrives intact whatever its size or characters (the commands really run here, in sh, with a psql that records
what it got), the length guard, and the version gate (GET /version once, only before a change or a task)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from provision.backends.coolify import CoolifyBackend, CoolifyClient
from provision.backends.coolify.tasks import (
    ROLES_ENV,
    TASK_COMMAND_MAX,
    roles_env_payload,
    sql_task_commands,
)
from provision.core import roles
from provision.core.config import EnvConfig
from provision.core.errors import DatabaseStarting, NotSupported, ProvisionError
from provision.core.secrets import Secret
from provision.infra import database
from tests.unit.test_coolify_backend import (  # noqa: F401
    API,
    TOKEN,
    FakeCoolify,
    config,
    existing,
    target,
    timeless,
)

S = "serv0000000000000000001"
TASKS = f"/services/{S}/scheduled-tasks"
# what a person could write in SQL that two shells and a here-document must not touch
AWKWARD = ("SELECT 'it''s', \"Quoted\", $$dollar $body$$, $1, `tick`, \\backslash, %s %d, ${HOME}, $(id);\n"
           "-- a line of its own: EOF\nEOF\nPROVISION_SQL_\n\tSELECT 'tab';\r\nSELECT 'é ✓';")


def _bin(tmp_path: Path, *, psql: bool) -> Path:
    """A PATH of its own: the tools a postgres image has and, in the db container only, a psql that records its
    arguments and stdin under $CAPTURE and prints `psql-ok`."""
    directory = tmp_path / ("db-bin" if psql else "api-bin")
    directory.mkdir()
    for tool in ("sh", "cat", "base64", "gunzip", "gzip", "rm", "mkdir", "sha256sum", "cut"):
        found = shutil.which(tool)
        assert found, tool
        (directory / tool).symlink_to(found)
    if psql:
        fake = directory / "psql"
        fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" >"$CAPTURE.args"\ncat >"$CAPTURE.sql"\necho psql-ok\n')
        fake.chmod(0o755)
        ready = directory / "pg_isready"  # the lasting server answers on 127.0.0.1
        ready.write_text("#!/bin/sh\nexit 0\n")
        ready.chmod(0o755)
    return directory


class TaskCoolify(FakeCoolify):
    """FakeCoolify plus GET /version and a service's scheduled tasks, whose runs execute the command here with
    `sh -c` (as ScheduledTaskJob's `docker exec <container> sh -c` does) in a PATH standing for the container.
    A command over 255 characters is PostgreSQL's varchar(255) error: Laravel's production 500. Runs are listed
    oldest first, as a created_at tie (one-second resolution) may order them. The container's /tmp is a
    directory of the test's own (`tmp`): parallel tests never see each other's /tmp/provision.* directories."""

    def __init__(self, path: Path, capture: Path) -> None:
        super().__init__()
        self.version = "4.3.11"
        self.path, self.capture = path, capture
        self.tmp = capture.parent / "container-tmp"
        self.tmp.mkdir(exist_ok=True)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.commands: list[str] = []
        self.names: list[str] = []
        self.environment: dict[str, str] = {}  # the db container's own variables (PROVISION_ROLES)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        if path == "/version" and request.method == "GET":
            self.requests.append(("GET", path))
            return httpx.Response(200, text=self.version, headers={"Content-Type": "text/html; charset=UTF-8"})
        if not path.startswith(TASKS):
            return super().__call__(request)
        self.requests.append((request.method, re.sub(r"/scheduled-tasks/\w+", "/scheduled-tasks/T", path)))
        body = json.loads(request.content) if request.content else {}
        if len(str(body.get("command", ""))) > 255:  # 2023_12_31_173041_create_scheduled_tasks_table.php:19
            return httpx.Response(500, json={"message": "Server Error"})
        if request.method == "POST" and path == TASKS:
            task = {"uuid": uuid.uuid4().hex, **body}
            self.tasks[task["uuid"]] = task
            self.commands.append(body["command"])
            self.names.append(body["name"])
            return httpx.Response(201, json=task)
        task_uuid = path.removeprefix(TASKS + "/").split("/")[0]
        task = self.tasks.get(task_uuid)
        if task is None:
            return httpx.Response(404, json={"message": "Scheduled task not found."})
        if request.method == "PATCH":
            task.update(body)
            self.commands.append(body["command"])
            return httpx.Response(200, json=task)
        if request.method == "DELETE":
            del self.tasks[task_uuid]
            return httpx.Response(200, json={"message": "Scheduled task deleted."})
        if path.endswith("/execute"):
            code, output = self.run(task["command"])
            self.runs.setdefault(task_uuid, []).append({
                "uuid": uuid.uuid4().hex, "status": "success" if code == 0 else "failed",
                "message": output if code == 0 else "Job permanently failed after 1 attempts: " + (
                    output or f"SSH command failed with exit code: {code}")})  # as ScheduledTaskJob::failed() words it
            return httpx.Response(200, json={"message": "Scheduled task execution queued."})
        return httpx.Response(200, json=self.runs.get(task_uuid, []))  # executions, oldest first

    def here(self, text: str) -> str:
        """`text` with the container's /tmp/provision.* paths in this fake's `tmp` (`run` maps its output back)."""
        return text.replace("/tmp/provision.", f"{self.tmp}/provision.")

    def run(self, command: str) -> tuple[int, str]:
        environ = {"PATH": str(self.path), "CAPTURE": str(self.capture), "POSTGRES_USER": "provision_admin",
                   "POSTGRES_DB": "app", "LC_ALL": "C", **self.environment}
        done = subprocess.run(["/bin/sh", "-c", self.here(command)], env=environ, stdout=subprocess.PIPE,  # noqa: S603
                              stderr=subprocess.STDOUT, text=True, timeout=30, check=False)
        return done.returncode, done.stdout.strip().replace(f"{self.tmp}/provision.", "/tmp/provision.")


@pytest.fixture
def db(tmp_path: Path) -> TaskCoolify:
    return TaskCoolify(_bin(tmp_path, psql=True), tmp_path / "capture")


def _backend(fake: TaskCoolify, config: EnvConfig) -> CoolifyBackend:  # noqa: F811
    return timeless(CoolifyClient.connect(API, Secret(TOKEN), transport=httpx.MockTransport(fake)), config)


def _received(fake: TaskCoolify) -> tuple[str, list[str]]:
    return (fake.capture.with_suffix(".sql").read_bytes().decode(),
            fake.capture.with_suffix(".args").read_text().splitlines())


def _leftovers(fake: TaskCoolify) -> list[str]:
    return sorted(p.name for p in fake.tmp.glob("provision.*"))


# --- chunking ------------------------------------------------------------------------------------------
def _role_sql() -> str:
    wanted = roles.Roles.of({"db_user": "app"})
    secrets = {name: Secret("p" * 48) for name in ("DB_PASSWORD", "AUTHENTICATOR_PASSWORD", "DB_ADMIN_PASSWORD")}
    return roles.ensure_sql(wanted, "app", secrets)


@pytest.mark.parametrize("sql", [
    "SHOW server_version_num;",  # fits one command
    database.password_statement("app", Secret("q" * 48))[0],  # rotation's ALTER ROLE
    AWKWARD,
    _role_sql(),  # several KB
    AWKWARD * 300,  # ~45 KB: more than 100 chunks, so three-digit chunk names
    "x" * 20000 + os.urandom(3000).hex(),  # poorly compressible
], ids=["tiny", "alter-role", "awkward", "roles", "huge", "random"])
def test_every_command_fits_and_the_sql_arrives_intact(sql: str, db: TaskCoolify) -> None:
    before = _leftovers(db)
    commands = sql_task_commands(sql, "provision_admin", uuid.uuid4().hex[:10])
    assert commands and all(len(c) <= TASK_COMMAND_MAX for c in commands)
    if len(commands) > 2:  # chunks as large as fit: a writer is short by less than one base64 quantum
        assert all(len(c) > TASK_COMMAND_MAX - 4 for c in commands[:-2]), [len(c) for c in commands]
    for command in commands:
        code, output = db.run(command)
        assert code == 0, output
    assert output.splitlines() == ["psql-ok", "PROVISION_RC=0"]
    received, args = _received(db)
    assert received in (sql, sql + "\n")  # byte for byte (a here-document ends with a newline)
    assert args[args.index("-U") + 1] == "provision_admin" and args[args.index("-d") + 1] == "app"
    assert _leftovers(db) == before


def test_run_sql_through_the_api_runs_each_command_in_order_with_one_task(db: TaskCoolify,
                                                                          config: EnvConfig) -> None:  # noqa: F811
    backend = _backend(db, config)
    versions = 0
    for sql, user in ((_role_sql(), "provision_admin"), (AWKWARD * 40, None), ("SELECT 1;", "app")):
        db.requests.clear()
        db.commands.clear()
        before = _leftovers(db)
        output = backend.run_sql(target(config), existing(), sql, user=user, purpose="sql")
        assert output == "psql-ok"  # PROVISION_RC=0 taken off
        received, args = _received(db)
        assert received in (sql, sql + "\n")
        assert args[args.index("-U") + 1] == (user or "provision_admin") and "ON_ERROR_STOP=1" in args
        assert all(len(c) <= TASK_COMMAND_MAX for c in db.commands)
        assert _leftovers(db) == before  # the directory is gone
        assert not db.tasks  # and so is the task
        versions += db.requests.count(("GET", "/version"))
        tasks = [r for r in db.requests if r[1].startswith(TASKS)]
        creates = [r for r in tasks if r == ("POST", TASKS)]
        patches = [r for r in tasks if r[0] == "PATCH"]
        executes = [r for r in tasks if r[1].endswith("/execute")]
        assert len(creates) == 1 and len(patches) == len(db.commands) - 1 == len(executes) - 1
        assert tasks[-1] == ("DELETE", f"{TASKS}/T")
    assert db.names[-1] == "provision-shop-dev-sql"  # what Coolify's TaskFailed notification names
    assert len(db.commands) == 1  # SELECT 1 fits one command
    assert versions == 1  # asked once per instance, before its first task


def test_the_roles_run_from_the_containers_copy_in_one_command(db: TaskCoolify,
                                                               config: EnvConfig) -> None:  # noqa: F811
    sql = _role_sql()
    db.environment[ROLES_ENV] = roles_env_payload(sql, "provision_admin")
    output = _backend(db, config).run_sql(target(config), existing(), sql, user="provision_admin", purpose="roles")
    assert output == "psql-ok"
    received, args = _received(db)
    assert received in (sql, sql + "\n") and args[args.index("-U") + 1] == "provision_admin"
    tasks = [r for r in db.requests if r[1].startswith(TASKS)]
    assert tasks == [("POST", TASKS), ("POST", f"{TASKS}/T/execute"), ("GET", f"{TASKS}/T/executions"),
                     ("DELETE", f"{TASKS}/T")]
    assert len(db.commands) == 1 and len(db.commands[0]) <= TASK_COMMAND_MAX


@pytest.mark.parametrize("held", ["", "older", "other-user"])
def test_a_stale_or_missing_copy_runs_nothing_and_the_sql_is_sent_instead(held: str, db: TaskCoolify,
                                                                          config: EnvConfig) -> None:  # noqa: F811
    sql = _role_sql()
    if held == "older":
        db.environment[ROLES_ENV] = roles_env_payload(sql.replace("COMMIT;", "SELECT 1;\nCOMMIT;"), "provision_admin")
    elif held == "other-user":
        db.environment[ROLES_ENV] = roles_env_payload(sql, "app")
    output = _backend(db, config).run_sql(target(config), existing(), sql, user="provision_admin", purpose="roles")
    assert output == "psql-ok"
    received, _ = _received(db)
    assert received in (sql, sql + "\n")  # the sent one, not the container's
    assert db.commands[0].startswith(f"E=${ROLES_ENV};") and len(db.commands) > 2


def test_the_roles_sql_is_the_same_for_the_same_inputs() -> None:
    assert _role_sql() == _role_sql()  # so the container's copy can be compared with it
    wanted = roles.Roles.of({"db_user": "app"})
    one = {name: Secret("p" * 48) for name in ("DB_PASSWORD", "AUTHENTICATOR_PASSWORD", "DB_ADMIN_PASSWORD")}
    other = {**one, "DB_ADMIN_PASSWORD": Secret("o" * 48)}
    first, second = roles.ensure_sql(wanted, "app", one), roles.ensure_sql(wanted, "app", other)
    salts = {re.findall(r"SCRAM-SHA-256\$4096:([^$]+)\$", text)[0] for text in (first, second)}
    assert len(salts) == 2  # a salt no other project shares (derived from its own admin password)


def test_the_roles_sql_takes_few_tasks(config: EnvConfig) -> None:  # noqa: F811
    commands = sql_task_commands(_role_sql(), "provision_admin", "0123456789")
    assert len(commands) <= 13, [len(c) for c in commands]


def test_a_secret_never_travels_in_a_command(db: TaskCoolify, config: EnvConfig) -> None:  # noqa: F811
    password = "s3cret-" + "z" * 41
    wanted = roles.Roles.of({"db_user": "app"})
    secrets = {name: Secret(password) for name in ("DB_PASSWORD", "AUTHENTICATOR_PASSWORD", "DB_ADMIN_PASSWORD")}
    sql = roles.ensure_sql(wanted, "app", secrets)
    assert password not in sql  # SCRAM verifiers only
    _backend(db, config).run_sql(target(config), existing(), sql, user="provision_admin", purpose="roles")
    assert db.commands and not any(password in c for c in db.commands)
    assert not any(password in json.dumps(v) for v in db.bodies.values())


def test_a_failed_chunk_removes_what_was_written_and_the_task(db: TaskCoolify, config: EnvConfig) -> None:  # noqa: F811
    before = _leftovers(db)
    real = db.run
    calls: list[str] = []

    def third_fails(command: str) -> tuple[int, str]:
        calls.append(command)
        return (1, "sh: 1: cannot create: No space left on device") if len(calls) == 3 else real(command)

    db.run = third_fails  # type: ignore[method-assign]
    with pytest.raises(ProvisionError, match="No space left on device"):
        _backend(db, config).run_sql(target(config), existing(), _role_sql(), user="provision_admin")
    assert calls[-1].startswith("rm -rf /tmp/provision.")  # the best-effort clean-up
    assert _leftovers(db) == before and not db.tasks
    assert not db.capture.with_suffix(".sql").exists()  # psql never ran


def test_in_the_api_container_nothing_runs_and_nothing_is_left(tmp_path: Path, config: EnvConfig) -> None:  # noqa: F811
    api = TaskCoolify(_bin(tmp_path, psql=False), tmp_path / "capture")
    before = _leftovers(api)
    for sql in ("SELECT 1;", _role_sql()):
        with pytest.raises(ProvisionError, match="PROVISION_WRONG_CONTAINER"):
            _backend(api, config).run_sql(target(config), existing(), sql)
        assert len(api.commands) == 1  # refused by the first command's guard
        api.commands.clear()
    assert _leftovers(api) == before


def test_a_lost_chunk_runs_nothing(db: TaskCoolify, config: EnvConfig) -> None:  # noqa: F811
    """A chunk that vanished (a db container re-created between two tasks loses /tmp): gunzip's check fails."""
    real = db.run
    count = [0]

    def drop_second(command: str) -> tuple[int, str]:
        count[0] += 1
        if count[0] == 2:
            return 0, ""  # "succeeded" without writing
        return real(command)

    db.run = drop_second  # type: ignore[method-assign]
    with pytest.raises(ProvisionError, match="PROVISION_RC=1|unexpected end of file|crc|invalid"):
        _backend(db, config).run_sql(target(config), existing(), _role_sql(), user="provision_admin")
    assert not db.capture.with_suffix(".sql").exists()


# --- the guard ------------------------------------------------------------------------------------------
def test_a_command_over_255_characters_is_refused_before_any_request(db: TaskCoolify, config: EnvConfig) -> None:  # noqa: F811
    backend = _backend(db, config)
    with pytest.raises(ProvisionError) as info:
        backend.tasks.run_task(S, "db", ["true", "x" * 256], timeout=10, name="provision-shop-dev-sql")
    assert "256 characters" in str(info.value) and "varchar(255)" in str(info.value)
    assert "2023_12_31_173041_create_scheduled_tasks_table.php:19" in str(info.value)
    assert db.requests == []


# --- the version gate -----------------------------------------------------------------------------------
def test_an_older_coolify_is_refused_before_the_first_change(db: TaskCoolify, config: EnvConfig) -> None:  # noqa: F811
    db.version = "4.2.0"
    backend = _backend(db, config)
    backend.observe(target(config), None)  # reading needs no version: a no-op run sends no GET /version
    assert ("GET", "/version") not in db.requests
    with pytest.raises(NotSupported) as info, backend.lock(target(config), None, timeout=1):
        pass
    assert str(info.value).count("\n") == 0 and "4.2.0" in str(info.value) and "4.3.0" in str(info.value)
    with pytest.raises(NotSupported):
        backend.run_sql(target(config), existing(), "SELECT 1;")
    assert db.requests.count(("GET", "/version")) == 1  # once per instance
    assert not any(r[0] != "GET" for r in db.requests)  # nothing was created, no lock taken


@pytest.mark.parametrize("version", ["4.3.0", "4.3.11", "v4.4.0-beta.2", "5.0", "nightly", ""])
def test_a_current_or_unreadable_version_passes(db: TaskCoolify, config: EnvConfig, version: str) -> None:  # noqa: F811
    db.version = version
    backend = _backend(db, config)
    assert backend.run_sql(target(config), existing(), "SELECT 1;") == "psql-ok"
    assert backend.run_sql(target(config), existing(), "SELECT 2;") == "psql-ok"
    assert db.requests.count(("GET", "/version")) == 1


@pytest.mark.parametrize("version", ["4.2.0", "4.2.9", "4.0.0-beta.420.7", "3.12.36"])
def test_older_versions_are_refused(db: TaskCoolify, config: EnvConfig, version: str) -> None:  # noqa: F811
    db.version = version
    with pytest.raises(NotSupported, match=re.escape(f"version {version}; provision needs 4.3.0 or newer")):
        _backend(db, config).run_sql(target(config), existing(), "SELECT 1;")
    assert not any(r[0] == "POST" for r in db.requests)


def test_a_container_replaced_between_two_commands_is_a_db_still_starting(db: TaskCoolify,
                                                                           config: EnvConfig) -> None:  # noqa: F811
    """A restart (Coolify re-creates the containers) between two commands: the next finds no directory, nothing
    ran: DatabaseStarting, so the roles' wait (Engine.ensure_roles) tries the whole SQL again."""
    real = db.run
    count = [0]

    def replaced_after_the_first(command: str) -> tuple[int, str]:
        count[0] += 1
        code, output = real(command)
        if count[0] == 1:  # the old container, and its /tmp, are gone
            directory = re.search(r"mkdir -m700 (\S+)&&", command)
            assert directory
            shutil.rmtree(db.here(directory.group(1)))
        return code, output

    db.run = replaced_after_the_first  # type: ignore[method-assign]
    with pytest.raises(ProvisionError, match="was replaced while the task's commands ran") as info:
        _backend(db, config).run_sql(target(config), existing(), _role_sql(), user="provision_admin")
    assert isinstance(info.value, DatabaseStarting) and not db.capture.with_suffix(".sql").exists()


def test_a_task_killed_with_its_container_is_a_db_still_starting(db: TaskCoolify, config: EnvConfig) -> None:  # noqa: F811
    """Exit 137: the exec was SIGKILLed when a restart stopped its container (seen under load right after an
    update): DatabaseStarting, so the roles' wait sends the whole (idempotent, one-transaction) SQL again; any
    other exit code stays a plain failure."""
    db.run = lambda command: (137, "")  # type: ignore[method-assign]
    with pytest.raises(DatabaseStarting, match="exit code: 137"):
        _backend(db, config).run_sql(target(config), existing(), "SELECT 1;")
    for said in ("Error response from daemon: cannot exec in a deleted state: unknown",
                 "Error response from daemon: cannot exec in a stopped state: unknown",
                 "Error response from daemon: container 3f2a9c is not running"):
        db.run = lambda command, said=said: (126, said)  # type: ignore[method-assign]
        with pytest.raises(DatabaseStarting, match="daemon"):
            _backend(db, config).run_sql(target(config), existing(), "SELECT 1;")
    db.run = lambda command: (3, "")  # type: ignore[method-assign]
    with pytest.raises(ProvisionError) as info:
        _backend(db, config).run_sql(target(config), existing(), "SELECT 1;")
    assert not isinstance(info.value, DatabaseStarting)
