"""Every request shape the Coolify backend sends, through the emulator's Coolify 4.3.11 rules.

The CLI runs each verb against the emulator (first runs and later runs; the descriptions Coolify holds in the
form provision writes now, and in the form earlier versions wrote), and every response the emulator sent is
checked: a status of 400 or more passes only where the backend expects that refusal (EXPECTED, each with why).
A 422 or a 500 is never expected: it is a request a real Coolify refuses (tests/coolify_emulator/README.md,
"What each route refuses", names the rule). The failures are collected over the whole scenario and reported
together: which verb, which request, what Coolify answered.

Not here (they need a database that answers, i.e. the Docker-mode tests): backup, restore, clone, upgrade-db
and move (their Coolify requests past the dump are the set-aside PATCHes driven in-process below).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from provision.backends.coolify import marks
from tests.coolify.conftest import OWNER, TOKEN, coolify_env, make_sandbox
from tests.coolify_emulator import REALISTIC, CoolifyEmulator
from tests.coolify_emulator.faults import RequestRecord
from tests.coolify_emulator.state import Service
from tests.sandbox import Sandbox

#: (method, path regex over the /api/v1-relative path, statuses, why the backend expects it)
EXPECTED: tuple[tuple[str, str, tuple[int, ...], str], ...] = (
    ("GET", r"/projects/[^/]+/[^/]+", (404,), "an environment looked up before it exists (_find_environment)"),
    ("POST", r"/projects/[^/]+/environments", (409,), "an environment made meanwhile (_ensure_environment)"),
    ("POST", r"/projects/[^/]+/envs", (409,), "a lock another run holds (_acquire)"),
    ("DELETE", r"/projects/[^/]+/envs/\d+", (404,), "a lock released after another run broke it"),
    ("POST", r"/services/[^/]+/(start|stop)", (400,), "already running / already stopped (_action)"),
    ("GET", r"/services/[^/]+", (404,), "a deletion awaited (_await_gone), or a recorded uuid that is gone"),
    ("DELETE", r"/projects/[^/]+(/environments/[^/]+)?", (400,), "a project or env that still holds something"),
    ("GET", r"/services/[^/]+/logs", (400, 404), "logs of a container that is not running (_logs refusals)"),
    ("GET", r"/deploy|/servers/[^/]+/validate", (405,), "doctor's ability probes: 405 once the ability passed"),
)


def expected(record: RequestRecord) -> bool:
    return any(record.method == method and re.fullmatch(path, record.path) and record.status in statuses
               for method, path, statuses, _why in EXPECTED)


@dataclass
class Shapes:
    """Runs CLI verbs and keeps every unexpected refusal (and every verb that failed) for one report."""

    emulator: CoolifyEmulator
    seen: int = 0
    problems: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # "METHOD /path" of every request, for coverage

    def run(self, box: Sandbox, label: str, *args: str, fails: bool = False, env: str | None = None) -> str:
        result = box.cli(*args, check=False, timeout=300, env=env)
        self.check(label)
        if (result.returncode != 0) != fails:
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            self.problems.append(f"{label}: `{' '.join(args)}` exited {result.returncode}: {tail}")
        return result.stdout

    def check(self, label: str) -> None:
        self.emulator.wait_idle(10)
        records = list(self.emulator.requests)[self.seen:]
        self.seen += len(records)
        for record in records:
            self.sent.append(f"{record.method} {_shape(record.path)}")
            if record.status is None or (record.status >= 400 and not expected(record)):
                self.problems.append(f"{label}: {record.method} {record.path} -> {record.status} {record.answer} "
                                     f"(sent {_short(record.body)})")

    def report(self) -> str:
        return "\n".join(self.problems)


def _shape(path: str) -> str:
    return re.sub(r"/[a-z0-9]{24}(?=/|$)", "/{uuid}", re.sub(r"/\d+(?=/|$)", "/{id}", path))


def _short(body: object) -> str:
    text = repr(body)
    return text if len(text) <= 300 else text[:300] + "..."


class FakePsql:
    """The db container's psql for the pure-mode emulator's tasks: reads the SQL out of the backend's task
    commands (one `echo <base64>|base64 -d|psql`, or gzip+base64 chunks written to /tmp/provision.<tag> and then
    run: backend.sql_task_commands; or the container's PROVISION_ROLES, when its sha256 is the one the command
    names: backend.roles_env_command), remembers the verifier an ALTER ROLE sets and shows it back."""

    def __init__(self) -> None:
        self.verifiers: dict[str, str] = {}
        self.chunks: dict[str, dict[str, str]] = {}
        self.drill_mark: str | None = None  # what a drill's marker SQL (service/drills.py _MARK) prints

    def __call__(self, svc: Service, name: str, command: str) -> tuple[int, str]:
        for chunk, directory, number in re.findall(r"echo (\S+)>(/tmp/provision\.[0-9a-f]+)/(\d+)", command):
            self.chunks.setdefault(directory, {})[number] = chunk
        sql = ""
        single = re.search(r"echo (\S+) ?\| ?base64 -d ?\| ?psql", command)
        joined = re.match(r"D=(/tmp/provision\.[0-9a-f]+);", command)
        from_env = re.match(r'E=\$PROVISION_ROLES;\[ "\$\(echo "\$E"\|sha256sum\|cut -c1-32\)" = ([0-9a-f]{32}) \]', command)
        if from_env:  # the environment the db container started with
            payload = (svc.deployed_envs or {}).get("PROVISION_ROLES") or ""
            if hashlib.sha256((payload + "\n").encode()).hexdigest()[:32] != from_env.group(1):
                return 96, "PROVISION_STALE_ENV"
            script = gzip.decompress(base64.b64decode(payload)).decode()
            sql = script.split("<<'", 1)[1].split("\n", 1)[1].rsplit("\n", 2)[0]
        elif single:
            sql = base64.b64decode(single.group(1)).decode()
        elif joined:
            parts = self.chunks.pop(joined.group(1), {})
            script = gzip.decompress(base64.b64decode("".join(parts[k] for k in sorted(parts)))).decode()
            sql = script.split("<<'", 1)[1].split("\n", 1)[1].rsplit("\n", 2)[0]  # the here-document's body
        else:
            return 0, ""  # a chunk written
        for role, verifier in re.findall(r"ROLE \"?(\w+)\"? (?:WITH [^;]*?)?PASSWORD '([^']+)'", sql):
            self.verifiers[role] = verifier
        shown = re.search(r"SELECT rolpassword FROM pg_authid WHERE rolname = '(\w+)'", sql)
        if shown:
            return 0, self.verifiers.get(shown.group(1), "") + "\nPROVISION_RC=0"
        if "provision_drill.mark(" in sql and self.drill_mark is not None:
            return 0, self.drill_mark + "\nPROVISION_RC=0"
        if "server_version_num" in sql:
            return 0, "160004\nPROVISION_RC=0"
        return 0, "PROVISION_RC=0"


def old_form(description: str | None, kind: str) -> str:
    """`description` as the versions before marks.py wrote it (`key:value` marks, ` — ` before the text)."""
    found = marks.parse(description)
    owner = f" owner:{found.owner}" if found.owner else ""
    if kind == "project":
        return f"provision:{owner} — managed by provision"
    if kind == "locks":
        server = f" server:{found.server}" if found.server else ""
        tail = "; new services go to that server" if found.server else ""
        return f"provision:{owner}{server} — locks of provision runs (a project variable per running change){tail}"
    extra = (f" mem:{found.memory}" if found.memory else "") + (
        f" placed:{quote(found.placed, safe='')}" if found.placed else "") + (
        f" aside-of:{found.aside_of}" if found.aside_of else "")
    return (f"provision:{found.provision} compose:{found.compose}{owner}{extra} — managed by provision; edits to "
            f"the compose in Coolify are reported as drift")


def to_old_form(emulator: CoolifyEmulator) -> None:
    """Every description provision wrote, as an earlier version would have left it in Coolify."""
    store = emulator.core.store
    with store.lock:
        for project in store.projects.values():
            kind = "locks" if project.name.startswith("provision-locks-") else "project"
            if marks.parse(project.description).marked:
                project.description = old_form(project.description, kind)
        for service in store.services.values():
            if marks.parse(service.description).marked:
                service.description = old_form(service.description, "service")


@pytest.fixture
def emulator() -> Iterator[CoolifyEmulator]:
    """Coolify's timings, shortened; the rate limit out of the way (one CLI process after the other exceeds
    200 requests a minute, which the client waits out: tests/unit/test_coolify_client.py, test_rate_limit.py)."""
    with CoolifyEmulator(token=TOKEN, **REALISTIC) as emu:
        emu.core.task_runner = FakePsql()
        emu.rate_limit = 100_000
        yield emu


def _verbs(shapes: Shapes, box: Sandbox, form: str) -> None:
    """The verbs of a project's life on a later run, each once."""
    run = shapes.run
    run(box, f"{form}: provision (no-op)", "provision")
    box.write_env_text(coolify_env({"db": "postgres:16-alpine", "api": "postgrest/postgrest:v12.2.4"}))
    run(box, f"{form}: provision (update: PATCH compose, restart)", "provision")
    run(box, f"{form}: status", "status", "--json")
    run(box, f"{form}: logs", "logs", "--project=shop", "--tail=5")
    run(box, f"{form}: stop", "stop", "--project=shop")
    run(box, f"{form}: stop again (already stopped)", "stop", "--project=shop")
    run(box, f"{form}: start", "start", "--project=shop")
    run(box, f"{form}: restart", "restart", "--project=shop")
    run(box, f"{form}: rotate jwt_secret", "rotate", "--project=shop", "--secret=jwt_secret", "--yes")
    run(box, f"{form}: rotate db_password", "rotate", "--project=shop", "--secret=db_password", "--yes")
    run(box, f"{form}: lock (list)", "lock", "--json")
    run(box, f"{form}: unlock (nothing held)", "unlock", "--project=shop", "--yes")
    box.write_env_text(coolify_env())


