"""The orchestration in core.py, against an in-memory backend."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provision.core.config import load_env
from provision.core.errors import (
    ConfirmationRequired,
    DatabaseStarting,
    ImageUnavailable,
    InvalidName,
    MajorUpgradeRequired,
    ProjectNotFound,
    ProvisionError,
    UndeclaredProject,
)
from provision.core.model import (
    Handle,
    Observed,
    Prepared,
    Target,
)
from provision.service import Provisioner
from provision.service.lifecycle import Lifecycle
from provision.service.upgrade_state import image_note
from provision.state.records import StateStore
from tests.conftest import write_env
from tests.unit.fakes import MemoryBackend, MemoryHandle

ENV = """
images: {db: "postgres:16-alpine", api: "postgrest/postgrest:v12.2.3"}
projects: [{name: shop}]
health: {timeout: 5}
"""


def record_status(store: StateStore) -> str:
    record = store.read_record("dev", "shop")
    assert record is not None
    return record.status


@pytest.fixture
def setup(project_root: Path, tmp_path: Path) -> tuple[Provisioner, MemoryBackend, StateStore]:
    write_env(project_root, "dev", ENV)
    config = load_env("dev", project_root, environ={})
    backend = MemoryBackend()
    store = StateStore(tmp_path / "state")
    return Provisioner(config, backend, store), backend, store


def test_changed_is_true_exactly_when_an_action_ran(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, store = setup
    first = provisioner.provision("shop")
    assert first.changed and first.action == "create" and backend.calls == ["apply:create"]
    second = provisioner.provision("shop")
    assert not second.changed and second.action == "no-op" and backend.calls == ["apply:create"]
    backend.running["shop"] = False
    third = provisioner.provision("shop")
    assert third.changed and third.action == "start"
    assert record_status(store) == "provisioned"


def test_logs_never_print_a_secret_whatever_the_backend_redacts(
        setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    """A backend that redacts nothing (local: a stack applied before compose.env existed has no file to redact
    with) still has every secret of the project replaced by *** in what `logs` yields, followed or not."""
    provisioner, backend, store = setup
    provisioner.provision("shop")
    password, jwt = (store.read_secrets("dev", "shop")[n].reveal() for n in ("DB_PASSWORD", "JWT_SECRET"))
    backend.log_lines = (f"db-1 | password={password}\n", f"api-1 | jwt={jwt}\n")
    for follow in (False, True):
        text = "".join(provisioner.logs("shop", follow=follow))
        assert text == "db-1 | password=***\napi-1 | jwt=***\n"


def test_the_password_is_stable_across_runs(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, _, _ = setup
    first = provisioner.provision("shop").db_url
    second = provisioner.provision("shop").db_url
    assert first is not None and second is not None and first.reveal() == second.reveal()


def test_a_failed_create_is_removed_and_recorded(
        setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, store = setup
    backend.healthy = False
    summary = provisioner.provision_many(["shop"])
    assert not summary.ok and summary.results[0].status == "failed"
    assert "boom" in (summary.results[0].error or "")
    assert "data volume and credentials are kept" in (summary.results[0].error or "")
    assert backend.calls == ["apply:create", "destroy:False"]  # the failed first create is removed
    assert record_status(store) == "failed"


def test_invalid_names_create_nothing(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, store = setup
    with pytest.raises(InvalidName):
        provisioner.provision("../x")
    assert backend.calls == [] and not store.root.exists()


def test_delete_data_needs_yes_and_checks_before_anything(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, _ = setup
    provisioner.provision("shop")
    with pytest.raises(ConfirmationRequired, match="--yes"):
        provisioner.destroy("shop", delete_data=True)
    assert backend.calls == ["apply:create"]
    dumped: list[str] = []

    def before_delete(target: Target, observed: Observed, op: object) -> None:
        dumped.append(f"{target.project}:{observed.running}")  # the dump comes first, of the running stack

    lifecycle = Lifecycle(provisioner.engine, provisioner.planning, provisioner.fleet, dump_before_delete=before_delete)
    result = lifecycle.destroy("shop", delete_data=True, yes=True)
    assert dumped == ["shop:True"] and backend.calls[-1] == "destroy:True"
    assert result.status == "deleted"
    lifecycle.provision("shop")
    lifecycle.destroy("shop", delete_data=True, yes=True, backup=False)
    assert dumped == ["shop:True"]  # no dump with backup=False


def test_destroy_keeps_data_and_says_how_to_delete_it(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, store = setup
    provisioner.provision("shop")
    result = provisioner.destroy("shop")
    assert backend.calls[-1] == "destroy:False"
    assert result.status == "destroyed" and any("--delete-data --yes" in m for m in result.messages)
    assert record_status(store) == "destroyed"
    with pytest.raises(Exception, match="was destroyed"):
        provisioner.control("shop", "start")


def test_a_typo_creates_nothing_and_names_the_declared_project(
        setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, store = setup
    for run in (lambda: provisioner.provision("shpo"), lambda: provisioner.provision_many(["shop", "shpo"])):
        with pytest.raises(UndeclaredProject, match="did you mean 'shop'.*--create") as info:
            run()
        assert info.value.exit_code == 2
    assert backend.calls == [] and not store.root.exists()  # nothing contacted, nothing written
    assert provisioner.provision("shpo", create=True).changed  # explicit: created
    assert provisioner.provision("shpo").action == "no-op"  # and known from then on


def test_unknown_projects_are_not_found(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, _, _ = setup
    with pytest.raises(ProjectNotFound, match="never provisioned"):
        provisioner.outputs("ghost")


def test_keep_going_continues_after_a_failure(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, _ = setup
    backend.broken_marker = "broken-one"
    summary = provisioner.provision_many(["broken-one", "shop"], keep_going=True, create=True)
    assert [r.status for r in summary.results] == ["failed", "running"]
    again = provisioner.provision_many(["broken-one", "shop"], create=True)
    assert [r.status for r in again.results] == ["failed", "skipped"]
    with pytest.raises(InvalidName):  # a bad name stops the whole run before anything starts
        provisioner.provision_many(["shop", "Bad"], keep_going=True)


def test_parallel_provision_keeps_the_order_of_results(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, _ = setup
    names = [f"p{i}" for i in range(8)]
    summary = provisioner.provision_many(names, parallel=4, create=True)
    assert [r.project for r in summary.results] == names and summary.ok
    assert sorted(backend.deployed) == sorted(names)


def _with_images(provisioner: Provisioner, api: str) -> Provisioner:
    config = load_env("dev", provisioner.config.root, environ={}, overrides={"images.api": api})
    return Provisioner(config, provisioner.backend, provisioner.store, hooks=provisioner.hooks)


def test_a_failed_update_of_a_running_stack_is_rolled_back(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    from provision.core.errors import RolledBack
    from provision.state import history

    provisioner, backend, store = setup
    served = provisioner.provision("shop")
    good = backend.texts["shop"]
    backend.broken_marker = "postgrest/postgrest:v99"
    broken = _with_images(provisioner, "postgrest/postgrest:v99")
    with pytest.raises(RolledBack, match="rolled back; the previous version is serving again"):
        broken.provision("shop")
    assert backend.calls == ["apply:create", "apply:update", "apply:update"]
    assert backend.texts["shop"] == good
    assert record_status(store) == "rolled back"
    assert [r["result"] for r in history.read(store.root)] == ["ok", "rolled back"]
    summary = broken.provision_many(["shop"])
    assert summary.results[0].status == "rolled back" and not summary.ok
    # the summary names what serves: the previous version's URLs
    assert served.api_url and summary.results[0].api_url == served.api_url
    assert summary.results[0].to_dict()["db_url"] == served.to_dict()["db_url"]


def test_history_records_who_what_when(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    from provision.state import history

    provisioner, _, store = setup
    provisioner.provision("shop")
    provisioner.provision("shop")  # a no-op changes nothing and is not recorded
    provisioner.control("shop", "stop")
    provisioner.destroy("shop")
    records = list(history.read(store.root, env="dev", project="shop"))
    assert [r["action"] for r in records] == ["create", "stop", "destroy"]
    first = records[0]
    assert set(first) >= {"time", "user", "host", "env", "project", "action", "config_hash", "result", "duration_s"}
    assert first["time"].endswith("Z") and first["result"] == "ok" and len(first["config_hash"]) == 16


def _hook(directory: Path, name: str, body: str) -> None:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_hooks_run_in_order_with_the_project_in_their_environment(
        setup: tuple[Provisioner, MemoryBackend, StateStore], tmp_path: Path) -> None:
    provisioner, backend, _ = setup
    log = tmp_path / "hooks.log"
    hooks = provisioner.hooks.directory
    for name in ("pre-provision", "post-provision", "pre-destroy", "post-destroy"):
        _hook(hooks, name, f'echo "{name} $PROVISION_ENV $PROVISION_PROJECT $PROVISION_BACKEND $PROVISION_DB_URL" >> {log}\n')
    provisioner.provision("shop")
    provisioner.destroy("shop")
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["pre-provision", "post-provision", "pre-destroy", "post-destroy"]
    assert lines[1].split()[1:4] == ["dev", "shop", "memory"]
    assert lines[1].split()[4].startswith("postgresql://app:") and "***" not in lines[1]


def test_a_failing_pre_hook_aborts_that_project_only(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, _ = setup
    _hook(provisioner.hooks.directory, "pre-provision", '[ "$PROVISION_PROJECT" != bad ] || exit 3\n')
    summary = provisioner.provision_many(["bad", "shop"], keep_going=True, create=True)
    assert [r.status for r in summary.results] == ["failed", "running"]
    assert "exited with status 3" in (summary.results[0].error or "")
    assert backend.calls == ["apply:create"] and "bad" not in backend.deployed


def test_skip_hooks(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    from provision.infra.hooks import Hooks

    provisioner, backend, store = setup
    _hook(provisioner.hooks.directory, "pre-provision", "exit 1\n")
    skipping = Provisioner(provisioner.config, backend, store, hooks=Hooks(provisioner.hooks.directory, enabled=False))
    assert skipping.provision("shop").status == "running"


def test_plan_outcomes(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, _ = setup
    assert [(i.project, i.outcome) for i in provisioner.plan()] == [("shop", "create")]
    provisioner.provision("shop")
    assert [i.outcome for i in provisioner.plan()] == ["no-op"]
    changed = _with_images(provisioner, "postgrest/postgrest:v13")
    [item] = changed.plan()
    assert item.outcome == "update" and "-    image: postgrest/postgrest:v12.2.3" in item.diff
    assert "+    image: postgrest/postgrest:v13" in item.diff
    backend.drift = "edited by hand"
    assert [i.outcome for i in provisioner.plan()] == ["drift"]
    backend.drift = None
    backend.extra_deployed = ("old-one",)
    assert [(i.project, i.outcome) for i in provisioner.plan()] == [("shop", "no-op"), ("old-one", "orphan")]
    assert backend.calls == ["apply:create"]  # plan never changes anything


def test_repeated_verbs_change_nothing_and_write_no_history(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    from provision.state import history

    provisioner, backend, store = setup
    provisioner.provision("shop")
    assert provisioner.control("shop", "stop").changed
    again = provisioner.control("shop", "stop")
    assert not again.changed and again.status == "stopped"
    assert provisioner.control("shop", "start").changed
    assert not provisioner.control("shop", "start").changed
    first = provisioner.destroy("shop")
    second = provisioner.destroy("shop")
    assert first.changed and not second.changed
    assert backend.calls == ["apply:create", "stop", "start", "destroy:False"]
    actions = [r["action"] for r in history.read(store.root, env="dev", project="shop")]
    assert actions == ["create", "stop", "start", "destroy"]
    assert record_status(store) == "destroyed"


@dataclass
class HandleOnlyBackend(MemoryBackend):
    """Finds and acts on a stack only through the handle it is given (as Coolify finds a service by its uuid),
    never by the project's name, and notes every handle it was given."""

    given: list[Handle | None] = field(default_factory=list)

    def _by_handle(self, target: Target, known: Handle | None) -> Target:
        name = known.project if isinstance(known, MemoryHandle) else "nothing-known"
        return Target(target.config, target.config.project(name))

    def observe(self, target: Target, known: Handle | None) -> Observed:
        self.given.append(known)
        if not isinstance(known, MemoryHandle):
            return Observed(exists=False)
        return super().observe(self._by_handle(target, known), known)

    def control(self, target: Target, observed: Observed, verb: str, *, prepared: Prepared | None = None) -> bool:
        return super().control(self._by_handle(target, observed.handle), observed, verb)

    def lock(self, target: Target, known: Handle | None, *, timeout: float) -> AbstractContextManager[None]:
        self.given.append(known)
        return super().lock(target, known, timeout=timeout)


