"""Fakes injected in unit tests: a compose runner that answers from a table, and a backend that keeps its
stacks in memory."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from provision.backends.base import Adopted
from provision.core.config import EnvConfig, ProjectSpec
from provision.core.errors import CommandFailed, HealthTimeout, ProvisionError
from provision.core.model import (
    Destroyed,
    Endpoints,
    Handle,
    LockInfo,
    Observed,
    Ports,
    Prepared,
    ServiceState,
    Target,
    Usage,
)
from provision.core.planner import Plan
from provision.core.render import RenderedStack, stack_hash
from provision.core.secrets import Secret, SecretURL, generate_missing
from provision.infra.commands import Completed
from provision.infra.database import ROW_COUNTS_SQL, DbAccess


@dataclass
class FakeRunner:
    """Answers commands by the first matching argv fragment; records every call; unknown argv raises."""

    answers: list[tuple[tuple[str, ...], Completed]] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    envs: list[Mapping[str, str] | None] = field(default_factory=list)

    writes: dict[tuple[str, ...], bytes] = field(default_factory=dict)  # bytes written to a `stdout` file
    inputs: list[bytes] = field(default_factory=list)  # what each call read from its `stdin` file

    def on(self, *fragment: str, returncode: int = 0, stdout: str = "", stderr: str = "",
           writes: bytes | None = None) -> FakeRunner:
        self.answers.append((fragment, Completed(fragment, returncode, stdout, stderr)))
        if writes is not None:
            self.writes[fragment] = writes
        return self

    def run(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
            stdout: IO[bytes] | None = None, stdin: IO[bytes] | None = None) -> Completed:
        argv = tuple(argv)
        self.calls.append(argv)
        self.envs.append(env)
        if stdin is not None:
            self.inputs.append(stdin.read())
        for fragment, answer in self.answers:
            if _contains(argv, fragment):
                if stdout is not None and fragment in self.writes:
                    stdout.write(self.writes[fragment])
                return Completed(argv, answer.returncode, answer.stdout, answer.stderr)
        raise AssertionError(f"unexpected command: {argv}")

    def stream(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Iterator[str]:
        """The matching answer's stdout, line by line."""
        yield from self.run(argv, timeout=0, env=env).stdout.splitlines(keepends=True)


def _contains(argv: tuple[str, ...], fragment: tuple[str, ...]) -> bool:
    n = len(fragment)
    return any(argv[i:i + n] == fragment for i in range(len(argv) - n + 1))


@dataclass(frozen=True)
class MemoryHandle:
    project: str

    def to_dict(self) -> dict[str, str]:
        return {"project": self.project}


