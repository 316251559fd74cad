"""PostgreSQL's client tools driven through a fake runner: the argv they get, where secrets go, what a
dump's header says, and that a failed dump leaves no file."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from provision.core.errors import BackupError, CommandFailed
from provision.core.secrets import Secret
from provision.infra import database
from provision.state import backups
from tests.unit.fakes import FakeRunner

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dumps"
PASSWORD = Secret("s3cret-pw")
IN_CONTAINER = database.DbAccess(("docker", "exec", "--interactive", "--env", "PGPASSWORD", "shop-db-1"),
                                 "127.0.0.1", 5432, "app", "app", {"PGPASSWORD": PASSWORD}, where="in the db container")


@pytest.mark.parametrize(("name", "major"), [("pg15.dump", 15), ("pg17.dump", 17)])
def test_the_header_of_a_real_dump_names_its_server(name: str, major: int) -> None:
    header = database.read_header(FIXTURES / name)
    assert header.major == major and header.database == "app" and header.server_version.startswith(f"{major}.")


def test_what_is_no_custom_format_dump_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.sql"
    plain.write_text("-- PostgreSQL database dump\nCREATE TABLE t ();\n")
    with pytest.raises(BackupError, match="not a pg_dump custom-format archive"):
        database.read_header(plain)
    cut = tmp_path / "cut.dump"
    cut.write_bytes((FIXTURES / "pg15.dump").read_bytes()[:30])
    with pytest.raises(BackupError, match="cut short"):
        database.read_header(cut)


def test_dump_writes_a_private_file_and_keeps_the_password_out_of_argv(tmp_path: Path) -> None:
    runner = FakeRunner().on("pg_dump", writes=(FIXTURES / "pg15.dump").read_bytes())
    path = tmp_path / "x.dump"
    database.dump(IN_CONTAINER, runner, path, timeout=60)
    assert path.read_bytes() == (FIXTURES / "pg15.dump").read_bytes() and path.stat().st_mode & 0o777 == 0o600
    [argv] = runner.calls
    assert argv[:6] == IN_CONTAINER.prefix and "pg_dump" in argv and "--format=custom" in argv
    assert PASSWORD.reveal() not in " ".join(argv) and runner.envs[0] is not None
    assert runner.envs[0]["PGPASSWORD"] == PASSWORD.reveal()


def test_a_failed_or_garbled_dump_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "x.dump"
    with pytest.raises(CommandFailed, match="the dump was not written"):
        database.dump(IN_CONTAINER, FakeRunner().on("pg_dump", returncode=1, stderr="connection refused",
                                                    writes=b"PGDMP\x01"), path, timeout=60)
    with pytest.raises(BackupError):
        database.dump(IN_CONTAINER, FakeRunner().on("pg_dump", writes=b"not a dump"), path, timeout=60)
    assert list(tmp_path.iterdir()) == []


def test_restore_runs_in_one_transaction_from_stdin() -> None:
    runner = FakeRunner().on("pg_restore")
    database.restore(IN_CONTAINER, runner, FIXTURES / "pg15.dump", timeout=60)
    [argv] = runner.calls
    for flag in ("--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--no-owner"):
        assert flag in argv
    assert runner.inputs == [(FIXTURES / "pg15.dump").read_bytes()]
    with pytest.raises(CommandFailed, match="nothing was restored"):
        database.restore(IN_CONTAINER, FakeRunner().on("pg_restore", returncode=1), FIXTURES / "pg15.dump",
                         timeout=60)


def test_row_counts_and_versions_parse_psql_output() -> None:
    runner = FakeRunner().on("show server_version_num", stdout="170012\n").on(
        "psql", stdout="public.items|3\npublic.odd|name|0\n")
    assert database.server_major(IN_CONTAINER, runner) == 17
    assert database.row_counts(IN_CONTAINER, runner) == {"public.items": 3, "public.odd|name": 0}


def test_a_new_password_is_set_as_a_scram_verifier() -> None:
    statement, verifier = database.password_statement('we"ird', Secret("n3w-password"))
    assert statement == f'ALTER ROLE "we""ird" PASSWORD \'{verifier}\';\n' and verifier.startswith("SCRAM-SHA-256$4096:")
    assert "n3w-password" not in statement
    assert database.verifier_check("o'brien", verifier) == (
        f"SELECT rolpassword = '{verifier}' FROM pg_authid WHERE rolname = 'o''brien';\n")


def test_the_scram_verifier_is_the_one_postgresql_computes() -> None:
    salt = b"0123456789abcdef"
    verifier = database.scram_verifier(Secret("pencil"), salt=salt)
    method, _, rest = verifier.partition("$")
    params, stored, server = rest.split("$")[0], *rest.split("$")[1].split(":")
    assert method == "SCRAM-SHA-256" and params == f"4096:{base64.b64encode(salt).decode()}"
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server) == hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def test_backups_are_listed_newest_first_and_pruned(tmp_path: Path) -> None:
    folder = backups.directory(tmp_path, "dev", "shop")
    made = []
    for n in range(3):
        path = backups.new_path(folder)
        path.write_bytes(b"PGDMP")
        made.append(backups.write_manifest(path, {"n": n}))
    assert folder.stat().st_mode & 0o777 == 0o700
    assert [b.manifest["n"] for b in backups.listing(folder)] == [2, 1, 0]
    assert backups.prune(folder, 1) == [made[1].path, made[0].path]
    assert [b.path for b in backups.listing(folder)] == [made[2].path] and not made[0].manifest_path.exists()
