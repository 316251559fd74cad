"""The lock every runner sees, in process against the emulator, with a short TTL: renewed while its run lives
(however long), waited for by a second runner, re-entered by its own thread, and a run whose renewals fail stops
changing anything before its lock could expire."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provision.backends.coolify import CoolifyBackend, CoolifyClient
from provision.backends.coolify.lock import LockTiming, epoch, lock_info
from provision.backends.coolify.models import LockVariable
from provision.core.config import load_env
from provision.core.errors import LockLost, LockTimeout, ProvisionError
from provision.core.model import Target
from provision.core.secrets import Secret
from tests.coolify.conftest import TOKEN, make_sandbox
from tests.coolify_emulator import CoolifyEmulator

TTL, RENEW, RETRY, MARGIN = 3.0, 0.5, 0.2, 1.0


Runner = Callable[[str], tuple[CoolifyBackend, Target]]


@pytest.fixture
def runner(tmp_path: Path, emulator: CoolifyEmulator) -> Iterator[Runner]:
    """Makes a backend as one machine's run has it (its own client and request budget), with a short lock TTL."""
    made: list[CoolifyBackend] = []

    def make(name: str) -> tuple[CoolifyBackend, Target]:
        box = make_sandbox(tmp_path / name, emulator, env="st-locks")
        config = load_env(box.env, box.root, environ={"COOLIFY_API_URL": emulator.base_url,
                                                      "COOLIFY_API_TOKEN": TOKEN})
        backend = CoolifyBackend(CoolifyClient.connect(emulator.base_url, Secret(TOKEN)), config,
                                 lock_timing=LockTiming(ttl=TTL, renew=RENEW, retry=RETRY, margin=MARGIN))
        made.append(backend)
        return backend, Target(config, config.project("shop"))

    yield make
    for backend in made:
        backend.client.close()


def lock_variable(emulator: CoolifyEmulator) -> dict[str, object]:
    [locks] = [p for p in emulator.find_projects() if p["name"].startswith("provision-locks-")]
    [variable] = emulator.project_variables(str(locks["uuid"]))
    return variable


def test_a_run_longer_than_the_ttl_keeps_its_lock_and_a_second_runner_waits(
        runner: Runner, emulator: CoolifyEmulator) -> None:
    first, target = runner("machine-1")
    second, _ = runner("machine-2")
    taken: list[float] = []

    def other_machine() -> None:
        with second.lock(target, None, timeout=60):
            taken.append(time.time())

    with first.lock(target, None, timeout=5):
        since = time.time()
        waiting = threading.Thread(target=other_machine)
        waiting.start()
        time.sleep(2.5 * TTL)  # far longer than the lock's TTL: only renewals keep it
        variable = lock_variable(emulator)
        parsed = LockVariable.parse(variable)
        assert parsed is not None
        info = lock_info(parsed, target.env, target.project, now=time.time())
        assert not info.stale and "pid=" in str(variable["comment"])
        assert (epoch(info.expires) or 0) > since + 2 * TTL  # renewed: its expiry moved with the run
        assert not taken  # the other runner saw a live lock and kept waiting
        with pytest.raises(LockTimeout, match="holds the Coolify lock of project 'shop'"):
            with second.lock(target, None, timeout=0.5):
                pass
        first.client.request("PATCH", f"/projects/{emulator.find_projects()[0]['uuid']}",
                             body={"description": "a change under a live lock"})  # not refused: the lock is live
        released = time.time()
    waiting.join(timeout=60)
    assert taken and taken[0] >= released  # it took the lock only once the first run released it
    renewals = [r for r in emulator.requests if r.method == "PATCH" and "/envs/" in r.path]
    deletes = [r for r in emulator.requests if r.method == "DELETE" and "/envs/" in r.path]
    assert len(renewals) >= 2 * TTL / RENEW - 2
    first_release = min(r.at for r in deletes)
    assert all(r.at < first_release for r in renewals if str(variable["id"]) in r.path)  # none after the release


def test_a_failed_renewal_stops_the_runs_changes_before_the_lock_can_expire(
        runner: Runner, emulator: CoolifyEmulator) -> None:
    backend, target = runner("machine-1")
    emulator.inject("500", method="PATCH", path=r"/projects/[^/]+/envs/\d+$", times=None)  # renewals fail
    with backend.lock(target, None, timeout=5):
        [locks] = [p for p in emulator.find_projects() if p["name"].startswith("provision-locks-")]
        backend.client.request("PATCH", f"/projects/{locks['uuid']}", body={"description": "early, still fine"})
        time.sleep(TTL - MARGIN + 0.3)  # past the moment the lock must be renewed by
        with pytest.raises(LockLost, match=r"lock of project 'shop' in env 'st-locks' is lost: .*not renewed"):
            backend.client.request("PATCH", f"/projects/{locks['uuid']}", body={"description": "too late"})
        assert not backend.holds_lock(target)
        assert not [r for r in emulator.requests if isinstance(r.body, dict) and r.body.get("description") == "too late"]
        assert backend.client.request("GET", "/projects")  # reads go on: only changes stop
    # the lock is still released (a stale one would block others until its expiry)
    assert [r for r in emulator.requests if r.method == "DELETE" and "/envs/" in r.path]


