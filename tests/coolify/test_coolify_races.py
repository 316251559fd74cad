"""Where a published database answers, and the races of a real Coolify: a restart whose activity window is missed,
a start or restart whose answer is lost, a start refused because a refresh stored the stack running, a create
answered after the grace period. Against the emulator, with servers of distinct addresses."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from provision import Workspace
from provision.backends.coolify import CoolifyBackend
from provision.backends.coolify.backend import volume_name
from provision.core.model import Target
from provision.core.planner import Action, Plan
from provision.service import Provisioner
from tests.coolify.conftest import OWNER, TOKEN, coolify_env, make_sandbox
from tests.coolify_emulator import CoolifyEmulator
from tests.sandbox import Sandbox
from tests.timing import Clock

EDGE_IP = "10.20.30.40"  # never the API's own host (127.0.0.1): a db_url naming the wrong server shows
PUBLIC = "variables:\n  db_public_port: 15432\n"


def _db_hosts(box: Sandbox, **extra_env: str) -> dict[str, str]:
    """project -> the host of its public db_url, as `status --json` reports it."""
    projects = box.cli("status", "--json", extra_env=extra_env).json()["projects"]
    hosts = {}
    for project in projects:
        found = re.search(r"@([^:/]+):15432/", str(project["db_url"]))
        assert found and project["db_url_scope"] == "public", project
        hosts[project["project"]] = found.group(1)
    return hosts


# --- 1. the host of a published database ---------------------------------------------------------------------
def test_the_public_db_url_names_the_server_the_stack_runs_on(sandbox: Sandbox, emulator: CoolifyEmulator,
                                                             tmp_path: Path) -> None:
    edge = emulator.add_server("edge", EDGE_IP)  # the seeded localhost has ip host.docker.internal: the API's host
    projects = ("shop", "blog")
    sandbox.write_env_text(coolify_env(projects=projects) + f"  server: {edge['uuid']}\n")
    sandbox.cli("provision", "--project=shop")  # by uuid: GET /servers is skipped, so the view had no ip
    sandbox.write_env_text(coolify_env(projects=projects) + "  server: localhost\n")
    sandbox.cli("provision", "--project=blog")  # by name

    # the database published afterwards (status applies nothing: pure mode has no database to probe)
    for server in (edge["uuid"], "edge", "localhost"):  # whatever the env file names now
        sandbox.write_env_text(coolify_env(projects=projects) + f"  server: {server}\n" + PUBLIC)
        assert _db_hosts(sandbox) == {"shop": EDGE_IP, "blog": "127.0.0.1"}, server

    # coolify.server unset, three usable servers now: existing stacks still name theirs, from a fresh machine too
    emulator.add_server("edge-2", "10.9.9.9")
    sandbox.write_env_text(coolify_env(projects=projects) + PUBLIC)
    assert _db_hosts(sandbox) == {"shop": EDGE_IP, "blog": "127.0.0.1"}
    fresh = {"PROVISION_STATE_DIR": str(tmp_path / "fresh-state")}
    assert _db_hosts(sandbox, **fresh) == {"shop": EDGE_IP, "blog": "127.0.0.1"}
    assert f"@{EDGE_IP}:15432/" in sandbox.cli("outputs", "--project=shop", "--format=json").stdout


def test_a_chosen_server_stays_the_db_host_after_another_is_added(sandbox: Sandbox,
                                                                  emulator: CoolifyEmulator) -> None:
    """coolify.server unset: the one usable server is chosen (and remembered); a second usable server added
    later does not make the existing stack's db_url fail ("2 usable servers") or move."""
    emulator.add_server("edge", EDGE_IP)
    localhost = emulator.localhost["uuid"]
    emulator.set_server(localhost, is_usable=False)
    sandbox.cli("provision")
    [service] = emulator.find_services("shop")
    assert service["server_uuid"] != localhost
    emulator.set_server(localhost, is_usable=True)
    sandbox.write_env_text(coolify_env() + PUBLIC)
    assert _db_hosts(sandbox) == {"shop": EDGE_IP}


