"""The orchestration in core.py, against an in-memory backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provision.backends.base import Endpoints, Observed, Plan, Prepared, ServiceState, Target
from provision.config import EnvConfig, load_env
from provision.core import Provisioner
from provision.errors import ConfirmationRequired, HealthTimeout, InvalidName, ProjectNotFound
from provision.render import Ports, RenderedStack, stack_hash
from provision.secrets import SecretURL, generate_missing
from provision.state import StateStore
from tests.conftest import write_env

ENV = """
images: {db: "postgres:16-alpine", api: "postgrest/postgrest:v12.2.3"}
projects: [{name: shop}]
health: {timeout: 5}
"""


@dataclass
class MemoryBackend:
    """Keeps 'deployed' stacks in a dict and records every changing call."""

    name: str = "memory"
    deployed: dict[str, dict[str, str]] = field(default_factory=dict)  # project -> service hashes
    running: dict[str, bool] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    healthy: bool = True
    broken_marker: str | None = None  # wait() fails while the applied text contains this
    secrets: dict[str, Mapping[str, object]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    drift: str | None = None
    extra_deployed: tuple[str, ...] = ()

    def describe(self) -> str:
        return "Memory provider"

    def observe(self, target: Target) -> Observed:
        hashes = self.deployed.get(target.project)
        if hashes is None:
            return Observed(exists=False)
        state = "running" if self.running[target.project] else "exited"
        return Observed(exists=True, config_hash=stack_hash(hashes), applied_text=self.texts.get(target.project),
                        services={s: ServiceState(state) for s in hashes}, drift=self.drift)

    def prepare(self, target: Target, observed: Observed, *, create: bool = True) -> Prepared:
        existing = self.secrets.get(target.project, {})
        if not create:
            return Prepared(secrets=existing, ports=Ports(1, 2))  # type: ignore[arg-type]
        self.secrets[target.project] = generate_missing(existing)  # type: ignore[arg-type]
        return Prepared(secrets=self.secrets[target.project], ports=Ports(1, 2))  # type: ignore[arg-type]

    def apply(self, target: Target, stack: RenderedStack, prepared: Prepared, plan: Plan) -> None:
        self.calls.append(f"apply:{plan.action.value}")
        self.texts[target.project] = stack.text
        self.deployed[target.project] = dict(stack.service_hashes) or {"from-text": stack.config_hash}
        self.running[target.project] = True

    def wait(self, target: Target, prepared: Prepared, *, timeout: float) -> Endpoints:
        broken = self.broken_marker and self.broken_marker in self.texts.get(target.project, "")
        if not self.healthy or broken:
            raise HealthTimeout("not healthy", logs="db-1 | boom")
        return self.endpoints(target, prepared)

    def endpoints(self, target: Target, prepared: Prepared) -> Endpoints:
        password = prepared.secrets["DB_PASSWORD"].reveal() if prepared.secrets else ""
        return Endpoints("http://127.0.0.1:1", SecretURL(f"postgresql://app:{password}@127.0.0.1:2/app"))

    def control(self, target: Target, verb: str) -> bool:
        self.calls.append(verb)
        was = self.running.get(target.project, False)
        self.running[target.project] = verb != "stop"
        return verb == "restart" or was != self.running[target.project]

    def destroy(self, target: Target, *, delete_data: bool, backup_to: Path | None) -> list[str]:
        self.calls.append(f"destroy:{delete_data}:{backup_to is not None}")
        self.deployed.pop(target.project, None)
        return ["removed"]

    def logs(self, target: Target, *, service: str | None, tail: int) -> str:
        return ""

    def observe_env(self, config: EnvConfig, *, full: bool = False) -> dict[str, Observed]:
        found = {p: self.observe(Target(config, config.project(p))) for p in self.deployed}
        return {**found, **{p: Observed(exists=True) for p in self.extra_deployed}}



@pytest.fixture
def setup(project_root: Path, tmp_path: Path) -> tuple[Provisioner, MemoryBackend, StateStore]:
    write_env(project_root, "dev", ENV)
    config = load_env("dev", project_root, environ={})
    backend = MemoryBackend()
    store = StateStore(tmp_path / "state")
    return Provisioner(config, backend, store), backend, store  # type: ignore[arg-type]


def test_changed_is_true_exactly_when_an_action_ran(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, store = setup
    first = provisioner.provision("shop")
    assert first.changed and first.action == "create" and backend.calls == ["apply:create"]
    second = provisioner.provision("shop")
    assert not second.changed and second.action == "no-op" and backend.calls == ["apply:create"]
    backend.running["shop"] = False
    third = provisioner.provision("shop")
    assert third.changed and third.action == "start"
    assert store.read_state("dev", "shop")["status"] == "provisioned"


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
    assert backend.calls == ["apply:create", "destroy:False:False"]  # the failed first create is removed
    assert store.read_state("dev", "shop")["status"] == "failed"


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
    result = provisioner.destroy("shop", delete_data=True, yes=True)
    assert backend.calls[-1] == "destroy:True:True"
    assert result.status == "deleted"


def test_destroy_keeps_data_and_says_how_to_delete_it(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, store = setup
    provisioner.provision("shop")
    result = provisioner.destroy("shop")
    assert backend.calls[-1] == "destroy:False:False"
    assert result.status == "destroyed" and any("--delete-data --yes" in m for m in result.messages)
    assert store.read_state("dev", "shop")["status"] == "destroyed"
    with pytest.raises(Exception, match="was destroyed"):
        provisioner.control("shop", "start")


def test_unknown_projects_are_not_found(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, _, _ = setup
    with pytest.raises(ProjectNotFound, match="never provisioned"):
        provisioner.outputs("ghost")


def test_keep_going_continues_after_a_failure(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, _, _ = setup
    summary = provisioner.provision_many(["Bad", "shop"], keep_going=True)
    assert [r.status for r in summary.results] == ["failed", "running"]
    assert [r.status for r in provisioner.provision_many(["Bad", "shop"]).results] == ["failed", "skipped"]


def test_parallel_provision_keeps_the_order_of_results(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, _ = setup
    names = [f"p{i}" for i in range(8)]
    summary = provisioner.provision_many(names, parallel=4)
    assert [r.project for r in summary.results] == names and summary.ok
    assert sorted(backend.deployed) == sorted(names)


def _with_images(provisioner: Provisioner, api: str) -> Provisioner:
    config = load_env("dev", provisioner.config.root, environ={}, overrides={"images.api": api})
    return Provisioner(config, provisioner.backend, provisioner.store, hooks=provisioner.hooks)


def test_a_failed_update_of_a_running_stack_is_rolled_back(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    from provision import history
    from provision.core import RolledBack

    provisioner, backend, store = setup
    provisioner.provision("shop")
    good = backend.texts["shop"]
    backend.broken_marker = "postgrest/postgrest:v99"
    broken = _with_images(provisioner, "postgrest/postgrest:v99")
    with pytest.raises(RolledBack, match="rolled back; the previous version is serving again"):
        broken.provision("shop")
    assert backend.calls == ["apply:create", "apply:update", "apply:update"]
    assert backend.texts["shop"] == good
    assert store.read_state("dev", "shop")["status"] == "rolled back"
    assert [r["result"] for r in history.read(store.root)] == ["ok", "rolled back"]
    summary = broken.provision_many(["shop"])
    assert summary.results[0].status == "rolled back" and not summary.ok


def test_history_records_who_what_when(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    from provision import history

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
    summary = provisioner.provision_many(["bad", "shop"], keep_going=True)
    assert [r.status for r in summary.results] == ["failed", "running"]
    assert "exited with status 3" in (summary.results[0].error or "")
    assert backend.calls == ["apply:create"] and "bad" not in backend.deployed


def test_skip_hooks(setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    from provision.hooks import Hooks

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