def test_a_broken_lock_is_lost_at_the_next_renewal(runner: Runner, emulator: CoolifyEmulator) -> None:
    backend, target = runner("machine-1")
    with pytest.raises(LockLost, match="broken"):
        with backend.lock(target, None, timeout=5):
            assert backend.unlock(target)  # `invoke unlock` from another machine
            time.sleep(RENEW * 3)
            assert not backend.holds_lock(target)
            backend.client.request("POST", "/projects", body={"name": "after-the-break"})
    assert not emulator.find_projects("after-the-break")


def test_the_lock_is_re_entrant_within_one_run(runner: Runner, emulator: CoolifyEmulator) -> None:
    backend, target = runner("machine-1")
    emulator.requests.clear()
    with backend.lock(target, None, timeout=5):
        with backend.lock(target, None, timeout=5):  # a data verb's own converge
            assert backend.holds_lock(target)
        assert backend.holds_lock(target)  # the inner block did not release it
    assert not backend.holds_lock(target)
    taken = [r for r in emulator.requests if r.method == "POST" and r.path.endswith("/envs")]
    released = [r for r in emulator.requests if r.method == "DELETE" and "/envs/" in r.path]
    assert len(taken) == 1 and len(released) == 1


def test_secrets_are_written_to_coolify_only_under_the_lock(runner: Runner, emulator: CoolifyEmulator) -> None:
    backend, target = runner("machine-1")
    from provision.backends.coolify import Refs
    from provision.core.model import Observed

    observed = Observed(exists=True, handle=Refs(service_uuid="s" * 24))
    with pytest.raises(ProvisionError, match="only under its lock"):
        backend.store_secrets(target, observed, {"DB_PASSWORD": Secret("x" * 48)})
    assert not [r for r in emulator.requests if "/envs/bulk" in r.path]


# --- data verbs hold the lock for their whole length: two checkouts of one owner ---------------------------
FAKE_PSQL = r'''#!PYTHON
"""psql as the tests see it: remembers the password verifier an ALTER ROLE sets, answers the queries provision
asks (a role's stored verifier, the server version); everything else succeeds and prints nothing."""
import fcntl, json, os, re, sys

sql = sys.stdin.read()
path = os.environ["FAKE_PG_STATE"]
with open(path + ".lock", "w") as guard:
    fcntl.flock(guard, fcntl.LOCK_EX)
    roles = json.load(open(path)) if os.path.exists(path) else {}
    for role, verifier in re.findall(r'ALTER ROLE "((?:[^"]|"")+)"[^;]*?PASSWORD \'([^\']+)\'', sql):
        roles[role.replace('""', '"')] = verifier
    json.dump(roles, open(path, "w"))
asked = re.search(r"SELECT rolpassword FROM pg_authid WHERE rolname = '((?:[^']|'')+)'", sql)
if asked:
    print(roles.get(asked.group(1).replace("''", "'"), ""))
if "SHOW server_version_num" in sql:
    print("160004")
'''


def fake_database(emulator: CoolifyEmulator, where: Path) -> Callable[[str], str]:
    """Scheduled tasks run their command here, with a fake psql on PATH that keeps each service's role
    passwords; returns a function giving a service's stored verifier of role `app`."""
    import json
    import subprocess
    import sys

    bin_dir = where / "bin"
    bin_dir.mkdir(parents=True)
    psql = bin_dir / "psql"
    psql.write_text(FAKE_PSQL.replace("#!PYTHON", f"#!{sys.executable}"))
    psql.chmod(0o755)
    ready = bin_dir / "pg_isready"  # the lasting server answers on 127.0.0.1
    ready.write_text("#!/bin/sh\nexit 0\n")
    ready.chmod(0o755)

    def run(service: object, container: str, command: str) -> tuple[int, str]:
        environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_PG_STATE": str(where / f"{service.uuid}.json"),
                   "POSTGRES_USER": "provision_admin", "POSTGRES_DB": "app"}
        done = subprocess.run(["sh", "-c", command], env=environ, capture_output=True, text=True, timeout=60,
                              check=False)
        return done.returncode, done.stdout + done.stderr

    emulator.core.task_runner = run

    def stored(service_uuid: str) -> str:
        state = where / f"{service_uuid}.json"
        return str(json.loads(state.read_text()).get("app", "")) if state.exists() else ""

    return stored