# --- 2. races of a start or restart -----------------------------------------------------------------------------
@pytest.fixture
def quick(clock: Clock) -> Iterator[CoolifyEmulator]:
    """No start activity to see (it ends as it begins). Tests then stop the refresh (`_no_refresh`): a restart
    shows only in the containers StopService stored exited."""
    with CoolifyEmulator(token=TOKEN, action_delay=0.2, stop_seconds=0.2, clock=clock) as emu:
        yield emu


def _no_refresh(emu: CoolifyEmulator) -> None:
    """Stored container states move from now on only by StopService (the next refresh is an hour away)."""
    emu.refresh_interval = 3600.0


InProcess = Callable[[Sandbox], tuple[Provisioner, CoolifyBackend, Target]]


@pytest.fixture
def in_process() -> Iterator[InProcess]:
    """The service layer and backend of a sandbox's env in this process (its API client closed afterwards)."""
    opened: list[CoolifyBackend] = []

    def make(box: Sandbox) -> tuple[Provisioner, CoolifyBackend, Target]:
        provisioner = Workspace(box.root, environ=box.environ(), clock=box.clock).provisioner(box.env)
        assert isinstance(provisioner.backend, CoolifyBackend)
        opened.append(provisioner.backend)
        return provisioner, provisioner.backend, provisioner.target("shop")

    yield make
    for backend in opened:
        backend.client.close()


def test_a_restart_of_a_stack_that_is_not_ready_is_seen_without_its_activity(
        tmp_path: Path, quick: CoolifyEmulator, in_process: InProcess) -> None:
    """A running but unhealthy stack: the restart's `starting:unhealthy` never shows, but the old containers
    stored exited do, so the restart is not taken for one that never began (a false timeout, then a rollback)."""
    box = make_sandbox(tmp_path, quick)
    box.cli("provision")
    [service] = quick.find_services("shop")
    _no_refresh(quick)
    quick.set_service_status(service["uuid"], "running:unhealthy", app="api")
    _, backend, target = in_process(box)
    observed = backend.observe(target, None)
    assert observed.any_running and not observed.ready
    assert backend.control(target, observed, "restart") is True  # before: HealthTimeout, "did not begin"
    assert quick.wait_idle(5)
    assert quick.count("POST", rf"/services/{service['uuid']}/restart") == 1


def test_a_lost_answer_to_a_restart_or_start_queues_no_second_job(sandbox: Sandbox,
                                                                  emulator: CoolifyEmulator) -> None:
    """start and restart only queue a job: after a lost answer Coolify is watched for it, and the POST is not
    repeated once it shows (a second restart would take the stack down after its success was reported)."""
    emulator.inject("500", method="POST", path=r"/start$", after=True)
    assert sandbox.cli("provision", "--json").json()["projects"][0]["status"] == "running"
    [service] = emulator.find_services("shop")
    uuid = service["uuid"]
    assert emulator.count("POST", rf"/services/{uuid}/start") == 1

    sandbox.write_env_text(coolify_env({"db": "postgres:16-alpine", "api": "postgrest/postgrest:v12.2.4"}))
    emulator.inject("drop", method="POST", path=r"/restart$", after=True)
    update = sandbox.cli("provision", "--json").json()["projects"][0]
    assert (update["action"], update["status"]) == ("update", "running")
    assert emulator.count("POST", rf"/services/{uuid}/restart") == 1
    assert emulator.wait_idle(5)
    snapshot = emulator.service(uuid)
    assert snapshot is not None and snapshot["pending"] == []

    # a stopped stack restarted: nothing old runs, so its start (activity, then running) is the job's evidence
    sandbox.cli("stop", "--project=shop")
    emulator.inject("503", method="POST", path=r"/restart$", after=True)
    assert sandbox.cli("restart", "--project=shop", "--json").json()["status"] == "running"
    assert emulator.count("POST", rf"/services/{uuid}/restart") == 2  # the update's and this one


