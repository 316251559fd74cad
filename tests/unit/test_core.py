"""The orchestration in core.py, against an in-memory backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provision.backends.base import Endpoints, Observed, Plan, Prepared, ServiceState, Target, stack_hash
from provision.config import EnvConfig, load_env
from provision.core import Provisioner
from provision.errors import ConfirmationRequired, HealthTimeout, InvalidName, ProjectNotFound
from provision.render import Ports, RenderedStack
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
    secrets: dict[str, Mapping[str, object]] = field(default_factory=dict)

    def describe(self) -> str:
        return "Memory provider"

    def observe(self, target: Target) -> Observed:
        hashes = self.deployed.get(target.project)
        if hashes is None:
            return Observed(exists=False)
        state = "running" if self.running[target.project] else "exited"
        return Observed(exists=True, config_hash=stack_hash(hashes),
                        services={s: ServiceState(state) for s in hashes})

    def prepare(self, target: Target, observed: Observed, *, create: bool = True) -> Prepared:
        existing = self.secrets.get(target.project, {})
        if not create:
            return Prepared(secrets=existing, ports=Ports(1, 2))  # type: ignore[arg-type]
        self.secrets[target.project] = generate_missing(existing)  # type: ignore[arg-type]
        return Prepared(secrets=self.secrets[target.project], ports=Ports(1, 2))  # type: ignore[arg-type]

    def apply(self, target: Target, stack: RenderedStack, prepared: Prepared, plan: Plan) -> None:
        self.calls.append(f"apply:{plan.action.value}")
        self.deployed[target.project] = dict(stack.service_hashes)
        self.running[target.project] = True

    def wait(self, target: Target, prepared: Prepared, *, timeout: float) -> Endpoints:
        if not self.healthy:
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

    def observe_env(self, config: EnvConfig) -> dict[str, Observed]:
        return {p: self.observe(Target(config, config.project(p))) for p in self.deployed}

    def deployed_projects(self, config: EnvConfig) -> list[str]:
        return sorted(self.deployed)

    def forget(self, target: Target) -> None:
        self.calls.append("forget")


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


def test_a_health_failure_propagates_and_is_recorded_as_unfinished(
        setup: tuple[Provisioner, MemoryBackend, StateStore]) -> None:
    provisioner, backend, store = setup
    backend.healthy = False
    summary = provisioner.provision_many(["shop"])
    assert not summary.ok and summary.results[0].status == "failed"
    assert "boom" in (summary.results[0].error or "")
    assert store.read_state("dev", "shop")["status"] == "applying"


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
    assert backend.calls[-2:] == ["destroy:True:True", "forget"]
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