def test_a_deploy_from_another_machine_waits_for_a_rotation(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    """The race two checkouts of one owner met: machine B deployed while machine A rotated the password (A held
    only its own file lock), B's deploy wrote the old password back to Coolify, and A exited 0 with a
    DB_PASSWORD in Coolify that no longer logged in. Now A holds the shared lock for the whole rotation."""
    from provision.infra.database import password_matches
    from tests.coolify.conftest import coolify_env

    stored = fake_database(emulator, tmp_path / "db")
    boxes = []
    for name in ("machine-a", "machine-b"):
        box = make_sandbox(tmp_path / name, emulator, env="st-shared")
        boxes.append(box)
    machine_a, machine_b = boxes
    machine_a.cli("provision")
    [service] = emulator.find_services("shop")
    uuid = str(service["uuid"])
    old = str(emulator.envs(uuid)["DB_PASSWORD"])
    assert password_matches(stored(uuid), Secret(old))
    machine_b.write_env_text(coolify_env({"db": "postgres:16-alpine", "api": "postgrest/postgrest:v12.2.4"}))

    emulator.requests.clear()
    # A's ALTER ROLE task is slow to run: B starts while A is between the database and Coolify's copy
    # (under the env's request_timeout of 3 s)
    emulator.inject("latency", method="POST", path=r"/scheduled-tasks/[^/]+/execute$", seconds=2.5, times=1)
    rotate = machine_a.popen("rotate", "--project=shop", "--secret=db_password", "--yes", "--json")
    deploy = None
    try:
        pending = machine_a.state_dir / machine_a.env / "shop" / "pending.json"
        deadline = time.monotonic() + 60
        while not (pending.exists() and "rotate" in pending.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        deploy = machine_b.popen("provision", "--json")
        for proc in (rotate, deploy):
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
    finally:
        for proc in (rotate, deploy):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()

    new = str(emulator.envs(uuid)["DB_PASSWORD"])
    assert new != old and password_matches(stored(uuid), Secret(new))  # Coolify's copy logs in, and is the new one
    assert "v12.2.4" in str((emulator.service(uuid) or {})["docker_compose_raw"])  # B's deploy happened too

    # B changed nothing while A held the lock: its first change came after A released it
    taken = [(i, r) for i, r in enumerate(emulator.requests)
             if r.method == "POST" and r.path.endswith("/envs") and r.status == 201 and isinstance(r.body, dict)]
    a_took = next(i for i, r in taken if f"pid={rotate.pid} " in str(r.body.get("comment")))
    a_released = next(i for i, r in enumerate(emulator.requests)
                      if i > a_took and r.method == "DELETE" and "/envs/" in r.path)
    b_took = next(i for i, r in taken if f"pid={deploy.pid} " in str(r.body.get("comment")))
    b_changed = min(i for i, r in enumerate(emulator.requests)
                    if r.method == "PATCH" and r.path == f"/services/{uuid}" and isinstance(r.body, dict)
                    and b"v12.2.4" in base64.b64decode(str(r.body.get("docker_compose_raw") or "")))
    assert a_released < b_took < b_changed
    assert [i for i, r in taken if f"pid={rotate.pid} " in str(r.body.get("comment"))] == [a_took]  # re-entered


def test_two_machines_never_both_take_a_servers_last_place(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    """Placement reads a server's load and creates the service under that server's shared lock: of two machines
    of one owner that each planned the last place for their new project, one gets it and the other is refused
    with nothing created (a per-process lock let both take it)."""
    from tests.coolify.conftest import coolify_env

    emulator.add_server("small", "10.0.0.2")
    servers = "  servers:\n    - {name: small, max_stacks: 1}\n"
    boxes = []
    for name, project in (("machine-a", "shop"), ("machine-b", "blog")):
        box = make_sandbox(tmp_path / name, emulator, env="st-shared")
        box.write_env_text(coolify_env(projects=(project,)) + servers)
        boxes.append(box)
    # both runs plan before either creates (placement's first read takes no lock); the first create is slow
    emulator.inject("latency", method="POST", path=r"^/services$", seconds=1.5, times=1)
    runs = [box.popen("provision", "--json") for box in boxes]
    results = []
    for proc in runs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, err))
    assert sorted(code for code, _ in results) == [0, 1], results
    [(_, refused)] = [(code, err) for code, err in results if code]
    assert "small" in refused and "full: 1 of 1 stacks" in refused and "Nothing was created" in refused
    assert len(emulator.find_services()) == 1
    held = [r for r in emulator.requests if r.method == "POST" and "/envs" in r.path and isinstance(r.body, dict)
            and str(r.body.get("key", "")).startswith("place.")]
    assert {r.status for r in held} >= {201}