@dataclass
class MemoryBackend:
    """Keeps 'deployed' stacks in a dict and records every changing call."""

    name: str = "memory"
    dumps_before_delete: bool = True
    deployed: dict[str, dict[str, str]] = field(default_factory=dict)  # project -> service hashes
    running: dict[str, bool] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    statements: list[tuple[str | None, str]] = field(default_factory=list)  # (user, sql) run in the db
    healthy: bool = True
    broken_marker: str | None = None  # wait() fails while the applied text contains this
    secrets: dict[str, Mapping[str, object]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    drift: str | None = None
    extra_deployed: tuple[str, ...] = ()
    locked: list[str] = field(default_factory=list)  # projects a lock was taken for, in order
    data_majors: dict[str, int] = field(default_factory=dict)  # project -> the major of its data directory
    refuse: ProvisionError | None = None  # what preflight raises
    log_lines: tuple[str, ...] = ()  # what logs yields, as it is (this backend redacts nothing)

    def usage(self, config: EnvConfig, projects: Collection[str] | None) -> dict[str, dict[str, Usage]]:
        return {p: {"db": Usage(memory_used_bytes=1)} for p in (self.deployed if projects is None else projects)
                if p in self.deployed}

    def describe(self) -> str:
        return "Memory provider"

    def load_handle(self, data: Mapping[str, object]) -> MemoryHandle | None:
        return MemoryHandle(str(data["project"])) if data.get("project") else None

    def observe(self, target: Target, known: Handle | None) -> Observed:
        hashes = self.deployed.get(target.project)
        if hashes is None:
            return Observed(exists=False)
        state = "running" if self.running[target.project] else "exited"
        return Observed(exists=True, config_hash=stack_hash(hashes), applied_text=self.texts.get(target.project),
                        services={s: ServiceState(state) for s in hashes}, drift=self.drift,
                        handle=MemoryHandle(target.project))

    def prepare(self, target: Target, observed: Observed, stored: Mapping[str, Secret], *,
                create: bool = True) -> Prepared:
        if not create:
            return Prepared(secrets=stored, ports=Ports(1, 2))
        secrets = generate_missing(stored)
        return Prepared(secrets=secrets, ports=Ports(1, 2), new_secrets=secrets != dict(stored))

    def preflight(self, target: Target, stack: RenderedStack) -> None:
        if self.refuse is not None:
            raise self.refuse

    def apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
              plan: Plan) -> MemoryHandle:
        self.calls.append(f"apply:{plan.action.value}")
        self.texts[target.project] = stack.text
        self.deployed[target.project] = dict(stack.service_hashes) or {"from-text": stack.config_hash}
        self.running[target.project] = True
        return MemoryHandle(target.project)

    def wait(self, target: Target, handle: Handle | None, prepared: Prepared, *, timeout: float,
             settled: Observed | None = None) -> Endpoints:
        broken = self.broken_marker and self.broken_marker in self.texts.get(target.project, "")
        if not self.healthy or broken:
            raise HealthTimeout("not healthy", logs="db-1 | boom")
        return self.endpoints(target, handle, prepared)

    def endpoints(self, target: Target, handle: Handle | None, prepared: Prepared) -> Endpoints:
        password = prepared.secrets["DB_PASSWORD"].reveal() if prepared.secrets else ""
        return Endpoints("http://127.0.0.1:1", SecretURL(f"postgresql://app:{password}@127.0.0.1:2/app"))

    def control(self, target: Target, observed: Observed, verb: str, *, prepared: Prepared | None = None) -> bool:
        was = observed.running
        if (verb == "stop" and not was) or (verb == "start" and was):
            return False
        self.calls.append(verb)
        self.running[target.project] = verb != "stop"
        return True

    def destroy(self, target: Target, observed: Observed, *, delete_data: bool,
                prepared: Prepared | None = None) -> Destroyed:
        if not observed.exists and not delete_data:
            return Destroyed(changed=False, messages=("kept data",))
        self.calls.append(f"destroy:{delete_data}")
        self.deployed.pop(target.project, None)
        return Destroyed(changed=True, messages=("removed",))

    def adopt(self, target: Target) -> Adopted:
        return Adopted(changed=False)

    def lock(self, target: Target, known: Handle | None, *, timeout: float) -> AbstractContextManager[None]:
        self.locked.append(target.project)
        return nullcontext()

    def locks(self, config: EnvConfig) -> list[LockInfo]:
        return []

    def unlock(self, target: Target) -> bool:
        return False

    def logs(self, target: Target, observed: Observed, *, service: str | None, tail: int,
             since: object = None, follow: bool = False) -> Iterator[str]:
        yield from self.log_lines or ("",)

    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        self.statements.append((user, sql))
        return ""

    def image_major(self, image: str) -> int:
        return 17 if image.endswith(":17") else 15

    def data_major(self, target: Target, image: str) -> int | None:
        return self.data_majors.get(target.project)

    def find_volume(self, target: Target, volume_key: str) -> str | None:
        return None

    def observe_env(self, config: EnvConfig, known: Mapping[str, Handle], *,
                    full: bool = False) -> dict[str, Observed]:
        found = {p: self.observe(Target(config, config.project(p)), known.get(p)) for p in self.deployed}
        return {**found, **{p: Observed(exists=True) for p in self.extra_deployed}}


DUMPS = Path(__file__).resolve().parent.parent / "fixtures" / "dumps"
ROWS_MARK = b"\n--provision-test-rows="


def _major(image: str) -> int:
    return 17 if image.endswith(":17") else 15