def test_a_fresh_backend_instance_acts_on_the_recorded_handle(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, store = setup
    provisioner.provision("shop")
    record = store.read_record("dev", "shop")
    assert record is not None and record.handle == {"project": "shop"}
    # the stack is known to the backend by an id only the handle holds (a Coolify uuid), not by the project's name
    for book in (backend.deployed, backend.running, backend.texts):
        book["stack-7"] = book.pop("shop")
    store.write_record(record.evolve(handle={"project": "stack-7"}))
    # a later run: a new backend instance over the same deployed stacks and state, knowing nothing in memory
    fresh = HandleOnlyBackend(deployed=backend.deployed, running=backend.running, texts=backend.texts)
    stopped = Provisioner(provisioner.config, fresh, store).control("shop", "stop")
    assert stopped.changed and stopped.status == "stopped" and fresh.calls == ["stop"]
    assert backend.running == {"stack-7": False}  # the stack the recorded handle names is the one stopped
    # it was given the recorded handle each time (by name it finds nothing: that stop would change nothing)
    assert fresh.given and all(h == MemoryHandle("stack-7") for h in fresh.given)


def test_version_1_records_are_migrated(tmp_path: Path) -> None:
    import json

    store = StateStore(tmp_path / "state")
    directory = tmp_path / "state" / "dev" / "shop"
    directory.mkdir(parents=True)
    (directory / "state.json").write_text(json.dumps({
        "project": "shop", "env": "dev", "backend": "coolify", "status": "provisioned", "config_hash": "ab" * 8,
        "coolify": {"project_uuid": "p1", "environment_uuid": "e1", "service_uuid": "s1", "api_url": "http://x/"},
        "updated_at": "2026-01-01T00:00:00Z", "unknown_key": 1,
    }))
    record = store.read_record("dev", "shop")
    assert record is not None and record.status == "provisioned"
    assert record.handle == {"project_uuid": "p1", "environment_uuid": "e1", "service_uuid": "s1", "api_url": "http://x/"}
    store.write_record(record)
    assert json.loads((directory / "state.json").read_text())["schema_version"] == 2
    local = {"project": "a", "env": "dev", "service_hashes": {"db": "1"}, "compose_hashes": {"db": "c"}}
    (directory / "state.json").write_text(json.dumps(local))
    migrated = store.read_record("dev", "shop")
    assert migrated is not None and migrated.handle == {"service_hashes": {"db": "1"}, "compose_hashes": {"db": "c"}}
    (directory / "state.json").write_text(json.dumps({"schema_version": 99}))
    from provision.core.errors import StateError

    with pytest.raises(StateError, match="newer than this provision"):
        store.read_record("dev", "shop")


def test_only_a_change_takes_the_backend_lock(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, _ = setup
    provisioner.provision("shop")
    assert backend.locked == ["shop"]
    provisioner.provision("shop")  # no-op
    provisioner.control("shop", "start")  # running already
    provisioner.plan()
    provisioner.status()
    assert backend.locked == ["shop"]
    provisioner.control("shop", "stop")
    provisioner.destroy("shop")
    provisioner.destroy("shop")  # gone already
    assert backend.locked == ["shop", "shop", "shop"]


def test_a_new_postgresql_major_is_refused_and_planned_as_upgrade_db(
        setup: tuple[Provisioner, MemoryBackend, StateStore], project_root: Path) -> None:
    provisioner, backend, store = setup
    provisioner.provision("shop")
    backend.data_majors["shop"] = 15
    write_env(project_root, "dev", ENV.replace("postgres:16-alpine", "postgres:17"))
    newer = Provisioner(load_env("dev", project_root, environ={}), backend, store)
    [item] = newer.plan("shop")
    assert item.outcome == "upgrade-db" and "15 → 17" in item.reason and item.changes
    with pytest.raises(MajorUpgradeRequired, match="upgrade-db"):
        newer.provision("shop")
    assert backend.calls == ["apply:create"]  # nothing was applied
    write_env(project_root, "dev", ENV.replace("postgres:16-alpine", "postgres:15.9"))  # same major: a plain update
    assert Provisioner(load_env("dev", project_root, environ={}), backend, store).provision("shop").action == "update"


def test_one_project_upgraded_on_its_own_image_leaves_the_others_on_the_envs(
        project_root: Path, tmp_path: Path) -> None:
    write_env(project_root, "dev", ENV.replace("[{name: shop}]", "[{name: shop}, {name: blog}]"))
    backend, store = MemoryBackend(), StateStore(tmp_path / "state")
    Provisioner(load_env("dev", project_root, environ={}), backend, store).provision_many(["shop", "blog"])
    backend.data_majors.update(shop=15, blog=15)
    write_env(project_root, "dev", ENV.replace("[{name: shop}]", "[{name: shop, images: {db: 'postgres:17'}}, {name: blog}]"))
    provisioner = Provisioner(load_env("dev", project_root, environ={}), backend, store)
    plans = {item.project: item for item in provisioner.plan()}
    assert plans["shop"].outcome == "upgrade-db" and plans["blog"].outcome == "no-op"
    assert provisioner.provision("blog").changed is False  # the project not yet upgraded still provisions
    assert "image: \"postgres:17\"" in provisioner.render("shop")[0].text
    assert "image: \"postgres:16-alpine\"" in provisioner.render("blog")[0].text


def test_an_env_file_set_back_to_the_kept_major_plans_a_rollback_not_a_downgrade(
        setup: tuple[Provisioner, MemoryBackend, StateStore], project_root: Path) -> None:
    provisioner, backend, store = setup
    provisioner.provision("shop")
    record = store.read_record("dev", "shop")
    assert record is not None
    store.write_record(record.evolve(images={"db": "postgres:17", "api": record.images["api"]}, kept_data={
        "state": "done", "image": "postgres:15", "major": 15, "volume": "shop_dev_pgdata", "volume_key": "pgdata",
        "new_image": "postgres:17", "new_major": 17, "new_volume_key": "pgdata_pg17_x"}))
    backend.data_majors["shop"] = 17
    write_env(project_root, "dev", ENV.replace("postgres:16-alpine", "postgres:15"))
    older = Provisioner(load_env("dev", project_root, environ={}), backend, store)
    [item] = older.plan("shop")
    assert item.outcome == "upgrade-db" and "--rollback --yes" in item.reason and "17 → 15" in item.reason
    assert "upgrade-db --env=dev --project=shop --yes`" not in item.reason  # no upgrade-db that would downgrade
    with pytest.raises(MajorUpgradeRequired, match="--rollback --yes") as info:
        older.provision("shop")
    assert "images.db in envs/dev.yml back to postgres:17" in str(info.value)


@pytest.mark.parametrize(("env_image", "says"), [
    ("postgres:15", "envs/dev.yml names postgres:15 (images.db): provision keeps the project on it"),
    ("postgres:17", "envs/dev.yml still names postgres:17 (images.db): set it back to postgres:15"),
])
def test_the_note_after_a_rollback_says_what_the_env_file_names(project_root: Path, env_image: str, says: str) -> None:
    write_env(project_root, "dev", ENV.replace("postgres:16-alpine", env_image))
    config = load_env("dev", project_root, environ={})
    assert image_note(Target(config, config.project("shop")), "postgres:15").startswith(says)


def test_what_the_backend_refuses_in_preflight_stops_the_run_before_any_state_is_written(
        setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, store = setup
    backend.refuse = ImageUnavailable("postgres:99", "images.db in envs/dev.yml", "no such host")
    with pytest.raises(ImageUnavailable, match="postgres:99 \\(images.db in envs/dev.yml\\)"):
        provisioner.provision("shop")
    with pytest.raises(ProvisionError, match="docker load --input"):
        provisioner.provision_many(["shop"])
    assert backend.calls == [] and not store.root.exists()  # no record, secrets, lock or history line


@dataclass
class SlowDb(MemoryBackend):
    """run_sql raises `failures` in turn before it runs anything."""

    failures: list[ProvisionError] = field(default_factory=list)

    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        if self.failures:
            raise self.failures.pop(0)
        return super().run_sql(target, observed, sql, timeout=timeout, user=user, purpose=purpose)


def test_the_roles_wait_retries_what_the_backend_calls_starting_and_reads_no_message(
        project_root: Path, tmp_path: Path) -> None:
    write_env(project_root, "dev", ENV)
    config = load_env("dev", project_root, environ={})
    backend = SlowDb(failures=[DatabaseStarting("warming"), DatabaseStarting("still warming")])
    Provisioner(config, backend, StateStore(tmp_path / "state"), sleep=lambda _: None).provision("shop")
    assert not backend.failures and backend.statements  # waited through both, then made the roles
    other = SlowDb(failures=[ProvisionError("the database system is starting up (a message, not a type)")])
    with pytest.raises(ProvisionError, match="could not be made") as info:
        Provisioner(config, other, StateStore(tmp_path / "other"), sleep=lambda _: None).provision("shop")
    assert not isinstance(info.value, DatabaseStarting) and not other.statements  # raised at once
