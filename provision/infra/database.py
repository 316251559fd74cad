"""PostgreSQL's own client tools (pg_dump, pg_restore, psql) run against one project's database, either
inside its db container or from this machine through a published port: dumps, restores, exact row
counts, server versions, password changes. Secrets travel in the child's environment or on its stdin,
never in argv."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets as random
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import BackupError, CommandFailed, ProvisionError
from ..core.secrets import Secret
from .commands import Runner
from .fsutil import open_nofollow, publish_new
from .pgsession import HoldsSessions

# Every base table outside the catalogs, with an exact count (one statement: query_to_xml runs a count per table).
ROW_COUNTS_SQL = """
select format('%I.%I', table_schema, table_name),
       (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', table_schema, table_name),
                                            false, true, '')))[1]::text
from information_schema.tables
where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')
order by 1
"""
DUMP_MAGIC = b"PGDMP"
WRONG_VOLUME = "answers from another data volume"  # in the error of a server that is not (yet) the new one
_NOT_UP_YET = re.compile(r'database "[^"]*" does not exist|could not connect|starting up|shutting down|'
                         r"No such container|is not running|accepting connections|" + re.escape(WRONG_VOLUME))


def not_up_yet(output: str) -> bool:
    """Whether the output of psql in a db container (or of `docker exec` there) says the database is not up yet:
    its container gone or stopped, the server starting or shutting down (initdb's temporary one), not accepting
    connections, POSTGRES_DB not made yet, or the old server of a stack moving to a new volume (WRONG_VOLUME)."""
    return _NOT_UP_YET.search(output) is not None


def psql_in_container(user: str | None = None) -> str:
    """psql inside a db container (official postgres image interface) over its local socket, no password:
    as `user`, or as the bootstrap superuser POSTGRES_USER when None."""
    role = shlex.quote(user) if user is not None else '"$POSTGRES_USER"'
    return f'psql -X -A -t -q -v ON_ERROR_STOP=1 -U {role} -d "$POSTGRES_DB"'


@dataclass(frozen=True)
class DbAccess:
    """How to reach one project's database with PostgreSQL's client tools. `prefix`: what runs them in the
    db container (`docker exec ... <container>`), empty for this machine's own tools."""

    prefix: tuple[str, ...]
    host: str
    port: int
    user: str
    dbname: str
    environment: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    where: str = ""  # for messages: "in the db container" or "from this machine (127.0.0.1:5432)"

    def argv(self, tool: str, *args: str) -> list[str]:
        return [*self.prefix, tool, "--host", self.host, "--port", str(self.port), "--username", self.user, *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, **{key: value.reveal() for key, value in self.environment.items()}}


@dataclass(frozen=True)
class DumpHeader:
    """What a custom-format archive says about itself (read from its header, no tool needed)."""

    server_version: str  # "15.18 (Debian 15.18-0+deb12u1)"
    dump_version: str
    database: str

    @property
    def major(self) -> int:
        return major_of(self.server_version)


def major_of(version: str) -> int:
    """15 from '15.18 (Debian ...)' or 'postgres (PostgreSQL) 15.18'; 9 from '9.6.24' (majors before 10 are
    two numbers, but no image this tool runs is that old)."""
    found = re.search(r"(\d+)(?:\.\d+)?", version)
    if found is None:
        raise BackupError(f"no PostgreSQL version in {version!r}")
    return int(found.group(1))


def query(access: DbAccess, runner: Runner, sql: str, *, timeout: float = 60) -> str:
    """One statement's rows, unaligned (`|` between columns), no headers."""
    result = runner.run(access.argv("psql", "--no-psqlrc", "--no-align", "--tuples-only", "--quiet",
                                    "--set", "ON_ERROR_STOP=1", "--dbname", access.dbname, "--command", sql),
                        timeout=timeout, env=access.env())
    if result.returncode != 0:
        raise CommandFailed(result.argv, result.returncode, result.stderr)
    return result.stdout


def server_major(access: DbAccess, runner: Runner) -> int:
    return int(query(access, runner, "show server_version_num").strip()) // 10000


def row_counts(access: DbAccess, runner: Runner) -> dict[str, int]:
    """Exact row counts of every table, by schema-qualified name."""
    return _parse_counts(query(access, runner, ROW_COUNTS_SQL, timeout=600))


def snapshot_dump(access: DbAccess, runner: Runner, path: Path, *, timeout: float,
                  schema_only: bool = False) -> dict[str, int]:
    """`dump` and `row_counts` of one and the same snapshot, so a database taking writes meanwhile gives counts
    that match the dump: a REPEATABLE READ transaction held open in one psql session exports its snapshot
    (pg_export_snapshot), counts in it, and pg_dump --snapshot dumps exactly it. A runner that cannot hold a
    session (a test's fake) counts, then dumps. `schema_only`: no rows (pg_dump --schema-only)."""
    if not isinstance(runner, HoldsSessions):
        counts = row_counts(access, runner)
        dump(access, runner, path, timeout=timeout, schema_only=schema_only)
        return counts
    argv = access.argv("psql", "--no-psqlrc", "--no-align", "--tuples-only", "--quiet", "--set", "ON_ERROR_STOP=1",
                       "--dbname", access.dbname)
    with runner.session(argv, env=access.env()) as held:
        snapshot = held.step("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();",
                             timeout=60).strip().splitlines()[-1]
        counts = _parse_counts(held.step(ROW_COUNTS_SQL.strip() + ";", timeout=600))
        dump(access, runner, path, timeout=timeout, snapshot=snapshot, schema_only=schema_only)
        held.step("COMMIT;", timeout=60)
    return counts


def _parse_counts(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        name, _, count = line.rpartition("|")
        if name:
            counts[name] = int(count)
    return counts


def dump(access: DbAccess, runner: Runner, path: Path, *, timeout: float, snapshot: str | None = None,
         schema_only: bool = False) -> None:
    """`pg_dump --format=custom` into `path`, a new file: written to `<path>.part` (created with O_CREAT|O_EXCL|
    O_NOFOLLOW, 0600: never an existing file, never through a link) and moved into place only while `path` is
    still free, so `path` is a whole dump or absent and nothing that existed is replaced or written through
    (BackupError). `snapshot`: an exported snapshot to dump (a transaction holding it is open elsewhere)."""
    partial = path.with_name(path.name + ".part")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise BackupError(f"{partial} exists (a file or link left there, perhaps by an interrupted backup): nothing "
                          f"was written; remove it or choose another name") from None
    except OSError as exc:
        raise BackupError(f"{partial}: cannot be created ({exc.strerror}); nothing was written") from exc
    try:
        with os.fdopen(descriptor, "wb") as out:
            taken = [f"--snapshot={snapshot}"] if snapshot else []
            taken += ["--schema-only"] if schema_only else []
            result = runner.run(access.argv("pg_dump", "--format=custom", *taken, "--dbname", access.dbname),
                                timeout=timeout, env=access.env(), stdout=out)
        if result.returncode != 0:
            raise CommandFailed(result.argv, result.returncode, result.stderr, hint="the dump was not written")
        read_header(partial)
        try:
            publish_new(partial, path)
        except FileExistsError:
            raise BackupError(f"{path} appeared while the dump was written: it was left alone and the dump "
                              f"discarded (a backup never overwrites); choose another name") from None
        except OSError as exc:
            raise BackupError(f"{path}: the dump could not be moved into place ({exc.strerror})") from exc
    finally:
        partial.unlink(missing_ok=True)


def restore(access: DbAccess, runner: Runner, path: Path, *, timeout: float) -> None:
    """`pg_restore --clean --if-exists` in one transaction: on any error nothing of the dump is applied."""
    with path.open("rb") as dump_file:
        result = runner.run(access.argv("pg_restore", "--clean", "--if-exists", "--single-transaction",
                                        "--exit-on-error", "--no-owner", "--dbname", access.dbname),
                            timeout=timeout, env=access.env(), stdin=dump_file)
    if result.returncode != 0:
        raise CommandFailed(result.argv, result.returncode, result.stderr,
                            hint="nothing was restored (one transaction, rolled back)")


def restore_fresh(access: DbAccess, runner: Runner, path: Path, *, timeout: float) -> None:
    """`pg_restore` into a database that holds nothing yet (a new volume's), in one transaction: on a server with
    wal_level=minimal its tables, made in that transaction, are written without WAL; on any error nothing is
    applied. The error quotes pg_restore."""
    with path.open("rb") as dump_file:
        result = runner.run(access.argv("pg_restore", "--single-transaction", "--exit-on-error", "--no-owner",
                                        "--dbname", access.dbname),
                            timeout=timeout, env=access.env(), stdin=dump_file)
    if result.returncode != 0:
        raise CommandFailed(result.argv, result.returncode, result.stderr,
                            hint="nothing was restored (one transaction, rolled back)")


def run_script(access: DbAccess, runner: Runner, script: str, *, timeout: float = 120) -> None:
    """A psql script (meta-commands allowed) on psql's stdin, stopping at the first error; never in argv."""
    with tempfile.TemporaryFile() as statements:
        statements.write(script.encode())
        statements.seek(0)
        result = runner.run(access.argv("psql", "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1",
                                        "--dbname", access.dbname, "--file=-"),
                            timeout=timeout, env=access.env(), stdin=statements)
    if result.returncode != 0:
        raise CommandFailed(result.argv, result.returncode, result.stderr)


def restore_masked(access: DbAccess, runner: Runner, path: Path, *, expected: Mapping[str, int] | None,
                   mask: Path | None, timeout: float) -> None:
    """Restore `path` (as `restore`), check the tables have `expected` rows, run the SQL file `mask` and tell
    the API to reload its schema, all in ONE transaction as the access's role: pg_restore writes the dump as a
    script, the checks and the mask are appended, psql runs it with --single-transaction. Nothing of it is
    visible to anyone (the API included) before the mask ran; on any error nothing is applied."""
    try:
        extra = mask.read_text(encoding="utf-8") if mask is not None else ""
    except OSError as exc:
        raise ProvisionError(f"{mask}: cannot be read ({exc.strerror}); nothing was restored") from exc
    script = path.with_name(path.name + f".{random.token_hex(4)}.sql")
    try:
        with os.fdopen(open_nofollow(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as out, \
                path.open("rb") as dump_file:
            made = runner.run(access.argv("pg_restore", "--clean", "--if-exists", "--no-owner", "--file=-"),
                              timeout=timeout, env=access.env(), stdin=dump_file, stdout=out)
        if made.returncode != 0:
            raise CommandFailed(made.argv, made.returncode, made.stderr, hint="nothing was restored")
        with script.open("a", encoding="utf-8") as out:
            out.write("\nRESET ALL;\n")
            for table, count in sorted((expected or {}).items()):
                out.write(f"DO $check$ BEGIN IF (SELECT count(*) FROM {table}) <> {int(count)} THEN RAISE EXCEPTION "
                          f"'row count of %: % expected', {quote_literal(table)}, {int(count)}; END IF; END $check$;\n")
            out.write(f"\n{extra}\n;\nNOTIFY pgrst, 'reload schema';\n")
        with script.open("rb") as whole:
            result = runner.run(access.argv("psql", "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1",
                                            "--single-transaction", "--dbname", access.dbname, "--file=-"),
                                timeout=timeout, env=access.env(), stdin=whole)
    finally:
        script.unlink(missing_ok=True)
    if result.returncode != 0:
        raise CommandFailed(result.argv, result.returncode, result.stderr,
                            hint="nothing was restored nor masked (one transaction, rolled back)")


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def password_statement(role: str, password: Secret) -> tuple[str, str]:
    """(ALTER ROLE statement, the SCRAM-SHA-256 verifier it sets): the plaintext never reaches the server, nor
    a command line, nor a log; `verifier_check(role, verifier)` later proves the role has exactly it."""
    verifier = scram_verifier(password)
    return f"ALTER ROLE {quote_identifier(role)} PASSWORD '{verifier}';\n", verifier


def verifier_check(role: str, verifier: str) -> str:
    """SQL printing `t` when `role`'s stored password is `verifier` (so that password, and no other, logs in)."""
    return (f"SELECT rolpassword = '{verifier}' FROM pg_authid WHERE rolname = "
            f"'{role.replace(chr(39), chr(39) * 2)}';\n")


def scram_verifier(password: Secret, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as PostgreSQL writes it)."""
    salt = salt if salt is not None else random.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.reveal().encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def password_matches(verifier: str, password: Secret) -> bool:
    """True when `verifier` (a SCRAM-SHA-256 verifier as pg_authid stores it) is one of `password`."""
    found = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier.strip())
    if found is None:
        return False
    try:
        salt = base64.b64decode(found.group(2))
    except ValueError:
        return False
    return hmac.compare_digest(scram_verifier(password, iterations=int(found.group(1)), salt=salt), verifier.strip())


def stored_verifier_sql(role: str) -> str:
    """SQL printing `role`'s stored password verifier (pg_authid: the bootstrap superuser only)."""
    return f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role.replace(chr(39), chr(39) * 2)}';\n"


def can_log_in(host: str, port: int, user: str, password: Secret, dbname: str, *, timeout: float = 10) -> bool:
    """Whether `password` logs `user` in through `host:port` (password authentication, as any client outside
    the db container gets it); ProvisionError when the server cannot be reached at all."""
    import psycopg

    try:
        psycopg.connect(host=host, port=port, user=user, password=password.reveal(), dbname=dbname,
                        connect_timeout=max(1, int(timeout)), sslmode="prefer").close()
    except psycopg.OperationalError as exc:
        text = str(exc)
        if "password authentication failed" in text or "no pg_hba.conf entry" in text:
            return False
        raise ProvisionError(f"cannot reach the database at {host}:{port} to check the password: "
                             f"{text.strip().splitlines()[-1] if text.strip() else exc!r}") from exc
    return True


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_header(path: Path) -> DumpHeader:
    """The header of a pg_dump custom-format archive (pg_backup_archiver.c, ReadHead); BackupError for a file
    that is not one (a plain SQL dump, a truncated or corrupt file)."""
    try:
        with path.open("rb") as dump_file:
            data = dump_file.read(4096)  # the header only: a dump can be gigabytes
    except OSError as exc:
        raise BackupError(f"{path}: cannot be read ({exc.strerror})") from exc
    reader = _HeaderReader(data, path)
    if reader.take(5) != DUMP_MAGIC:
        raise BackupError(f"{path}: not a pg_dump custom-format archive (pg_dump --format=custom)")
    major, minor = reader.byte(), reader.byte()
    revision = reader.byte() if (major, minor) > (1, 0) else 0
    version = (major, minor, revision)
    reader.int_size = reader.byte()
    if version >= (1, 7, 0):
        reader.byte()  # offset size
    if reader.byte() != 1:  # archCustom
        raise BackupError(f"{path}: a pg_dump archive, but not in the custom format")
    if version >= (1, 15, 0):
        reader.byte()  # compression algorithm
    else:
        reader.integer()  # compression level
    for _ in range(7):  # creation time: sec, min, hour, day, month, year, isdst
        reader.integer()
    database = reader.text()
    if version < (1, 10, 0):
        raise BackupError(f"{path}: written by a pg_dump too old to name its server version")
    return DumpHeader(server_version=reader.text(), dump_version=reader.text(), database=database)


class _HeaderReader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.offset, self.int_size = data, path, 0, 4

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise BackupError(f"{self.path}: the archive's header is cut short (a truncated or corrupt dump)")
        chunk = self.data[self.offset:self.offset + count]
        self.offset += count
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def integer(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def text(self) -> str:
        length = self.integer()
        return "" if length < 0 else self.take(length).decode("utf-8", errors="replace")