@dataclass
class DataBackend(MemoryBackend):
    """A MemoryBackend whose stacks have data: each project's volumes (compose key -> PostgreSQL major and table
    rows), the one its stack mounts, and a db container `FakeDatabase` runs the client tools in. A stack whose
    image is another major than its volume's does not come up (as PostgreSQL refuses such a data directory)."""

    volumes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # project -> key -> volume
    mounted: dict[str, str] = field(default_factory=dict)  # project -> the key its stack mounts
    images: dict[str, str] = field(default_factory=dict)  # project -> the db image of its stack
    verifiers: dict[str, str] = field(default_factory=dict)  # project -> its owner role's stored SCRAM verifier
    die_on: str | None = None  # run_sql of this purpose runs, then the process "is killed" (KeyboardInterrupt)
    ignore: str | None = None  # run_sql of this purpose does nothing (a statement that did not take)

    def database(self, project: str) -> dict[str, Any]:
        """The volume the project's stack mounts now."""
        return self.volumes[project][self.mounted[project]]

    def apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
              plan: Plan) -> MemoryHandle:
        handle = super().apply(target, observed, stack, prepared, plan)
        found = re.search(r'"([\w-]+):/var/lib/postgresql/data"', stack.text)
        key = found.group(1) if found else "pgdata"
        self.mounted[target.project] = key
        self.volumes.setdefault(target.project, {}).setdefault(key, {"major": _major(target.images.db), "rows": {}})
        self.images[target.project] = target.images.db
        return handle

    def wait(self, target: Target, handle: Handle | None, prepared: Prepared, *, timeout: float,
             settled: Observed | None = None) -> Endpoints:
        project = target.project
        if project in self.mounted and _major(self.images[project]) != self.database(project)["major"]:
            raise HealthTimeout(f"db: its data directory is PostgreSQL {self.database(project)['major']}",
                                logs="db-1 | FATAL: database files are incompatible with server")
        return super().wait(target, handle, prepared, timeout=timeout, settled=settled)

    def endpoints(self, target: Target, handle: Handle | None, prepared: Prepared) -> Endpoints:
        found = super().endpoints(target, handle, prepared)
        return Endpoints(found.api_url, found.db_url, db_url_scope="internal")  # not published to this machine

    def destroy(self, target: Target, observed: Observed, *, delete_data: bool,
                prepared: Prepared | None = None) -> Destroyed:
        done = super().destroy(target, observed, delete_data=delete_data)
        if delete_data:
            self.volumes.pop(target.project, None)
            self.mounted.pop(target.project, None)
        return done

    def exec_argv(self, target: Target, service: str, command: list[str], *, env_names: tuple[str, ...] = (),
                  tty: bool = False) -> list[str]:
        return ["mem-exec", target.project, *command]

    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        self.statements.append((user, sql))
        if purpose == self.ignore:
            return ""
        altered = re.match(r"ALTER ROLE \S+ PASSWORD '([^']+)'", sql)
        if altered:
            self.verifiers[target.project] = altered.group(1)
        if purpose == self.die_on:
            self.die_on = None
            raise KeyboardInterrupt
        if sql.startswith("SELECT rolpassword"):
            return self.verifiers.get(target.project, "") + "\n"
        if "pg_stat_activity" in sql:
            return "0\n"
        return ""

    def image_major(self, image: str) -> int:
        return _major(image)

    def data_major(self, target: Target, image: str) -> int | None:
        volumes = self.volumes.get(target.project)
        key = self.mounted.get(target.project)
        return int(volumes[key]["major"]) if volumes and key in volumes else None

    def find_volume(self, target: Target, volume_key: str) -> str | None:
        return f"{target.project}_{volume_key}" if volume_key in self.volumes.get(target.project, {}) else None

    def drop_kept(self, target: Target, volume_key: str) -> str | None:
        if self.mounted.get(target.project) == volume_key:
            raise ProvisionError(f"volume key {volume_key!r} is the one the stack mounts: it is not deleted")
        gone = self.volumes.get(target.project, {}).pop(volume_key, None)
        return f"{target.project}_{volume_key}" if gone is not None else None


@dataclass
class ScratchBackend(DataBackend):
    """A DataBackend that RestoresDumps: `scratch_server` makes the volume and yields an access FakeDatabase routes
    to it (`mem-exec <project>@<key>`); `scratch_dies`: the server does not stop cleanly (CommandFailed)."""

    scratch_dies: bool = False
    scratches: list[str] = field(default_factory=list)  # the volume keys scratch servers were started on

    @contextmanager
    def scratch_server(self, target: Target, volume_key: str, *, image: str, admin: str, dbname: str,
                       password: Secret, timeout: float) -> Iterator[DbAccess]:
        volumes = self.volumes.setdefault(target.project, {})
        if volume_key in volumes:
            raise ProvisionError(f"volume {volume_key} exists already")
        volumes[volume_key] = {"major": _major(image), "rows": {}}
        self.scratches.append(volume_key)
        yield DbAccess(prefix=("mem-exec", f"{target.project}@{volume_key}"), host="/sock", port=5432, user=admin,
                       dbname=dbname, where="in a one-off server")
        if self.scratch_dies:
            raise CommandFailed(["docker", "stop"], 137, "killed", hint="stop the one-off server cleanly")


