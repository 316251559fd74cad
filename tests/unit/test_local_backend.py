"""LocalBackend in process, through its seams: a FakeRunner answers the docker/compose CLI (with recorded
`docker ps` / `docker volume ls` output) and a small fake stands in for the Docker SDK client."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests.exceptions
from dotenv import dotenv_values

from provision.backends.local import LocalBackend, LocalHandle
from provision.backends.local.backend import COMPOSE_FILE, ENV_FILE
from provision.backends.local.compose import ComposeCLI
from provision.backends.local.ports import LeaseBook
from provision.core.config import load_env
from provision.core.errors import (
    BackendError,
    BackendUnavailable,
    CommandFailed,
    ContainerCrashed,
    DatabaseStarting,
    ImageUnavailable,
    LimitsRefused,
    ProvisionError,
    StateError,
)
from provision.core.model import (
    ABSENT,
    Destroyed,
    Endpoints,
    Handle,
    Observed,
    Ports,
    Prepared,
    ServiceState,
    Target,
)
from provision.core.planner import Action, Plan
from provision.core.render import RenderedStack, render_stack, stack_hash
from provision.core.secrets import Secret
from provision.infra.commands import Completed
from provision.infra.fsutil import env_file_text
from provision.service import Provisioner
from provision.service import engine as engine_module
from provision.state.layout import BackendFiles
from provision.state.records import StateStore
from tests.conftest import write_env
from tests.unit.fakes import FakeRunner

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "docker"
PS_RUNNING = (FIXTURES / "ps-running-20.10.24.jsonl").read_text()
PS_STOPPED = (FIXTURES / "ps-stopped-20.10.24.jsonl").read_text()
VOLUME_LS = (FIXTURES / "volume-ls-20.10.24.jsonl").read_text()

# the labels the recorded containers carry (env "demo", project "shop", compose project "shop_demo")
SERVICE_HASHES = {"api": "114b61ce2f94b840", "db": "b5177af3c1931b7d"}
COMPOSE_HASHES = {
    "api": "7fffe1a3337ac20947db315ee7216cef6c59f63c2ce299632eb4076ea7fcea39",
    "db": "abde491b8dd96d0204280a100acae653642abcdc86508f9677d78473bdf7333d",
}
PORT_RANGE = (43100, 43199)
ENV = f"""
images: {{db: "postgres:16-alpine", api: "postgrest/postgrest:v12.2.3"}}
projects: [{{name: shop}}]
health: {{timeout: 5}}
local: {{port_range: [{PORT_RANGE[0]}, {PORT_RANGE[1]}]}}
"""
PROJECT_LABEL = "label=com.docker.compose.project=shop_demo"
SECRETS = {"DB_PASSWORD": Secret("pw-0123456789abcdef"), "JWT_SECRET": Secret("jwt-" + "x" * 32)}


# --- a fake Docker SDK client ---------------------------------------------------------------------
@dataclass
class FakeVolume:
    name: str
    removed: list[str]
    error: Exception | None = None

    def remove(self, force: bool = False) -> None:
        if self.error is not None:
            raise self.error
        self.removed.append(self.name)


@dataclass
class FakeContainer:
    id: str
    attrs: dict[str, Any]


@dataclass
class FakeCollection:
    """`client.volumes` / `client.containers` / `client.networks`: `.list(**kwargs)` answers `items`."""

    items: list[Any] = field(default_factory=list)
    error: Exception | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    def list(self, **kwargs: Any) -> list[Any]:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        return list(self.items)


@dataclass
class FakeExecAPI:
    """The low-level `client.api`: the exec calls that `pg_dump` streams through, and the network list (one
    request whose answer carries each network's IPAM)."""

    chunks: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    exit_code: int = 0
    created: list[tuple[str, list[str]]] = field(default_factory=list)
    network_list: FakeCollection = field(default_factory=FakeCollection)

    def networks(self) -> list[Any]:
        return self.network_list.list()

    def exec_create(self, container: str, cmd: list[str], **kwargs: Any) -> dict[str, str]:
        self.created.append((container, list(cmd)))
        return {"Id": "exec-1"}

    def exec_start(self, exec_id: str, *, stream: bool, demux: bool) -> Iterator[tuple[bytes | None, bytes | None]]:
        assert exec_id == "exec-1" and stream and demux
        return iter(self.chunks)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return {"ExitCode": self.exit_code}


@dataclass
class FakeDocker:
    volumes: FakeCollection = field(default_factory=FakeCollection)
    containers: FakeCollection = field(default_factory=FakeCollection)
    networks: FakeCollection = field(default_factory=FakeCollection)
    api: FakeExecAPI = field(default_factory=FakeExecAPI)
    removed: list[str] = field(default_factory=list)

    def with_volumes(self, *names: str) -> FakeDocker:
        self.volumes.items = [FakeVolume(name, self.removed) for name in names]
        return self


def no_docker() -> Any:
    raise AssertionError("the Docker SDK client was asked for, but this path should need only the CLI")


# --- fixtures and helpers --------------------------------------------------------------------------
@pytest.fixture
def target(project_root: Path) -> Target:
    write_env(project_root, "demo", ENV)
    config = load_env("demo", project_root, environ={})
    return Target(config, config.project("shop"))


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


@pytest.fixture
def rendered(store: StateStore) -> tuple[Path, Path]:
    """The project's rendered compose file and compose env file, as a provision leaves them (with the service's
    secrets file)."""
    work = BackendFiles(store.layout).ensure_work("demo", "shop")
    (work / COMPOSE_FILE).write_text("services:\n  db: {}\n  api: {}\n")
    store.write_secrets("demo", "shop", SECRETS)
    (work / ENV_FILE).write_text(env_file_text(SECRETS))
    return work / COMPOSE_FILE, work / ENV_FILE


def backend(store: StateStore, runner: FakeRunner, docker: Any = None) -> LocalBackend:
    factory = no_docker if docker is None else (lambda: docker)
    return LocalBackend(BackendFiles(store.layout), ComposeCLI(runner, environ={}), docker_client=factory,
                        db_ping=lambda host, port: lambda: None)


def compose_calls(runner: FakeRunner) -> list[tuple[str, ...]]:
    return [call for call in runner.calls if call[:2] == ("docker", "compose")]


def subcommands(runner: FakeRunner) -> list[str]:
    """The compose subcommand of each compose call (what follows the global flags)."""
    found = []
    for call in compose_calls(runner):
        rest = list(call[2:])
        while rest and rest[0] in ("--project-name", "--file", "--env-file"):
            rest = rest[2:]
        found.append(rest[0])
    return found


def observed_from(store: StateStore, ps_output: str, target: Target) -> Observed:
    return backend(store, FakeRunner().on("docker", "ps", stdout=ps_output)).observe(target, None)


# --- 1. observe --------------------------------------------------------------------------------------
def test_observe_without_containers_is_absent(target: Target, store: StateStore) -> None:
    runner = FakeRunner().on("docker", "ps", stdout="").on("docker", "volume", "ls", stdout="")
    observed = backend(store, runner).observe(target, None)
    assert observed == Observed(exists=False)
    assert observed.handle is None and observed.drift is None and observed.summary() == "absent"
    ps, volumes = runner.calls
    assert ps[:2] == ("docker", "ps") and PROJECT_LABEL in ps and volumes[:3] == ("docker", "volume", "ls")


def test_observe_without_containers_finds_the_kept_data_volume(target: Target, store: StateStore) -> None:
    listed = '{"Name": "shop_demo_pgdata", "Labels": "io.provision.project=shop,io.provision.env=demo"}\n'
    runner = FakeRunner().on("docker", "ps", stdout="").on("docker", "volume", "ls", stdout=listed)
    assert backend(store, runner).observe(target, None) == Observed(exists=False, kept_data="shop_demo_pgdata")


def test_observe_reads_recorded_docker_ps_of_db_and_api(target: Target, store: StateStore) -> None:
    runner = FakeRunner().on("docker", "ps", stdout=PS_RUNNING)
    observed = backend(store, runner).observe(target, None)  # no_docker: observe never opens the SDK
    assert observed.exists and observed.ready and observed.summary() == "running"
    assert dict(observed.services) == {"api": ServiceState("running", ""), "db": ServiceState("running", "healthy")}
    assert observed.config_hash == stack_hash(SERVICE_HASHES)
    assert isinstance(observed.handle, LocalHandle)
    assert dict(observed.handle.service_hashes) == SERVICE_HASHES
    assert dict(observed.handle.compose_hashes) == COMPOSE_HASHES
    assert observed.drift is None and observed.applied_text is None
    assert [c for c in runner.calls if PROJECT_LABEL not in c] == []


def test_observe_of_a_stopped_stack_and_the_applied_text(target: Target, store: StateStore,
                                                         rendered: tuple[Path, Path]) -> None:
    observed = observed_from(store, PS_STOPPED, target)
    assert observed.exists and not observed.any_running and observed.summary() == "stopped"
    assert {s.state for s in observed.services.values()} == {"exited"}
    assert observed.applied_text == rendered[0].read_text()


def test_the_handle_round_trips_through_the_record(target: Target, store: StateStore) -> None:
    observed = observed_from(store, PS_RUNNING, target)
    assert isinstance(observed.handle, LocalHandle)
    data = json.loads(json.dumps(observed.handle.to_dict()))
    assert backend(store, FakeRunner()).load_handle(data) == observed.handle
    assert backend(store, FakeRunner()).load_handle({}) is None
    assert backend(store, FakeRunner()).load_handle({"uuid": "coolify-thing"}) is None


# --- 2. drift ----------------------------------------------------------------------------------------
def observe_with(store: StateStore, target: Target, known: Any, ps_output: str = PS_RUNNING) -> Observed:
    runner = FakeRunner().on("docker", "ps", stdout=ps_output).on("docker", "volume", "ls", stdout="")
    return backend(store, runner).observe(target, known)


def test_no_drift_when_the_labels_match_the_known_handle(target: Target, store: StateStore) -> None:
    known = LocalHandle(service_hashes=dict(SERVICE_HASHES), compose_hashes=dict(COMPOSE_HASHES))
    assert observe_with(store, target, known).drift is None


def test_no_drift_without_a_known_handle(target: Target, store: StateStore) -> None:
    assert observe_with(store, target, None).drift is None
    assert observe_with(store, target, object()).drift is None  # another backend's handle is no baseline


def test_drift_when_a_provision_config_hash_label_differs(target: Target, store: StateStore) -> None:
    known = LocalHandle(service_hashes={**SERVICE_HASHES, "db": "0000000000000000"},
                        compose_hashes=dict(COMPOSE_HASHES))
    drift = observe_with(store, target, known).drift
    assert drift is not None and "replaced outside provision" in drift
    assert "db" in drift and "api" not in drift


def test_drift_when_the_running_containers_labels_were_changed(target: Target, store: StateStore) -> None:
    """The same check from the other side: the containers now carry another io.provision.config-hash."""
    known = LocalHandle(service_hashes=dict(SERVICE_HASHES), compose_hashes=dict(COMPOSE_HASHES))
    replaced = PS_RUNNING.replace("io.provision.config-hash=114b61ce2f94b840", "io.provision.config-hash=ffffffffffffffff")
    assert replaced != PS_RUNNING
    drift = observe_with(store, target, known, replaced).drift
    assert drift is not None and "api" in drift and "db" not in drift


def test_drift_when_a_compose_config_hash_label_differs(target: Target, store: StateStore) -> None:
    known = LocalHandle(service_hashes=dict(SERVICE_HASHES), compose_hashes={**COMPOSE_HASHES, "api": "a" * 64})
    drift = observe_with(store, target, known).drift
    assert drift is not None and "recreated outside provision" in drift
    assert drift.startswith("api ")


def test_no_drift_for_an_absent_stack_even_with_a_known_handle(target: Target, store: StateStore) -> None:
    known = LocalHandle(service_hashes={"db": "1"}, compose_hashes={"db": "2"})
    assert observe_with(store, target, known, "").drift is None


# --- 3. prepare --------------------------------------------------------------------------------------
def test_prepare_generates_secrets_and_leases_ports_but_writes_no_secrets(target: Target,
                                                                         store: StateStore) -> None:
    runner = FakeRunner()
    prepared = backend(store, runner).prepare(target, ABSENT, {}, create=True)
    assert prepared.new_secrets and not prepared.preview
    assert {"DB_PASSWORD", "JWT_SECRET"} <= set(prepared.secrets)
    assert all(s.reveal() for s in prepared.secrets.values())
    assert prepared.ports is not None and prepared.ports.api != prepared.ports.db
    assert all(PORT_RANGE[0] <= p <= PORT_RANGE[1] for p in (prepared.ports.api, prepared.ports.db))
    # the lease is in ports.json under the store root
    leases = json.loads((store.root / "ports.json").read_text())["leases"]
    assert leases == {"demo/shop": {"api": prepared.ports.api, "db": prepared.ports.db}}
    # the secrets are the service's to save
    assert not store.paths("demo", "shop").secrets.exists()
    assert store.read_secrets("demo", "shop") == {}
    assert runner.calls == []  # what is kept was observed already (observe names a kept data volume)


def test_prepare_again_with_stored_secrets_keeps_them_and_the_lease(target: Target, store: StateStore) -> None:
    first = backend(store, FakeRunner().on("docker", "volume", "ls", stdout="")).prepare(target, ABSENT, {})
    runner = FakeRunner()  # with DB_PASSWORD stored, no volume lookup is needed
    again = backend(store, runner).prepare(target, ABSENT, first.secrets, create=True)
    assert not again.new_secrets and again.ports == first.ports
    assert {k: v.reveal() for k, v in again.secrets.items()} == {k: v.reveal() for k, v in first.secrets.items()}
    assert runner.calls == []


def test_prepare_refuses_new_secrets_over_an_existing_data_volume(target: Target, store: StateStore) -> None:
    kept = Observed(exists=False, kept_data="shop_demo_pgdata")
    with pytest.raises(StateError, match="data volume shop_demo_pgdata") as info:
        backend(store, FakeRunner()).prepare(target, kept, {}, create=True)
    assert "secrets" in str(info.value)
    assert not (store.root / "ports.json").exists()


def test_prepare_refuses_new_secrets_for_existing_containers(target: Target, store: StateStore) -> None:
    observed = observed_from(store, PS_RUNNING, target)
    with pytest.raises(StateError, match="^containers for 'shop'"):
        backend(store, FakeRunner()).prepare(target, observed, {"JWT_SECRET": Secret("j")}, create=True)


def test_prepare_trusts_kept_data_from_the_observation(target: Target, store: StateStore) -> None:
    observed = Observed(exists=False, kept_data="shop_demo_pgdata")
    with pytest.raises(StateError, match="shop_demo_pgdata"):
        backend(store, FakeRunner()).prepare(target, observed, {}, create=True)  # no volume lookup


def test_prepare_without_create_previews_ports_and_writes_nothing(target: Target, store: StateStore) -> None:
    prepared = backend(store, FakeRunner()).prepare(target, ABSENT, {}, create=False)
    assert prepared.preview and not prepared.new_secrets and dict(prepared.secrets) == {}
    assert prepared.ports is not None and PORT_RANGE[0] <= prepared.ports.api <= PORT_RANGE[1]
    assert not store.root.exists() or not (store.root / "ports.json").exists()


def test_prepare_without_create_returns_the_existing_lease(target: Target, store: StateStore) -> None:
    LeaseBook(store.layout.ports, store.layout.ports_lock).write({"demo/shop": {"api": 43150, "db": 43151}})
    prepared = backend(store, FakeRunner()).prepare(target, ABSENT, SECRETS, create=False)
    assert prepared == Prepared(secrets=SECRETS, ports=Ports(api=43150, db=43151))


def test_prepare_leases_a_subnet_around_the_engines_networks(project_root: Path, store: StateStore) -> None:
    write_env(project_root, "demo", ENV)
    config = load_env("demo", project_root, environ={}, overrides={"local.network_pool": "10.201.0.0/16"})
    listed = FakeCollection([{"Name": "net-1", "IPAM": {"Config": [{"Subnet": "10.201.0.0/26"}]}}])
    fake = FakeDocker(api=FakeExecAPI(network_list=listed))
    prepared = backend(store, FakeRunner(), fake).prepare(Target(config, config.project("shop")), ABSENT, SECRETS)
    assert prepared.ports is not None and prepared.ports.subnet == "10.201.0.64/26"
    assert listed.calls == [{}] and fake.networks.calls == []  # one list request, no inspect per network


# --- 4. control --------------------------------------------------------------------------------------
def test_stop_with_nothing_running_changes_nothing(target: Target, store: StateStore,
                                                   rendered: tuple[Path, Path]) -> None:
    for observed in (observed_from(store, PS_STOPPED, target), ABSENT):
        runner = FakeRunner()
        assert backend(store, runner).control(target, observed, "stop") is False
        assert runner.calls == []


def test_start_of_a_running_stack_changes_nothing(target: Target, store: StateStore,
                                                  rendered: tuple[Path, Path]) -> None:
    observed = observed_from(store, PS_RUNNING, target)
    runner = FakeRunner()
    assert backend(store, runner).control(target, observed, "start") is False
    assert runner.calls == []


def test_stop_of_a_running_stack_runs_compose_stop(target: Target, store: StateStore,
                                                   rendered: tuple[Path, Path]) -> None:
    compose_file, secrets_file = rendered
    observed = observed_from(store, PS_RUNNING, target)
    runner = FakeRunner().on("stop")
    assert backend(store, runner).control(target, observed, "stop") is True
    assert runner.calls == [("docker", "compose", "--project-name", "shop_demo", "--file", str(compose_file),
                             "--env-file", str(secrets_file), "stop")]


def test_stop_of_a_partly_running_stack_stops_it(target: Target, store: StateStore,
                                                 rendered: tuple[Path, Path]) -> None:
    observed = Observed(exists=True, services={"db": ServiceState("running", "healthy"), "api": ServiceState("exited")})
    runner = FakeRunner().on("stop")
    assert backend(store, runner).control(target, observed, "stop") is True
    assert subcommands(runner) == ["stop"]


def test_start_of_a_stopped_stack_ups_without_recreating(target: Target, store: StateStore,
                                                         rendered: tuple[Path, Path]) -> None:
    observed = observed_from(store, PS_STOPPED, target)
    runner = FakeRunner().on("up")
    assert backend(store, runner).control(target, observed, "start") is True
    [call] = runner.calls
    assert call[-4:] == ("up", "--detach", "--remove-orphans", "--no-recreate")
    assert "--force-recreate" not in call


def test_restart_runs_restart_or_up_when_nothing_exists(target: Target, store: StateStore,
                                                        rendered: tuple[Path, Path]) -> None:
    runner = FakeRunner().on("restart").on("up")
    assert backend(store, runner).control(target, observed_from(store, PS_RUNNING, target), "restart") is True
    assert backend(store, runner).control(target, ABSENT, "restart") is True
    assert subcommands(runner) == ["restart", "up"]


def test_control_without_a_rendered_compose_file_says_to_provision(target: Target, store: StateStore) -> None:
    runner = FakeRunner()
    with pytest.raises(StateError, match="no rendered compose file"):
        backend(store, runner).control(target, observed_from(store, PS_RUNNING, target), "stop")
    assert runner.calls == []


def test_a_failing_compose_command_is_redacted(target: Target, store: StateStore,
                                               rendered: tuple[Path, Path]) -> None:
    password = SECRETS["DB_PASSWORD"].reveal()
    runner = FakeRunner().on("stop", returncode=1, stderr=f"error: auth with {password} failed\n")
    with pytest.raises(CommandFailed) as info:
        backend(store, runner).control(target, observed_from(store, PS_RUNNING, target), "stop")
    assert password not in str(info.value) and "auth with *** failed" in str(info.value)


# --- 5. destroy --------------------------------------------------------------------------------------
def test_destroy_of_nothing_runs_no_down(target: Target, store: StateStore) -> None:
    runner = FakeRunner().on("docker", "ps", stdout="")
    destroyed = backend(store, runner, FakeDocker()).destroy(target, ABSENT, delete_data=False)
    assert destroyed == Destroyed(changed=False)
    assert compose_calls(runner) == []


def test_destroy_of_containers_runs_down_and_keeps_the_volumes(target: Target, store: StateStore,
                                                              rendered: tuple[Path, Path]) -> None:
    runner = FakeRunner().on("docker", "ps", stdout=PS_RUNNING).on("down")
    observed = observed_from(store, PS_RUNNING, target)
    destroyed = backend(store, runner, FakeDocker()).destroy(target, observed, delete_data=False)
    assert destroyed.changed
    assert destroyed.messages == ("removed 2 container(s) and the network",)
    [down] = compose_calls(runner)
    assert down[-4:] == ("down", "--remove-orphans", "--timeout", "20") and "--volumes" not in down


def test_kept_volumes_are_reported_but_are_no_change(target: Target, store: StateStore) -> None:
    LeaseBook(store.layout.ports, store.layout.ports_lock).write({"demo/shop": {"api": 43150, "db": 43151}})
    runner = FakeRunner().on("docker", "ps", stdout="")
    fake = FakeDocker().with_volumes("shop_demo_pgdata")
    destroyed = backend(store, runner, fake).destroy(target, ABSENT, delete_data=False)
    assert destroyed.changed is False
    [message] = destroyed.messages
    assert message.startswith("kept data volume(s) shop_demo_pgdata and the credentials")
    assert "--env=demo --project=shop" in message
    assert compose_calls(runner) == [] and fake.removed == []
    assert fake.volumes.calls == [{"filters": {"label": "com.docker.compose.project=shop_demo"}}]
    assert "demo/shop" in LeaseBook(store.layout.ports, store.layout.ports_lock).read()  # the lease stays with the data


def test_destroy_with_containers_and_kept_volumes(target: Target, store: StateStore) -> None:
    runner = FakeRunner().on("docker", "ps", stdout=PS_STOPPED).on("down")
    fake = FakeDocker().with_volumes("shop_demo_pgdata")
    destroyed = backend(store, runner, fake).destroy(target, ABSENT, delete_data=False)
    assert destroyed.changed
    assert destroyed.messages[0] == "removed 2 container(s) and the network"
    assert destroyed.messages[1].startswith("kept data volume(s) shop_demo_pgdata")


def test_destroy_deleting_data_removes_volumes_and_releases_the_lease(target: Target, store: StateStore,
                                                                     rendered: tuple[Path, Path]) -> None:
    LeaseBook(store.layout.ports, store.layout.ports_lock).write({"demo/shop": {"api": 43150, "db": 43151}, "demo/blog": {"api": 43152, "db": 43153}})
    runner = FakeRunner().on("docker", "ps", stdout="").on("down")
    fake = FakeDocker().with_volumes("shop_demo_pgdata")
    destroyed = backend(store, runner, fake).destroy(target, ABSENT, delete_data=True)
    assert destroyed.changed
    assert destroyed.messages == ("deleted data volume(s) shop_demo_pgdata",)
    [down] = compose_calls(runner)
    assert down[-5:] == ("down", "--remove-orphans", "--timeout", "20", "--volumes")
    assert fake.removed == ["shop_demo_pgdata"]  # what `down --volumes` left (here: all of it) is removed
    assert set(LeaseBook(store.layout.ports, store.layout.ports_lock).read()) == {"demo/blog"}


# --- 6. Docker SDK errors ----------------------------------------------------------------------------
def test_sdk_api_errors_become_backend_errors(target: Target, store: StateStore) -> None:
    cause = docker.errors.APIError("boom", response=None, explanation="no such thing")
    fake = FakeDocker(volumes=FakeCollection(error=cause))
    runner = FakeRunner().on("docker", "ps", stdout="")
    with pytest.raises(BackendError) as info:
        backend(store, runner, fake).destroy(target, ABSENT, delete_data=False)
    assert isinstance(info.value, ProvisionError) and not isinstance(info.value, docker.errors.DockerException)
    assert info.value.operation == "list volumes" and info.value.status is None
    assert "no such thing" in str(info.value)
    assert info.value.__cause__ is cause


def test_volume_removal_errors_become_backend_errors(target: Target, store: StateStore) -> None:
    fake = FakeDocker()
    fake.volumes.items = [FakeVolume("shop_demo_pgdata", fake.removed,
                                     error=docker.errors.APIError("409", explanation="volume is in use"))]
    runner = FakeRunner().on("docker", "ps", stdout="").on("down")
    with pytest.raises(BackendError, match="remove a volume failed: volume is in use"):
        backend(store, runner, fake).destroy(target, ABSENT, delete_data=True)


def test_transport_errors_say_the_engine_is_unreachable(target: Target, store: StateStore) -> None:
    fake = FakeDocker(volumes=FakeCollection(error=requests.exceptions.ConnectionError("refused")))
    runner = FakeRunner().on("docker", "ps", stdout="")
    with pytest.raises(BackendUnavailable, match="Docker Engine is not reachable"):
        backend(store, runner, fake).destroy(target, ABSENT, delete_data=False)


def test_network_listing_errors_during_prepare_become_backend_errors(project_root: Path,
                                                                     store: StateStore) -> None:
    write_env(project_root, "demo", ENV)
    config = load_env("demo", project_root, environ={}, overrides={"local.network_pool": "10.201.0.0/16"})
    fake = FakeDocker(api=FakeExecAPI(network_list=FakeCollection(
        error=docker.errors.APIError("x", explanation="denied"))))
    with pytest.raises(BackendError, match="list networks failed: denied"):
        backend(store, FakeRunner(), fake).prepare(Target(config, config.project("shop")), ABSENT, SECRETS)


# --- 7. no memory between calls ----------------------------------------------------------------------
def test_a_fresh_instance_acts_on_target_and_observation_alone(target: Target, store: StateStore,
                                                               rendered: tuple[Path, Path]) -> None:
    observed = observed_from(store, PS_RUNNING, target)  # made by another instance

    runner = FakeRunner().on("stop")
    assert backend(store, runner).control(target, observed, "stop") is True  # no_docker: the CLI suffices
    assert subcommands(runner) == ["stop"] and runner.calls[0][3] == "shop_demo"

    runner = FakeRunner().on("docker", "ps", stdout=PS_RUNNING).on("down")
    destroyed = LocalBackend(BackendFiles(store.layout), ComposeCLI(runner, environ={}), docker_client=FakeDocker).destroy(
        target, observed, delete_data=False)
    assert destroyed.changed and subcommands(runner) == ["down"]

    # and a record's handle, reloaded by yet another instance, is the same baseline
    fresh = backend(store, FakeRunner().on("docker", "ps", stdout=PS_RUNNING))
    handle = fresh.load_handle(observed.handle.to_dict() if observed.handle else {})
    assert fresh.observe(target, handle).drift is None


def test_instances_share_only_the_state_directory(target: Target, store: StateStore) -> None:
    first = backend(store, FakeRunner().on("docker", "volume", "ls", stdout="")).prepare(target, ABSENT, {})
    other = backend(store, FakeRunner()).prepare(target, ABSENT, first.secrets, create=False)
    assert other.ports == first.ports and not other.preview  # read back from ports.json, not memory


# --- apply, logs, endpoints, observe_env -------------------------------------------------------------
def stack(text: str = "services:\n  db: {}\n  api: {}\n") -> RenderedStack:
    return RenderedStack(project="shop", env="demo", compose_project="shop_demo", text=text,
                         service_hashes=dict(SERVICE_HASHES), config_hash=stack_hash(SERVICE_HASHES),
                         secret_names=("DB_PASSWORD", "JWT_SECRET"), document={})


@pytest.mark.parametrize(("action", "flag"), [(Action.CREATE, None), (Action.DRIFT, "--force-recreate")])
def test_apply_writes_the_compose_file_ups_it_and_returns_the_labels(target: Target, store: StateStore,
                                                                     action: Action, flag: str | None) -> None:
    runner = FakeRunner().on("up").on("docker", "ps", stdout=PS_RUNNING)
    prepared = Prepared(secrets=SECRETS, ports=Ports(43150, 43151))
    handle = backend(store, runner, FakeDocker()).apply(target, ABSENT, stack(), prepared, Plan(action, "test"))
    assert handle == LocalHandle(service_hashes=SERVICE_HASHES, compose_hashes=COMPOSE_HASHES)
    compose_file = store.layout.work("demo", "shop") / COMPOSE_FILE
    assert compose_file.read_text() == stack().text and compose_file.stat().st_mode & 0o777 == 0o600
    # compose's variables come from the prepared secrets (the service's secrets file is never read), 0600
    env_file = store.layout.work("demo", "shop") / ENV_FILE
    assert dotenv_values(env_file, interpolate=False) == {k: v.reveal() for k, v in SECRETS.items()}
    assert env_file.stat().st_mode & 0o777 == 0o600 and not store.paths("demo", "shop").secrets.exists()
    # the db first, then, once it accepts connections, the rest (not the db again)
    db_up, rest_up = compose_calls(runner)[:2]
    assert ("--file", str(compose_file), "--env-file", str(env_file)) == db_up[4:8]
    mode = () if flag is None else (flag,)
    assert db_up[db_up.index("up"):] == ("up", "--detach", "--remove-orphans", *mode, "--", "db")
    assert rest_up[rest_up.index("up"):] == ("up", "--detach", "--remove-orphans", *mode, "--", "api")


def test_logs_are_redacted_and_stripped_of_colour(target: Target, store: StateStore,
                                                  rendered: tuple[Path, Path]) -> None:
    password = SECRETS["DB_PASSWORD"].reveal()
    runner = FakeRunner().on("logs", stdout=f"\x1b[32mdb-1 |\x1b[0m password={password}\n")
    text = "".join(backend(store, runner).logs(target, ABSENT, service="db", tail=5))
    assert text == "db-1 | password=***\n"
    assert runner.calls == [("docker", "compose", "--project-name", "shop_demo", "logs", "--no-color", "--tail", "5",
                             "--", "db")]


def test_followed_logs_stream_redacted_lines_since_a_time(target: Target, store: StateStore,
                                                          rendered: tuple[Path, Path]) -> None:
    password = SECRETS["DB_PASSWORD"].reveal()
    runner = FakeRunner().on("logs", stdout=f"db-1 | one\napi-1 | \x1b[1m{password}\x1b[0m\n")
    since = datetime(2026, 11, 30, 15, 0, tzinfo=timezone(timedelta(hours=2)))
    lines = list(backend(store, runner).logs(target, ABSENT, service=None, tail=7, since=since, follow=True))
    assert lines == ["db-1 | one\n", "api-1 | ***\n"]
    assert runner.calls[0][4:] == ("logs", "--no-color", "--tail", "7", "--since", "2026-11-30T13:00:00Z", "--follow")


def test_endpoints_come_from_the_leased_ports(target: Target, store: StateStore) -> None:
    endpoints = backend(store, FakeRunner()).endpoints(target, None, Prepared(SECRETS, Ports(api=43150, db=43151)))
    assert endpoints.api_url == "http://127.0.0.1:43150" and endpoints.db_url_scope == "host"
    assert endpoints.db_url is not None
    assert endpoints.db_url.reveal() == f"postgresql://app:{SECRETS['DB_PASSWORD'].reveal()}@127.0.0.1:43151/app"
    assert backend(store, FakeRunner()).endpoints(target, None, Prepared(SECRETS)).api_url is None


def test_observe_env_finds_running_projects_and_kept_data(target: Target, store: StateStore) -> None:
    blog_volume = VOLUME_LS.replace("shop", "blog")
    runner = (FakeRunner().on("docker", "ps", stdout=PS_RUNNING)
              .on("docker", "volume", "ls", stdout=VOLUME_LS + blog_volume))
    known = {"shop": LocalHandle(service_hashes={**SERVICE_HASHES, "db": "0"}, compose_hashes=COMPOSE_HASHES)}
    found = backend(store, runner).observe_env(target.config, known)
    assert set(found) == {"shop", "blog"}
    assert found["shop"].exists and found["shop"].drift is not None and "db" in found["shop"].drift
    assert found["blog"] == Observed(exists=False, kept_data="blog_demo_pgdata")
    assert all("label=io.provision.env=demo" in call for call in runner.calls)



def test_one_off_containers_do_not_hide_the_services_state(target: Target, store: StateStore) -> None:
    leftover = json.loads(PS_STOPPED.splitlines()[0])
    leftover["Names"] = "shop_demo-api-run-0a1b2c"
    leftover["Labels"] = leftover["Labels"].replace("com.docker.compose.oneoff=False", "com.docker.compose.oneoff=True")
    runner = FakeRunner().on("docker", "ps", stdout=PS_RUNNING + json.dumps(leftover) + "\n")
    observed = backend(store, runner).observe(target, None)
    assert observed.summary() == "running" and observed.services["api"] == ServiceState("running", "")




def test_apply_removes_what_a_killed_recreate_left_before_it_ups(target: Target, store: StateStore) -> None:
    """`compose up` killed mid-recreate leaves the new container under its temporary name, Created."""
    store.write_secrets("demo", "shop", SECRETS)
    db = next(json.loads(line) for line in PS_RUNNING.splitlines() if '"shop_demo-db-1"' in line)
    leftover = {**db, "ID": "f" * 64, "Names": f"{db['ID'][:12]}_shop_demo-db-1", "State": "created",
                "Status": "Created"}
    runner = (FakeRunner().on("docker", "rm").on("up")
              .on("docker", "ps", stdout=PS_RUNNING + json.dumps(leftover) + "\n"))
    prepared = Prepared(secrets=SECRETS, ports=Ports(43150, 43151))
    backend(store, runner, FakeDocker()).apply(target, ABSENT, stack(), prepared, Plan(Action.UPDATE, "test"))
    removal = runner.calls.index(("docker", "rm", "--force", "f" * 64))
    assert removal < runner.calls.index(compose_calls(runner)[0])  # before the first up
    assert [call for call in runner.calls if call[:2] == ("docker", "rm")] == [("docker", "rm", "--force", "f" * 64)]


def test_apply_without_leftovers_removes_nothing(target: Target, store: StateStore) -> None:
    store.write_secrets("demo", "shop", SECRETS)
    runner = FakeRunner().on("up").on("docker", "ps", stdout=PS_RUNNING)
    prepared = Prepared(secrets=SECRETS, ports=Ports(43150, 43151))
    backend(store, runner, FakeDocker()).apply(target, ABSENT, stack(), prepared, Plan(Action.UPDATE, "test"))
    assert not [call for call in runner.calls if call[:2] == ("docker", "rm")]


# --- preflight: images and limits before anything is created; a crash ends a wait at once ---------------------
def images_stack(db: str = "postgres:16-alpine", api: str = "postgrest/postgrest:v12.2.3") -> RenderedStack:
    return RenderedStack(project="shop", env="demo", compose_project="shop_demo", text="", service_hashes={},
                         config_hash="", secret_names=(), document={"services": {"db": {"image": db},
                                                                                 "api": {"image": api}}})


def test_preflight_pulls_a_missing_image_once_and_names_the_key_of_one_it_cannot_get(
        project_root: Path, store: StateStore) -> None:
    write_env(project_root, "demo", ENV.replace("[{name: shop}]", "[{name: shop, images: {db: 'postgres:99'}}]"))
    config = load_env("demo", project_root, environ={})
    target = Target(config, config.project("shop"))
    runner = (FakeRunner().on("{{.Id}}", "--", "postgres:99", returncode=1, stderr="Error: No such image")
              .on("image", "inspect").on("info", stdout="2 25276194816\n")
              .on("pull", returncode=1, stderr='Error response from daemon: Get "https://registry-1.docker.io/v2/": '
                                               'dial tcp: lookup registry-1.docker.io: no such host\n'))
    local = backend(store, runner)
    with pytest.raises(ImageUnavailable) as info:
        local.preflight(target, images_stack(db="postgres:99"))
    message = str(info.value)
    assert "image postgres:99 (projects[0].images.db in envs/demo.yml) is not on this Docker Engine" in message
    assert "no such host" in message and "docker load --input" in message and "docker pull postgres:99" in message
    assert ("docker", "pull", "--quiet", "--", "postgres:99") in runner.calls

    found = FakeRunner().on("image", "inspect").on("info", stdout="2 25276194816\n")
    local = backend(store, found)
    local.preflight(target, images_stack())
    local.preflight(target, images_stack())  # asked once
    # asked once each, at the same time (in no set order)
    assert sorted(c[:3] for c in found.calls) == [("docker", "image", "inspect")] * 2 + [("docker", "info", "--format")]


@pytest.mark.parametrize(("resources", "says"), [
    ("resources: {db: {cpus: 4}}", "resources.db.cpus in envs/demo.yml is 4 but this Docker Engine's host has 2"),
    ("projects: [{name: shop, resources: {api: {cpus: 3}}}]", "projects[0].resources.api.cpus in envs/demo.yml is 3"),
    ("resources: {db: {memory: 64G}}", "resources.db.memory in envs/demo.yml is 64.0 GiB but this Docker Engine's host has 23.5 GiB"),
])
def test_preflight_refuses_a_limit_over_the_host_naming_its_key(project_root: Path, store: StateStore,
                                                                resources: str, says: str) -> None:
    text = ENV.replace("projects: [{name: shop}]\n", "") if resources.startswith("projects") else ENV
    write_env(project_root, "demo", text + resources + "\n")
    config = load_env("demo", project_root, environ={})
    runner = FakeRunner().on("image", "inspect").on("info", stdout="2 25276194816\n")
    with pytest.raises(LimitsRefused) as info:
        backend(store, runner).preflight(Target(config, config.project("shop")), images_stack())
    assert says in str(info.value) and info.value.exit_code == 2 and "\n" not in str(info.value)


def test_the_daemons_refusal_of_a_limit_names_the_keys(target: Target, store: StateStore) -> None:
    store.write_secrets("demo", "shop", SECRETS)
    refusal = "Error response from daemon: Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available\n"
    runner = FakeRunner().on("up", returncode=1, stderr=refusal).on("docker", "ps", stdout="")
    prepared = Prepared(secrets=SECRETS, ports=Ports(43150, 43151))
    with pytest.raises(LimitsRefused) as info:
        backend(store, runner, FakeDocker()).apply(target, ABSENT, stack(), prepared, Plan(Action.CREATE, "test"))
    assert "Range of CPUs is from 0.01 to 2.00" in str(info.value) and "resources.db.cpus" in str(info.value)


def test_a_container_that_restarts_during_the_wait_ends_it_at_once_with_its_log_tail(
        target: Target, store: StateStore, rendered: tuple[Path, Path]) -> None:
    lines = []
    for line in PS_RUNNING.splitlines():
        record = json.loads(line)
        if "com.docker.compose.service=db" in record["Labels"]:
            record.update(State="restarting", Status="Restarting (1) 1 second ago")
        lines.append(json.dumps(record))
    runner = (FakeRunner().on("docker", "ps", stdout="\n".join(lines) + "\n")
              .on("logs", stdout='db-1  | FATAL:  invalid value for parameter "work_mem": "lots"\n'))
    started = datetime.now()
    prepared = Prepared(secrets=SECRETS, ports=Ports(43150, 43151))
    with pytest.raises(ContainerCrashed) as info:
        backend(store, runner).wait(target, LocalHandle({"db": "x", "api": "y"}), prepared, timeout=120)
    assert (datetime.now() - started).total_seconds() < 5
    assert "db restarting" in str(info.value) and "FATAL:  invalid value" in info.value.logs


def test_psql_in_a_db_not_up_yet_is_a_database_starting_and_any_other_failure_is_not(
        target: Target, store: StateStore) -> None:
    observed = observed_from(store, PS_RUNNING, target)
    for stderr, starting in (("psql: error: FATAL:  the database system is starting up", True),
                             ('psql: error: FATAL:  database "app" does not exist', True),
                             ("Error response from daemon: No such container: shop_demo-db-1", True),
                             ('ERROR:  syntax error at or near "SELEC"', False)):
        runner = FakeRunner().on("docker", "ps", stdout=PS_RUNNING).on("exec", returncode=2, stderr=stderr)
        with pytest.raises(CommandFailed) as info:
            backend(store, runner).run_sql(target, observed, "SELECT 1;")
        assert isinstance(info.value, DatabaseStarting) is starting and stderr in str(info.value)
    with pytest.raises(DatabaseStarting, match="has no running db container"):
        backend(store, FakeRunner().on("docker", "ps", stdout=PS_STOPPED)).run_sql(target, observed, "SELECT 1;")


def test_an_exec_runc_could_not_start_is_sent_again_with_the_whole_sql(target: Target, store: StateStore) -> None:
    """`OCI runtime exec failed` (exit 126) ran nothing: the same exec goes again, its stdin from the start; any
    other failure, and a third refusal, is the answer."""
    observed = observed_from(store, PS_RUNNING, target)
    refused = "OCI runtime exec failed: exec failed: unable to start container process: write init-p: broken pipe"

    class Flaky(FakeRunner):
        refusals = 1

        def run(self, argv: Sequence[str], **kwargs: Any) -> Completed:
            answer = super().run(argv, **kwargs)
            if "exec" in argv and self.refusals > 0:
                self.refusals -= 1
                return Completed(tuple(argv), 126, "", refused)
            return answer

    runner = Flaky().on("docker", "ps", stdout=PS_RUNNING).on("exec", stdout="1\n")
    assert backend(store, runner).run_sql(target, observed, "SELECT 1;") == "1\n"
    assert runner.inputs[-2:] == [b"SELECT 1;", b"SELECT 1;"]
    stubborn = Flaky().on("docker", "ps", stdout=PS_RUNNING).on("exec", stdout="1\n")
    stubborn.refusals = 3
    with pytest.raises(CommandFailed, match="write init-p"):
        backend(store, stubborn).run_sql(target, observed, "SELECT 1;")
    assert sum("exec" in call for call in stubborn.calls) == 3


# --- one create: what it renders and how often it asks `docker ps` ---------------------------------------
class CountedBackend(LocalBackend):
    """The real observe, prepare, preflight and template check over the FakeRunner; apply, wait and psql stand in
    (once applied, `docker ps` shows the stack running). `applied`: what each apply found written beforehand."""

    applied: list[tuple[bool, bool]]
    runner: FakeRunner

    def apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
              plan: Plan) -> LocalHandle:
        ports = json.loads(self.files.ports.read_text()) if self.files.ports.is_file() else {}
        self.applied.append((self.files.secrets_path(target.env, target.project).is_file(), bool(ports)))
        self.runner.answers.insert(0, (("docker", "ps"), Completed(("docker", "ps"), 0, PS_RUNNING, "")))
        return LocalHandle(service_hashes=SERVICE_HASHES, compose_hashes=COMPOSE_HASHES)

    def wait(self, target: Target, handle: Handle | None, prepared: Prepared, *, timeout: float,
             settled: Observed | None = None) -> Endpoints:
        return self.endpoints(target, handle, prepared)

    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        return ""


