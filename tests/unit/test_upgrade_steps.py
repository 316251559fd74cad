"""upgrade-db's bookkeeping without an engine: the states its record goes through, what provision refuses while
one is half done, and which volume the local backend takes for the stack's and which for data an upgrade kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provision.backends.local.backend import COMPOSE_FILE, LocalBackend
from provision.backends.local.compose import ComposeCLI
from provision.backends.local.dumps import bulk_load
from provision.core.config import load_env
from provision.core.errors import ProjectConflict, ProvisionError
from provision.core.model import ABSENT, Target
from provision.service import Provisioner
from provision.service.upgrade_state import kept_command, kept_refusal, unfinished, upgrade_facts
from provision.state.layout import BackendFiles
from provision.state.records import ProjectRecord, StateStore
from tests.conftest import write_env
from tests.unit.fakes import FakeRunner, MemoryBackend

ENV = """
images: {db: "postgres:17", api: "postgrest/postgrest:v12.2.3"}
projects: [{name: shop}]
health: {timeout: 5}
"""
COMPOSE = """services:
  db:
    image: postgres:17
    volumes: ["pgdata_pg17_x:/var/lib/postgresql/data"]
  api: {image: postgrest}
volumes:
  pgdata_pg17_x: {}
"""
SWITCHING = {"state": "switching", "label": "pg15", "image": "postgres:15", "major": 15, "volume_key": "pgdata",
             "volume": "shop_demo_pgdata", "new_image": "postgres:17", "new_major": 17,
             "new_volume_key": "pgdata_pg17_x", "backup": "/b.dump", "at": "2026-01-01T00:00:00Z"}


@pytest.fixture
def target(project_root: Path) -> Target:
    write_env(project_root, "demo", ENV)
    config = load_env("demo", project_root, environ={})
    return Target(config, config.project("shop"))


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


# --- the record ---------------------------------------------------------------------------------------
def test_a_record_from_before_the_steps_were_recorded_holds_a_finished_upgrade() -> None:
    local = ProjectRecord(project="shop", env="demo", kept_data={
        "label": "pg15", "volume": "shop_demo_pgdata-pg15", "volume_key": "pgdata", "image": "postgres:15",
        "major": 15, "backup": "/b.dump"})
    facts = upgrade_facts(local)
    assert facts is not None and facts["state"] == "done"
    # the local backend's old copy beside the emptied volume: its key is <key>-<label>; the new data is in <key>
    assert (facts["volume_key"], facts["new_volume_key"]) == ("pgdata-pg15", "pgdata")
    coolify = ProjectRecord(project="shop", env="demo", db_volume="pgdata_pg17_x", kept_data={
        "label": "pg15", "volume": "uuid_pgdata", "volume_key": "pgdata", "image": "postgres:15", "major": 15})
    facts = upgrade_facts(coolify)
    assert facts is not None and (facts["volume_key"], facts["new_volume_key"]) == ("pgdata", "pgdata_pg17_x")
    assert upgrade_facts(ProjectRecord(project="shop", env="demo")) is None and upgrade_facts(None) is None


def test_only_a_half_done_switch_or_rollback_is_refused(target: Target) -> None:
    switching = unfinished(target, SWITCHING)
    assert switching is not None and "did not finish" in switching and "\n" not in switching
    assert "`provision upgrade-db --env=demo --project=shop --yes` finishes it" in switching
    assert "`provision upgrade-db --env=demo --project=shop --rollback --yes` undoes it" in switching
    rolling = unfinished(target, {**SWITCHING, "state": "rolling back"})
    assert rolling is not None and "--rollback --yes` finishes it" in rolling
    for state in ("done", "finalizing"):  # the stack serves its rows: nothing to refuse
        assert unfinished(target, {**SWITCHING, "state": state}) is None


def test_a_half_done_restore_names_restore_rollback_and_each_kind_its_own_finalize(target: Target) -> None:
    for kind, verb in (("restore", "restore --to-time"), ("restore-from", "restore --from")):
        kept = {**SWITCHING, "kind": kind, "image": "postgres:17", "major": 17}
        said = unfinished(target, kept)
        assert said is not None and f"a {verb} did not finish" in said
        assert "`provision restore --env=demo --project=shop --rollback --yes` returns to" in said
        assert kept_command(target, kept, "--finalize", "--yes") == \
            "`provision restore --env=demo --project=shop --finalize --yes`"
        assert verb in kept_refusal(target, {**kept, "state": "done"})
        assert unfinished(target, {**kept, "state": "rolling back"}) is not None
        assert unfinished(target, {**kept, "state": "done"}) is None
    assert kept_command(target, SWITCHING, "--finalize") == "`provision upgrade-db --env=demo --project=shop --finalize`"
    assert "upgrade-db" in kept_refusal(target, SWITCHING)


def test_the_one_off_server_of_a_restore_gets_the_db_limits_and_bulk_load_settings(target: Target) -> None:
    limits, settings = bulk_load(target)
    assert limits == ["--memory", str(256 * 1024 * 1024), "--cpus", "1"]  # the stack's db defaults
    assert "wal_level=minimal" in settings and "max_wal_senders=0" in settings and "listen_addresses=" in settings
    assert "shared_buffers=64MB" in settings  # the stack's own settings for that memory
    assert "maintenance_work_mem=65536kB" in settings and "maintenance_work_mem=16MB" not in settings


def test_provision_refuses_a_half_done_upgrade_even_when_nothing_would_change(
        project_root: Path, tmp_path: Path) -> None:
    write_env(project_root, "dev", ENV)
    backend, store = MemoryBackend(), StateStore(tmp_path / "state")
    provisioner = Provisioner(load_env("dev", project_root, environ={}), backend, store)
    store.write_record(ProjectRecord(project="shop", env="dev", status="provisioned",
                                     images={"db": "postgres:17"}, kept_data=SWITCHING))
    with pytest.raises(ProjectConflict, match="did not finish.*--rollback --yes` undoes it"):
        provisioner.provision("shop")
    assert backend.calls == []  # nothing was applied


# --- the local backend's volumes ----------------------------------------------------------------------
@dataclass
class Volume:
    name: str
    key: str
    removed: list[str]

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Labels": {"com.docker.compose.volume": self.key}}

    def remove(self, force: bool = False) -> None:
        self.removed.append(self.name)


@dataclass
class Listing:
    items: list[Any] = field(default_factory=list)

    def list(self, **kwargs: Any) -> list[Any]:
        return list(self.items)


@dataclass
class Docker:
    volumes: Listing = field(default_factory=Listing)
    containers: Listing = field(default_factory=Listing)


def upgraded(store: StateStore, runner: FakeRunner) -> tuple[LocalBackend, list[str]]:
    """A local backend whose project moved to `pgdata_pg17_x` and kept `shop_demo_pgdata`."""
    (BackendFiles(store.layout).ensure_work("demo", "shop") / COMPOSE_FILE).write_text(COMPOSE)
    removed: list[str] = []
    docker = Docker(Listing([Volume("shop_demo_pgdata", "pgdata", removed),
                             Volume("shop_demo_pgdata_pg17_x", "pgdata_pg17_x", removed)]))
    return LocalBackend(BackendFiles(store.layout), ComposeCLI(runner, environ={}), docker_client=lambda: docker), removed


def test_the_data_volume_is_the_one_the_stack_mounts_and_the_other_is_kept(target: Target, store: StateStore) -> None:
    runner = FakeRunner().on("docker", "run", stdout="17\n")
    backend, _ = upgraded(store, runner)
    assert backend.find_volume(target, "pgdata") == "shop_demo_pgdata" and backend.find_volume(target, "x") is None
    assert backend.data_major(target, "postgres:17") == 17
    [run] = runner.calls
    assert run[:3] == ("docker", "run", "--rm") and "io.provision.helper=demo/shop" in run
    assert "shop_demo_pgdata_pg17_x:/data:ro" in run  # the volume the stack mounts, read-only


def test_destroy_delete_data_keeps_kept_data_and_says_what_deletes_it(target: Target, store: StateStore) -> None:
    runner = FakeRunner().on("docker", "ps", stdout="")
    backend, removed = upgraded(store, runner)
    with pytest.raises(ProjectConflict) as refused:
        backend.destroy(target, ABSENT, delete_data=True)
    assert "shop_demo_pgdata," in str(refused.value) and "nothing was deleted" in str(refused.value)
    assert "`provision upgrade-db --env=demo --project=shop --finalize --yes` deletes it" in str(refused.value)
    assert removed == [] and not [c for c in runner.calls if c[:2] == ("docker", "compose")]


def test_drop_kept_deletes_only_a_volume_the_stack_does_not_mount(target: Target, store: StateStore) -> None:
    backend, removed = upgraded(store, FakeRunner())
    with pytest.raises(ProvisionError, match="is the one the stack"):
        backend.drop_kept(target, "pgdata_pg17_x")
    assert backend.drop_kept(target, "pgdata") == "shop_demo_pgdata" and removed == ["shop_demo_pgdata"]
    assert backend.drop_kept(target, "gone") is None