@dataclass
class ServersBackend(DataBackend):
    """A DataBackend that spreads stacks over servers `a` and `b` and moves them between the two."""

    server_of: dict[str, str] = field(default_factory=dict)
    stored: dict[str, dict[str, Secret]] = field(default_factory=dict)  # project -> the secrets it was given

    def listed_servers(self, config: EnvConfig) -> tuple[str, ...]:
        return ("a", "b")

    def place(self, config: EnvConfig, projects: Sequence[ProjectSpec]) -> dict[str, str]:
        return {p.name: "a" for p in projects}

    def observe(self, target: Target, known: Handle | None) -> Observed:
        found = super().observe(target, known)
        return replace(found, server=self.server_of.get(target.project)) if found.exists else found

    def prepare(self, target: Target, observed: Observed, stored: Mapping[str, Secret], *,
                create: bool = True) -> Prepared:
        prepared = super().prepare(target, observed, stored, create=create)
        self.stored[target.project] = dict(prepared.secrets)
        return prepared

    def apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
              plan: Plan) -> MemoryHandle:
        self.server_of[target.project] = target.spec.server or self.server_of.get(target.project) or "a"
        return super().apply(target, observed, stack, prepared, plan)

    def _books(self) -> list[dict[str, Any]]:
        return [self.deployed, self.running, self.texts, self.volumes, self.mounted, self.images, self.server_of]

    def set_aside(self, target: Target, observed: Observed, label: str) -> tuple[str, dict[str, Secret]]:
        name = f"{target.project}-aside-{label}"
        for book in self._books():
            if target.project in book:
                book[name] = book.pop(target.project)
        self.running[name] = False
        return name, dict(self.stored[target.project])

    def put_back(self, target: Target, name: str) -> None:
        for book in self._books():
            if name in book:
                book[target.project] = book.pop(name)
        self.running[target.project] = True

    def drop_set_aside(self, target: Target) -> list[str]:
        names = sorted(n for n in self.deployed if n.startswith(f"{target.project}-aside-"))
        for name in names:
            for book in self._books():
                book.pop(name, None)
        return names


@dataclass
class FakeDatabase:
    """Runs PostgreSQL's client tools (`mem-exec <project> <tool> ...`) against a DataBackend's volumes: pg_dump
    writes a real dump of the volume's major with its rows appended, pg_restore puts a dump's rows in, psql
    answers the version, row counts and NOTIFY. `fail_restores`: so many pg_restores fail (nothing restored);
    `lose_rows`: so many pg_restores restore one row too few."""

    backend: DataBackend
    fail_restores: int = 0
    lose_rows: int = 0
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
            stdout: IO[bytes] | None = None, stdin: IO[bytes] | None = None) -> Completed:
        argv = tuple(argv)
        self.calls.append(argv)
        assert argv[0] == "mem-exec", argv
        project, _, key = argv[1].partition("@")  # <project>@<volume key>: a one-off server on that volume
        db = self.backend.volumes[project][key] if key else self.backend.database(project)
        tool = argv[2]
        if tool == "pg_dump":
            assert stdout is not None
            rows = json.dumps(db["rows"]).encode()
            stdout.write((DUMPS / f"pg{db['major']}.dump").read_bytes() + ROWS_MARK + rows)
            return Completed(argv, 0, "", "")
        if tool == "pg_restore":
            assert stdin is not None
            data = stdin.read()
            if self.fail_restores:
                self.fail_restores -= 1
                return Completed(argv, 1, "", "pg_restore: error: could not execute query")
            rows = json.loads(data.split(ROWS_MARK)[1])
            if self.lose_rows and rows:
                self.lose_rows -= 1
                table = sorted(rows)[0]
                rows = {**rows, table: rows[table] - 1}
            db["rows"] = rows
            return Completed(argv, 0, "", "")
        assert tool == "psql", argv
        if "--file=-" in argv:  # a script (the roles)
            return Completed(argv, 0, "", "")
        sql = argv[argv.index("--command") + 1]
        if "server_version_num" in sql:
            return Completed(argv, 0, f"{db['major'] * 10000 + 4}\n", "")
        if sql == ROW_COUNTS_SQL:
            return Completed(argv, 0, "".join(f"{t}|{n}\n" for t, n in sorted(db["rows"].items())), "")
        if sql.startswith("NOTIFY"):
            return Completed(argv, 0, "", "")
        raise AssertionError(f"unexpected SQL: {sql}")

    def stream(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Iterator[str]:
        raise AssertionError(f"unexpected stream: {argv}")