def test_a_start_refused_as_already_running_becomes_a_restart(tmp_path: Path, quick: CoolifyEmulator,
                                                              in_process: InProcess) -> None:
    """An update (a rollback) of a stack seen stopped starts it; when Coolify meanwhile stored it running (the
    old compose: a refresh landed in between) the start is refused, and a restart makes the new compose run."""
    box = make_sandbox(tmp_path, quick)
    box.cli("provision")
    box.cli("stop", "--project=shop")
    [service] = quick.find_services("shop")
    uuid = service["uuid"]
    box.write_env_text(coolify_env({"db": "postgres:16-alpine", "api": "postgrest/postgrest:v12.2.4"}))
    provisioner, backend, target = in_process(box)
    seen_stopped = backend.observe(target, None)
    assert not seen_stopped.any_running
    quick.core.queue_action(quick.core.store.services[uuid], "start")  # what ran before runs again
    assert quick.wait_idle(5) and str(quick.service_status(uuid)).startswith("running")
    _no_refresh(quick)
    prepared = backend.prepare(target, seen_stopped, {}, create=False)
    stack = provisioner.engine.render_stack(target, prepared)
    backend.apply(target, seen_stopped, stack, prepared, Plan(Action.UPDATE, "rollback"))
    assert quick.count("POST", rf"/services/{uuid}/start") >= 1
    assert quick.count("POST", rf"/services/{uuid}/restart") == 1
    assert quick.wait_idle(5)
    snapshot = quick.service(uuid)
    assert snapshot is not None and snapshot["config_changed"] is False  # the PATCHed compose is what ran last


def test_a_put_back_refused_as_already_running_is_restarted(tmp_path: Path, quick: CoolifyEmulator,
                                                            in_process: InProcess) -> None:
    box = make_sandbox(tmp_path, quick)
    box.cli("provision")
    _, backend, target = in_process(box)
    name, _ = backend.set_aside(target, backend.observe(target, None), "t1")
    [service] = quick.find_services(name)
    quick.core.queue_action(quick.core.store.services[service["uuid"]], "start")
    assert quick.wait_idle(5) and str(quick.service_status(service["uuid"])).startswith("running")
    _no_refresh(quick)
    backend.put_back(target, name)
    assert quick.count("POST", rf"/services/{service['uuid']}/restart") == 1
    assert quick.wait_idle(5) and quick.find_services("shop")


# --- 3. creates answered late: never sent twice -----------------------------------------------------------
def test_a_service_create_answered_past_the_grace_period_makes_one_service(sandbox: Sandbox,
                                                                           emulator: CoolifyEmulator) -> None:
    """The create reaches Coolify 15 s late: after the client's 3 s and the 10 s grace period it is still looked
    for (up to health.timeout, 20 s here), never sent again."""
    emulator.inject("latency", method="POST", path=r"^/services$", seconds=15, times=1)
    result = sandbox.cli("provision", "--json", timeout=120).json()["projects"][0]
    assert result["status"] == "running"
    assert len(emulator.find_services()) == 1 and emulator.count("POST", r"/services") == 1
    assert sandbox.cli("plan", "--json").json()["projects"][0]["outcome"] == "no-op"


def test_the_lock_project_and_the_project_answered_late_are_made_once(sandbox: Sandbox,
                                                                      emulator: CoolifyEmulator) -> None:
    emulator.inject("latency", method="POST", path=r"^/projects$", seconds=15, times=2)  # the lock's, then shop's
    assert sandbox.cli("provision", "--json", timeout=150).json()["projects"][0]["status"] == "running"
    assert len(emulator.find_projects(f"provision-locks-{OWNER}")) == 1
    assert len(emulator.find_projects("shop")) == 1 and len(emulator.find_services()) == 1
    assert emulator.count("POST", r"/projects") == 2


def test_a_create_that_never_lands_is_not_sent_again(tmp_path: Path, emulator: CoolifyEmulator) -> None:
    """No answer and nothing made within the patience: the run stops rather than risk a duplicate; the next run
    makes it. A 500 (Coolify answered: its request ended) is looked for once, then sent again."""
    box = make_sandbox(tmp_path, emulator)
    box.write_env_text(coolify_env(timeout=8))
    emulator.inject("drop", method="POST", path=r"^/services$")  # read, never processed, no answer
    failed = box.cli("provision", check=False, timeout=120)
    assert failed.returncode != 0 and "will not send it again" in failed.stderr, failed.output
    assert emulator.find_services() == [] and emulator.count("POST", r"/services") == 1
    emulator.requests.clear()
    emulator.inject("500", method="POST", path=r"^/services$")  # answered, nothing made
    assert box.cli("provision", "--json", timeout=120).json()["projects"][0]["status"] == "running"
    assert len(emulator.find_services()) == 1 and emulator.count("POST", r"/services") == 2