def test_every_request_the_backend_sends_passes_coolifys_rules(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    shapes = Shapes(emulator)
    box = make_sandbox(tmp_path, emulator)
    run = shapes.run

    # first runs: the lock project, the project, its environment, the service, its variables, the roles task
    run(box, "new: provision (create)", "provision")
    run(box, "new: plan", "plan")
    _verbs(shapes, box, "new form")

    # what an earlier version left in Coolify: the same verbs read it and write the new form where they write
    to_old_form(emulator)
    _verbs(shapes, box, "old form")

    # a lock another runner holds (old-form comment and lock project), waited on, then broken by unlock
    [locks] = [p for p in emulator.find_projects() if p["name"].startswith("provision-locks-")]
    emulator.create_project_variable(
        locks["uuid"], f"lock.{box.env}.shop".replace("-", "_"), "held",
        comment="provision lock holder=ci@other pid=1 since=2026-11-30T08:00:00Z expires=2099-01-01T00:00:00Z")
    run(box, "held lock: provision waits and gives up", "provision", "--lock-timeout=1", fails=True)
    run(box, "held lock: unlock", "unlock", "--project=shop", "--yes")
    # a stale one is broken by the next change
    emulator.create_project_variable(
        locks["uuid"], f"lock.{box.env}.shop".replace("-", "_"), "held",
        comment="provision lock holder=ci@other pid=1 since=2026-01-01T08:00:00Z expires=2026-01-01T09:00:00Z")
    run(box, "stale lock: restart breaks it", "restart", "--project=shop")

    # adopt: a service and project of the versions before owner ids
    [service] = emulator.find_services("shop")
    [project] = emulator.find_projects("shop")
    store = emulator.core.store
    with store.lock:
        store.services[service["uuid"]].description = re.sub(r" ?owner[:=]\S+", "", str(service["description"]))
        store.projects[project["uuid"]].description = marks.LEGACY_PROJECT
    run(box, "legacy: provision refuses", "provision", fails=True)
    run(box, "legacy: adopt", "adopt", "--project=shop", "--yes")
    run(box, "legacy: provision after adopt", "provision")

    # destroy keeping the data, provision again (new service, kept secrets), destroy with the data
    run(box, "destroy (keep data)", "destroy", "--project=shop")
    run(box, "provision after destroy", "provision")
    run(box, "destroy --delete-data", "destroy", "--project=shop", "--delete-data", "--yes", "--no-backup")
    run(box, "provision after delete-data", "provision")

    # a second env on the same Coolify: its environment is created by POST (not `production`)
    other = make_sandbox(tmp_path / "other", emulator, env="stshapes2")
    run(other, "second env: provision", "provision")
    run(other, "second env: destroy --delete-data", "destroy", "--project=shop", "--delete-data", "--yes",
        "--no-backup")

    covered = set(shapes.sent)
    for shape in ("POST /projects", "POST /projects/{uuid}/environments", "POST /services",
                  "PATCH /services/{uuid}", "PATCH /services/{uuid}/envs/bulk", "PATCH /projects/{uuid}",
                  "POST /projects/{uuid}/envs", "DELETE /projects/{uuid}/envs/{id}",
                  "POST /services/{uuid}/scheduled-tasks", "DELETE /services/{uuid}", "DELETE /projects/{uuid}"):
        if shape not in covered:
            shapes.problems.append(f"coverage: the scenario never sent {shape}")
    assert not shapes.problems, "requests a real Coolify 4.3.11 refuses:\n" + shapes.report()


def test_placement_requests_pass_coolifys_rules(tmp_path: Path) -> None:
    """coolify.servers: the listings placement reads, and services marked with the server they were placed on."""
    with CoolifyEmulator(token=TOKEN, **{**REALISTIC, "rate_limit": 100_000}) as emulator:
        emulator.core.task_runner = FakePsql()
        emulator.add_server("small", "10.0.0.2")
        emulator.add_server("big server (eu)", "10.0.0.3")
        shapes = Shapes(emulator)
        box = make_sandbox(tmp_path, emulator)
        servers = "  servers:\n    - {name: small, max_stacks: 1}\n    - {name: big server (eu), max_stacks: 5}\n"
        box.write_env_text(coolify_env(projects=("pr1", "pr2"), owner=OWNER) + servers)
        shapes.run(box, "placement: provision", "provision")
        shapes.run(box, "placement: status", "status", "--json")
        to_old_form(emulator)
        shapes.run(box, "placement (old form): provision", "provision")
        box.write_env_text(coolify_env({"db": "postgres:16-alpine", "api": "postgrest/postgrest:v12.2.4"},
                                       projects=("pr1", "pr2"), owner=OWNER) + servers)
        shapes.run(box, "placement (old form): update", "provision")
        for name in ("pr1", "pr2"):
            shapes.run(box, f"placement: destroy {name}", "destroy", f"--project={name}", "--delete-data", "--yes",
                       "--no-backup")
        assert not shapes.problems, "requests a real Coolify 4.3.11 refuses:\n" + shapes.report()


def test_the_check_sees_a_refusal(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    """The check itself: a 422 where the backend expects none is reported with the verb, request and answer."""
    emulator.inject("422", method="PATCH", path=r"/envs/bulk$", body=b'{"message":"Validation failed.",'
                                                                     b'"errors":{"data.0.key":["x"]}}')
    shapes = Shapes(emulator)
    shapes.run(make_sandbox(tmp_path, emulator), "create", "provision")
    assert any(p.startswith("create: PATCH /services/") and "/envs/bulk -> 422 {'message': 'Validation failed.'"
               in p for p in shapes.problems), shapes.report()
    assert any("`provision` exited 1" in p for p in shapes.problems), shapes.report()
