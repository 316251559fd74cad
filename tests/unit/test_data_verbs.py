"""Every data verb in process, through the engine, against a backend whose stacks have data in memory
(fakes.DataBackend) and client tools that act on it (fakes.FakeDatabase): what the backend was asked, what the
database holds and what the record says afterwards, on success and on each failure path."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.core.config import load_env
from provision.core.errors import BackupError, HealthTimeout, ProvisionError
from provision.core.secrets import Secret
from provision.infra.database import scram_verifier
from provision.service import Provisioner
from provision.state import backups, history
from provision.state.records import StateStore
from tests.conftest import write_env
from tests.unit.fakes import DataBackend, FakeDatabase, ScratchBackend, ServersBackend

ENV = """
images: {db: "postgres:15", api: "postgrest/postgrest:v12.2.3"}
projects: [{name: shop}]
health: {timeout: 5}
"""
ROWS = {"public.items": 3, "public.orders": 2}


class World:
    """One env with project `shop` provisioned on `backend`, its tables holding ROWS."""

    def __init__(self, root: Path, state: Path, backend: DataBackend) -> None:
        write_env(root, "dev", ENV)
        self.root, self.backend, self.store = root, backend, StateStore(state)
        self.db = FakeDatabase(backend)
        self.provisioner().provision("shop")
        backend.database("shop")["rows"] = dict(ROWS)

    def provisioner(self, **overrides: str) -> Provisioner:
        config = load_env("dev", self.root, environ={}, overrides=overrides)
        return Provisioner(config, self.backend, self.store, runner=self.db, sleep=lambda _: None)

    def rows(self) -> dict[str, int]:
        return dict(self.backend.database("shop")["rows"])

    def secret(self, name: str) -> str:
        return self.store.read_secrets("dev", "shop")[name].reveal()

    def results(self) -> list[tuple[str, str]]:
        """(action, result) of each history line of `shop`."""
        return [(e["action"], e["result"]) for e in history.read(self.store.root, env="dev", project="shop")]


@pytest.fixture
def world(project_root: Path, tmp_path: Path) -> World:
    return World(project_root, tmp_path / "state", DataBackend())


@pytest.fixture
def scratch(project_root: Path, tmp_path: Path) -> World:
    return World(project_root, tmp_path / "state", ScratchBackend())


@pytest.fixture
def servers(project_root: Path, tmp_path: Path) -> World:
    return World(project_root, tmp_path / "state", ServersBackend())


# --- backup and restore -----------------------------------------------------------------------------
def test_a_backup_dumps_the_running_database_in_its_container_with_its_row_counts(world: World) -> None:
    result = world.provisioner().data.backup("shop")
    made = backups.read(Path(str(result.details["path"])))
    assert result.changed and made.row_counts == ROWS and made.manifest["server_major"] == 15
    assert made.manifest["project"] == "shop" and made.manifest["env"] == "dev"
    assert [c[2] for c in world.db.calls] == ["psql", "pg_dump"]  # counts, then the dump, in the db container
    assert world.backend.locked[-1] == "shop"  # under the lock every runner sees


def test_a_restore_takes_a_safety_backup_then_puts_the_chosen_rows_back(world: World) -> None:
    provisioner = world.provisioner()
    chosen = provisioner.data.backup("shop").details["path"]
    world.backend.database("shop")["rows"] = {"public.items": 9}
    result = provisioner.data.restore("shop", str(chosen), yes=True)
    assert world.rows() == ROWS
    safety = backups.read(Path(str(result.details["safety_backup"])))
    assert safety.row_counts == {"public.items": 9}  # the database as it was, kept
    assert world.store.read_pending("dev", "shop") == {}
    assert "the memory backend cannot restore into a new volume" in result.messages[0]  # says why (Coolify: the same)


def test_a_restore_whose_rows_differ_puts_the_safety_backup_back(world: World) -> None:
    provisioner = world.provisioner()
    chosen = provisioner.data.backup("shop").details["path"]
    world.backend.database("shop")["rows"] = {"public.items": 9}
    world.db.lose_rows = 1  # the restore of the chosen dump comes out one row short
    with pytest.raises(BackupError, match="(?s)row counts differ.*the safety backup .* was put back"):
        provisioner.data.restore("shop", str(chosen), yes=True)
    assert world.rows() == {"public.items": 9}
    assert [c[2] for c in world.db.calls].count("pg_restore") == 2  # the chosen dump, then the safety one
    assert world.results()[-1] == ("restore", "failed")


def test_a_failed_pg_restore_changes_nothing_and_clears_its_mark(world: World) -> None:
    provisioner = world.provisioner()
    chosen = provisioner.data.backup("shop").details["path"]
    world.db.fail_restores = 1
    with pytest.raises(ProvisionError, match="(?s)is as it was"):
        provisioner.data.restore("shop", str(chosen), yes=True)
    assert world.rows() == ROWS and world.store.read_pending("dev", "shop") == {}


# --- restore --from into a new volume (a backend that RestoresDumps) ---------------------------------------------
def test_a_restore_beside_fills_a_new_volume_switches_to_it_and_keeps_the_old(scratch: World) -> None:
    provisioner = scratch.provisioner()
    chosen = provisioner.data.backup("shop").details["path"]
    scratch.backend.database("shop")["rows"] = {"public.items": 9}
    result = provisioner.data.restore("shop", str(chosen), yes=True)
    new_key = scratch.backend.mounted["shop"]
    assert new_key.startswith("pgdata_restore_") and scratch.backend.scratches == [new_key]
    assert scratch.rows() == ROWS and scratch.backend.volumes["shop"]["pgdata"]["rows"] == {"public.items": 9}
    assert result.details["safety_backup"] is None and result.details["kept_volume"] == "shop_pgdata"
    assert "restore --env=dev --project=shop --finalize --yes" in result.messages[-1]
    assert "--rollback --yes" in result.messages[-1]
    assert [c[2] for c in scratch.db.calls].count("pg_dump") == 1  # the backup only: no safety dump
    record = scratch.store.read_record("dev", "shop")
    assert record is not None and record.db_volume == new_key and record.kept_data["kind"] == "restore-from"
    assert record.kept_data["state"] == "done" and scratch.store.read_pending("dev", "shop") == {}

    back = provisioner.archive.rollback("shop", yes=True)
    assert scratch.backend.mounted["shop"] == "pgdata" and scratch.rows() == {"public.items": 9}
    assert list(scratch.backend.volumes["shop"]) == ["pgdata"] and back.details["volume"] == "shop_pgdata"
    provisioner.data.restore("shop", str(chosen), yes=True)
    with pytest.raises(ProvisionError, match="keeps the data of restore --from.*restore --env=dev --project=shop "
                                             "--finalize --yes"):
        provisioner.upgrades.finalize("shop", yes=True)  # upgrade-db's verbs leave a restore's kept data alone
    with pytest.raises(ProvisionError, match="earlier restore --from .*`provision restore --env=dev --project=shop "
                                             "--finalize --yes`"):
        scratch.provisioner(**{"images.db": "postgres:17"}).upgrades.upgrade("shop", yes=True)
    with pytest.raises(ProvisionError, match="before its restore --from .*--finalize --yes.*nothing was changed"):
        provisioner.data.restore("shop", str(chosen), yes=True)  # one kept volume at a time
    done = provisioner.archive.finalize("shop", yes=True)
    assert done.details["deleted_volume"] == "shop_pgdata" and list(scratch.backend.volumes["shop"]) == [
        scratch.backend.mounted["shop"]] and scratch.rows() == ROWS


@pytest.mark.parametrize("failure", ["pg_restore", "rows", "stop"])
def test_a_failed_restore_beside_deletes_the_new_volume_and_changes_nothing(scratch: World, failure: str) -> None:
    provisioner = scratch.provisioner()
    chosen = provisioner.data.backup("shop").details["path"]
    scratch.backend.database("shop")["rows"] = {"public.items": 9}
    scratch.db.fail_restores = int(failure == "pg_restore")
    scratch.db.lose_rows = int(failure == "rows")
    scratch.backend.scratch_dies = failure == "stop"
    said = {"pg_restore": "(?s)pg_restore: error.*nothing was changed", "rows": "(?s)row counts differ.*nothing was "
            "changed", "stop": "(?s)stop the one-off server cleanly.*nothing was changed"}[failure]
    with pytest.raises(ProvisionError, match=said):
        provisioner.data.restore("shop", str(chosen), yes=True)
    assert scratch.backend.mounted["shop"] == "pgdata" and list(scratch.backend.volumes["shop"]) == ["pgdata"]
    assert scratch.rows() == {"public.items": 9} and scratch.store.read_pending("dev", "shop") == {}
    record = scratch.store.read_record("dev", "shop")
    assert record is not None and not record.kept_data and (record.db_volume or "pgdata") == "pgdata"
    assert scratch.results()[-1] == ("restore", "failed")


def test_the_new_volume_of_a_killed_restore_beside_is_deleted_by_the_next_data_verb(scratch: World) -> None:
    provisioner = scratch.provisioner()
    scratch.store.write_pending("dev", "shop", "restore-volume", {"from": "/x/a.dump", "volume_key": "pgdata_restore_x"})
    scratch.backend.volumes["shop"]["pgdata_restore_x"] = {"major": 15, "rows": {}}  # left by the killed run
    provisioner.data.backup("shop")
    assert list(scratch.backend.volumes["shop"]) == ["pgdata"] and scratch.store.read_pending("dev", "shop") == {}


# --- upgrade-db ----------------------------------------------------------------------------------------
def test_an_upgrade_moves_the_data_to_a_new_volume_and_keeps_the_old_one(world: World) -> None:
    result = world.provisioner(**{"images.db": "postgres:17"}).upgrades.upgrade("shop", yes=True)
    assert (result.details["from_major"], result.details["to_major"]) == (15, 17)
    new_key = world.backend.mounted["shop"]
    assert new_key.startswith("pgdata_pg17_") and world.rows() == ROWS
    assert world.backend.volumes["shop"]["pgdata"] == {"major": 15, "rows": ROWS}  # the old data, untouched
    record = world.store.read_record("dev", "shop")
    assert record is not None and record.db_volume == new_key and record.images["db"] == "postgres:17"
    assert record.kept_data["state"] == "done" and record.kept_data["volume"] == "shop_pgdata"


def test_a_failed_upgrade_returns_to_the_old_volume_and_image(world: World) -> None:
    world.db.fail_restores = 1
    with pytest.raises(ProvisionError, match="(?s)runs PostgreSQL 15 again on its old data"):
        world.provisioner(**{"images.db": "postgres:17"}).upgrades.upgrade("shop", yes=True)
    assert world.backend.mounted["shop"] == "pgdata" and world.backend.images["shop"] == "postgres:15"
    assert list(world.backend.volumes["shop"]) == ["pgdata"]  # the new volume was deleted again
    assert world.rows() == ROWS
    record = world.store.read_record("dev", "shop")
    assert record is not None and not record.kept_data and record.images["db"] == "postgres:15"
    assert (record.db_volume or "pgdata") == "pgdata"


def test_a_rollback_saves_what_was_written_since_and_returns_to_the_kept_data(world: World) -> None:
    world.provisioner(**{"images.db": "postgres:17"}).upgrades.upgrade("shop", yes=True)
    world.backend.database("shop")["rows"] = {"public.items": 4}  # written on the new major
    result = world.provisioner(**{"images.db": "postgres:15"}).upgrades.rollback("shop", yes=True)
    since = backups.read(Path(str(result.details["backup"])))
    assert since.row_counts == {"public.items": 4} and since.manifest["server_major"] == 17
    assert world.backend.mounted["shop"] == "pgdata" and world.rows() == ROWS
    assert list(world.backend.volumes["shop"]) == ["pgdata"]
    record = world.store.read_record("dev", "shop")
    assert record is not None and not record.kept_data


def test_finalize_deletes_the_kept_volume_and_forgets_the_upgrade(world: World) -> None:
    provisioner = world.provisioner(**{"images.db": "postgres:17"})
    provisioner.upgrades.upgrade("shop", yes=True)
    result = provisioner.upgrades.finalize("shop", yes=True)
    assert result.details["deleted_volume"] == "shop_pgdata"
    assert list(world.backend.volumes["shop"]) == [world.backend.mounted["shop"]] and world.rows() == ROWS
    record = world.store.read_record("dev", "shop")
    assert record is not None and not record.kept_data


def test_provision_refuses_a_new_major_until_upgrade_db(world: World) -> None:
    with pytest.raises(ProvisionError, match="upgrade-db"):
        world.provisioner(**{"images.db": "postgres:17"}).provision("shop")
    assert world.backend.images["shop"] == "postgres:15"


# --- rotate ----------------------------------------------------------------------------------------
def test_a_rotated_db_password_is_set_in_the_database_and_stored(world: World) -> None:
    old = world.secret("DB_PASSWORD")
    world.backend.verifiers["shop"] = scram_verifier(Secret(old))
    result = world.provisioner().data.rotate("shop", "db_password", yes=True)
    new = world.secret("DB_PASSWORD")
    assert new != old
    assert result.changed  # the stack does not reference DB_PASSWORD: its converge changes nothing, the rotation did
    assert world.results()[-1] == ("rotate db_password", "ok")
    assert any(sql.startswith('ALTER ROLE "app"') and user == "app" for user, sql in world.backend.statements)
    assert "SCRAM verifier" in result.messages[1]
    assert world.store.read_pending("dev", "shop") == {}


def test_a_rotation_that_does_not_take_puts_the_old_password_back(world: World) -> None:
    old = world.secret("DB_PASSWORD")
    world.backend.verifiers["shop"] = scram_verifier(Secret(old))
    world.backend.ignore = "rotate-password"  # the ALTER ROLE does not reach the role
    with pytest.raises(ProvisionError, match="(?s)does not have the new password.*old DB_PASSWORD is back in use"):
        world.provisioner().data.rotate("shop", "db_password", yes=True)
    assert world.secret("DB_PASSWORD") == old
    assert world.backend.statements[-1][1].startswith('ALTER ROLE "app"')  # put back (as the superuser)
    assert world.store.read_pending("dev", "shop") == {}


def test_a_rotation_killed_after_the_alter_role_is_finished_by_the_next_run(world: World) -> None:
    old = world.secret("DB_PASSWORD")
    world.backend.verifiers["shop"] = scram_verifier(Secret(old))
    world.backend.die_on = "rotate-password"
    with pytest.raises(KeyboardInterrupt):
        world.provisioner().data.rotate("shop", "db_password", yes=True)
    pending = world.store.read_pending("dev", "shop")["rotate"]
    assert world.secret("DB_PASSWORD") == old  # the kill came before the new one was stored
    assert world.results()[-1] == ("rotate db_password", "interrupted")
    world.provisioner().data.backup("shop")  # any next data verb (or provision) finishes it first
    assert world.secret("DB_PASSWORD") == pending["value"] != old
    assert world.store.read_pending("dev", "shop") == {}


def test_a_rotated_jwt_secret_is_applied(world: World) -> None:
    old = world.secret("JWT_SECRET")
    applies = world.backend.calls.count("apply:update")
    world.provisioner().data.rotate("shop", "jwt_secret", yes=True)
    assert world.secret("JWT_SECRET") != old and world.backend.calls.count("apply:update") == applies + 1


# --- move --------------------------------------------------------------------------------------------
def test_a_move_restores_the_rows_on_the_new_server_and_sets_the_old_stack_aside(servers: World) -> None:
    backend = servers.backend
    assert isinstance(backend, ServersBackend) and backend.server_of["shop"] == "a"
    password = servers.secret("DB_PASSWORD")
    result = servers.provisioner().moves.move("shop", "b", yes=True)
    aside = str(result.details["set_aside"])
    assert backend.server_of["shop"] == "b" and servers.rows() == ROWS
    assert backend.server_of[aside] == "a" and backend.running[aside] is False
    assert servers.secret("DB_PASSWORD") == password  # the new stack got the same secrets
    done = servers.provisioner().moves.move_finalize("shop", yes=True)
    assert done.details["deleted"] == [aside] and aside not in backend.deployed


def test_a_failed_move_puts_the_old_stack_back(servers: World) -> None:
    backend = servers.backend
    assert isinstance(backend, ServersBackend)
    servers.db.fail_restores = 1
    with pytest.raises(ProvisionError, match="(?s)is back where it was \\(a\\)"):
        servers.provisioner().moves.move("shop", "b", yes=True)
    assert backend.server_of["shop"] == "a" and backend.running["shop"] and servers.rows() == ROWS
    assert not [name for name in backend.deployed if "aside" in name]


def test_a_move_is_refused_where_the_backend_has_one_place(world: World) -> None:
    with pytest.raises(ProvisionError, match="move needs coolify.servers"):
        world.provisioner().moves.move("shop", "b", yes=True)
    assert world.backend.calls == ["apply:create"]


def test_a_stack_that_cannot_start_on_its_data_is_a_health_timeout(world: World) -> None:
    world.backend.volumes["shop"]["pgdata"]["major"] = 17  # as if the data were written by a newer server
    with pytest.raises(HealthTimeout):
        world.provisioner().control("shop", "restart")