# --- 4. volume names and unreadable passwords ----------------------------------------------------------------
@pytest.mark.parametrize("key", ["pgdata", "pgdata_pg17_20261130t120000z", "data__x"])
def test_volume_names_are_coolifys(emulator: CoolifyEmulator, key: str) -> None:
    project = emulator.create_project("vols")
    uuid = emulator.create_service(project["uuid"], f"services:\n  db:\n    image: postgres:16\n    volumes:\n"
                                                    f"      - {key}:/var/lib/postgresql/data\nvolumes:\n  {key}: {{}}\n")
    emulator.core.queue_action(emulator.core.store.services[uuid], "start")
    assert emulator.wait_idle(5)
    assert emulator.volumes() == [volume_name(uuid, key)]


def test_destroy_names_the_volume_it_keeps(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    [service] = emulator.find_services("shop")
    destroyed = sandbox.cli("destroy", "--project=shop")
    [kept] = emulator.volumes()
    assert kept == f"{service['uuid']}_pgdata" and f"stays on the server as {kept}," in destroyed.stderr


def test_a_password_shown_once_is_not_a_missing_ability(sandbox: Sandbox, emulator: CoolifyEmulator) -> None:
    sandbox.cli("provision")
    [service] = emulator.find_services("shop")
    svc = emulator.core.store.services[service["uuid"]]
    next(e for e in emulator.core.store.envs_of(svc) if e.key == "DB_PASSWORD").is_shown_once = True
    refused = sandbox.cli("provision", check=False)
    assert refused.returncode != 0 and "shown once" in refused.stderr and "is_shown_once" in refused.stderr
    assert "needs the read:sensitive" not in refused.stderr
    assert "will not give an existing database a new password" in refused.stderr


def test_the_emulator_hides_a_shown_once_value_like_coolify(emulator: CoolifyEmulator) -> None:
    """Realistic shapes: the keys are absent, for a root token too (ServicesController.php:64-76)."""
    project = emulator.create_project("envs")
    uuid = emulator.create_service(project["uuid"], "services:\n  web:\n    image: nginx\n")
    emulator.set_env(uuid, "SECRET", "s")
    variable = emulator.core.store.env_by_key(emulator.core.store.services[uuid], "SECRET")
    assert variable is not None
    variable.is_shown_once = True
    with httpx.Client(base_url=emulator.base_url, headers={"Authorization": f"Bearer {emulator.token}",
                                                           "Accept": "application/json"}) as client:
        [item] = [e for e in client.get(f"/services/{uuid}/envs").json() if e["key"] == "SECRET"]
    assert item["is_shown_once"] is True and "value" not in item and "real_value" not in item


def test_the_emulator_shows_a_services_server_to_a_sensitive_token(emulator: CoolifyEmulator) -> None:
    edge = emulator.add_server("edge", EDGE_IP)
    project = emulator.create_project("srv")
    uuid = emulator.create_service(project["uuid"], "services:\n  web:\n    image: nginx\n", server_uuid=edge["uuid"])
    emulator.add_token("5|read-only", abilities=("read",))
    with httpx.Client(base_url=emulator.base_url, headers={"Accept": "application/json"}) as client:
        full = client.get(f"/services/{uuid}", headers={"Authorization": f"Bearer {emulator.token}"}).json()
        plain = client.get(f"/services/{uuid}", headers={"Authorization": "Bearer 5|read-only"}).json()
        servers = client.get("/servers", headers={"Authorization": f"Bearer {emulator.token}"}).json()
    assert full["destination"]["server"]["uuid"] == edge["uuid"] and full["destination"]["server"]["ip"] == EDGE_IP
    assert "destination" not in plain and plain["server_id"] == full["server_id"]
    [listed] = [s for s in servers if s["settings"]["server_id"] == plain["server_id"]]
    assert listed["uuid"] == edge["uuid"] and "id" not in listed