def test_a_local_create_renders_twice_and_observes_once_before_its_apply(
        target: Target, store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The preflight's render (secrets and ports previewed) is the converge's; with no lock beyond the file lock
    the create is not read again: its secrets and ports are made (written before the apply, as always) and the
    stack rendered with them. An update (nothing to make) renders once: the preflight's stack is the one applied."""
    renders = []

    def counted(*args: Any, **kwargs: Any) -> RenderedStack:
        renders.append(args[0])
        return render_stack(*args, **kwargs)

    monkeypatch.setattr(engine_module, "render_stack", counted)
    runner = (FakeRunner().on("docker", "ps").on("volume", "ls").on("image", "inspect", stdout="sha256:1")
              .on("info", stdout="4 8589934592").on("config"))
    local = CountedBackend(BackendFiles(store.layout), ComposeCLI(runner, environ={}), docker_client=no_docker)
    local.applied, local.runner = [], runner
    result = Provisioner(target.config, local, store).provision_many(["shop"]).results[0]
    assert result.action == "create" and local.applied == [(True, True)]
    ps = [call for call in runner.calls if call[:2] == ("docker", "ps")]
    assert (len(renders), len(ps)) == (2, 2)  # before: 4 renders, 3 `docker ps` (2 reads, then the roles' look)
    renders.clear()
    runner.calls.clear()
    again = Provisioner(target.config, local, store).provision("shop")
    ps = [call for call in runner.calls if call[:2] == ("docker", "ps")]
    assert again.action == "update" and local.applied[-1] == (True, True)  # PS_RUNNING's hashes are others
    assert (len(renders), len(ps)) == (1, 1)  # before: 3 renders, 2 `docker ps`
