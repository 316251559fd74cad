"""upgrade-db, --rollback and --finalize, and restore --from, killed (SIGKILL) at each of their steps, on the real
engine with real PostgreSQL 15 and 17. The tool pauses at a named step when PROVISION_TEST_PAUSE_AT names it (service/data.py,
DataVerbs.pause: it writes <state dir>/paused-at-<step> and sleeps); the test kills it there, then
checks that provision refuses a half-done upgrade with the command that finishes or undoes it, that the next
run of that command leaves the stack serving every row, that no helper container stays and that only the
expected data volumes exist."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from tests.conftest import Sandbox, sql

PG17 = "provision-test/postgres:17"


def _write_env(sandbox: Sandbox, db: str) -> None:
    # a port range of its own, below the kernel's ephemeral ports: the suite's sandboxes lease 30000-32699
    sandbox.write_env_text(f"backend: local\nimages:\n  db: {db}\n  api: {sandbox.images['api']}\n"
                           f"projects:\n  - name: shop\nhealth:\n  timeout: 90\nlocal:\n  port_range: [29000, 29999]\n")


def _provisioned_with_rows(sandbox: Sandbox, rows: int = 7) -> str:
    """Provision shop on PostgreSQL 15 with `rows` rows, then name PostgreSQL 17 in the env file; its db_url."""
    _write_env(sandbox, sandbox.images["db"])
    sandbox.cli("provision", "--project=shop")
    db_url = str(sandbox.cli("outputs", "--project=shop", "--format=json").json()["db_url"])
    sql(db_url, "create table items (id int primary key, name text)")
    sql(db_url, "insert into items select g, 'item ' || g from generate_series(1, %s) g", rows)
    _write_env(sandbox, PG17)
    return db_url


def _count(db_url: str) -> int:
    return int(sql(db_url, "select count(*) from items")[0][0])


def _major(db_url: str) -> int:
    return int(sql(db_url, "show server_version_num")[0][0]) // 10000


def _docker(*args: str) -> list[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60, check=True).stdout.split()


def _volumes(sandbox: Sandbox) -> set[str]:
    return set(_docker("volume", "ls", "-q", "--filter", f"label=io.provision.env={sandbox.env}"))


def _helpers(sandbox: Sandbox) -> list[str]:
    return _docker("ps", "-aq", "--filter", f"label=io.provision.helper={sandbox.env}/shop")


def _kept_data(sandbox: Sandbox) -> dict[str, object]:
    record = json.loads((sandbox.state_dir / sandbox.env / "shop" / "state.json").read_text())
    return dict(record.get("kept_data") or {})


def _kill_at(sandbox: Sandbox, step: str, *args: str, verb: str = "upgrade-db", helpers_left: bool = False) -> None:
    """Run `<verb> --project=shop --yes *args` until it pauses at `step`, then SIGKILL it."""
    marker = sandbox.state_dir / f"paused-at-{step}"
    log = sandbox.root / f"killed-at-{step}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(sandbox.argv(verb, "--project=shop", "--yes", *args), cwd=sandbox.root,
                                stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=sandbox.environ(PROVISION_TEST_PAUSE_AT=step))
        try:
            deadline = time.monotonic() + 300
            while not marker.exists():
                assert proc.poll() is None, f"{verb} {' '.join(args)} ended before {step}:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"{verb} never reached {step}:\n{log.read_text()}"
                time.sleep(0.1)
            assert int(marker.read_text()) == proc.pid  # paused in the tool's own process, which dies now
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    marker.unlink()
    assert (_helpers(sandbox) != []) == helpers_left


def _refused(sandbox: Sandbox, *finishing: str) -> None:
    """provision refuses the half-done upgrade, changing nothing, and names the commands that finish or undo it."""
    refused = sandbox.cli("provision", "--project=shop", check=False)
    assert refused.returncode == 1 and "did not finish" in refused.stderr, refused.output
    for command in finishing:
        assert f" -m invoke upgrade-db --env={sandbox.env} --project=shop {command}`" in refused.stderr, refused.output


def test_a_killed_upgrade_is_finished_by_the_next_run(sandbox: Sandbox) -> None:
    db_url = _provisioned_with_rows(sandbox)
    old_volume = f"{sandbox.compose_name('shop')}_pgdata"

    # killed after its dump: nothing was recorded or moved; provision still asks for upgrade-db
    _kill_at(sandbox, "dumped")
    assert _kept_data(sandbox) == {} and _major(db_url) == 15 and _count(db_url) == 7
    refused = sandbox.cli("provision", "--project=shop", check=False)
    assert refused.returncode == 1 and "Nothing was changed" in refused.stderr

    # killed once the upgrade is recorded, before the stack moved: the old server serves every row, and what it
    # is given now counts (the next run dumps again)
    _kill_at(sandbox, "switching")
    assert _kept_data(sandbox)["state"] == "switching" and _major(db_url) == 15 and _count(db_url) == 7
    sql(db_url, "insert into items values (100, 'written after the recorded dump')")
    _refused(sandbox, "--yes", "--rollback --yes")
    assert _volumes(sandbox) == {old_volume}

    # killed on the new server before the dump is restored: provision refuses, upgrade-db --yes restores it
    _kill_at(sandbox, "restoring")
    _refused(sandbox, "--yes", "--rollback --yes")
    resumed = sandbox.cli("upgrade-db", "--project=shop", "--yes", "--json")
    assert "finishing the upgrade to PostgreSQL 17" in resumed.stderr
    finished = resumed.json()
    assert _major(db_url) == 17 and _count(db_url) == 8
    assert _volumes(sandbox) == {old_volume, finished["details"]["volume"]}
    assert _kept_data(sandbox)["state"] == "done"
    assert sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]["changed"] is False
    assert _helpers(sandbox) == []


def test_a_killed_rollback_is_finished_by_the_next_run(sandbox: Sandbox) -> None:
    db_url = _provisioned_with_rows(sandbox)
    old_volume = f"{sandbox.compose_name('shop')}_pgdata"

    # killed after the restore was verified, before the upgrade was recorded done: it serves every row
    _kill_at(sandbox, "restored")
    assert _major(db_url) == 17 and _count(db_url) == 7 and _kept_data(sandbox)["state"] == "switching"
    _refused(sandbox, "--yes", "--rollback --yes")

    # undoing it, killed before the stack moves back: still every row
    _kill_at(sandbox, "rolling-back", "--rollback")
    assert _kept_data(sandbox)["state"] == "rolling back" and _count(db_url) == 7
    _refused(sandbox, "--rollback --yes")

    # killed back on the old volume, before the new one is deleted
    _kill_at(sandbox, "dropping-new", "--rollback")
    assert _major(db_url) == 15 and _count(db_url) == 7 and len(_volumes(sandbox)) == 2
    _refused(sandbox, "--rollback --yes")

    sandbox.cli("upgrade-db", "--project=shop", "--rollback", "--yes")
    assert _major(db_url) == 15 and _count(db_url) == 7
    assert _kept_data(sandbox) == {} and _volumes(sandbox) == {old_volume}
    refused = sandbox.cli("provision", "--project=shop", check=False)  # the env file still names 17
    assert refused.returncode == 1 and "Nothing was changed" in refused.stderr and _count(db_url) == 7


def test_a_killed_finalize_is_finished_by_the_next_run_and_destroy_keeps_kept_data(sandbox: Sandbox) -> None:
    db_url = _provisioned_with_rows(sandbox)
    old_volume = f"{sandbox.compose_name('shop')}_pgdata"
    new_volume = sandbox.cli("upgrade-db", "--project=shop", "--yes", "--json").json()["details"]["volume"]

    # the kept volume is never deleted by destroy --delete-data, which names it and what deletes it
    kept = sandbox.cli("destroy", "--project=shop", "--delete-data", "--yes", "--no-backup", check=False)
    assert kept.returncode == 1 and old_volume in kept.stderr and "--finalize --yes" in kept.stderr, kept.output
    assert _volumes(sandbox) == {old_volume, new_volume} and _count(db_url) == 7

    _kill_at(sandbox, "finalizing", "--finalize")
    assert _kept_data(sandbox)["state"] == "finalizing"
    assert sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]["changed"] is False
    assert _major(db_url) == 17 and _count(db_url) == 7
    finalized = sandbox.cli("upgrade-db", "--project=shop", "--finalize", "--yes", "--json").json()
    assert finalized["details"]["deleted_volume"] == old_volume
    assert _kept_data(sandbox) == {} and _volumes(sandbox) == {new_volume} and _count(db_url) == 7

    # a helper container an earlier version left on the volume when it was killed does not keep it in use
    leftover = _docker("create", "--label", "io.provision.managed=true", "--label", "io.provision.env=helper",
                       "--volume", f"{new_volume}:/from", "--entrypoint", "true", sandbox.images["db"])[0]
    try:
        sandbox.cli("destroy", "--project=shop", "--delete-data", "--yes", "--no-backup")
        assert _volumes(sandbox) == set() and _helpers(sandbox) == []
        assert _docker("ps", "-aq", "--filter", f"id={leftover}") == []
    finally:
        subprocess.run(["docker", "rm", "--force", leftover], capture_output=True, timeout=60, check=False)


def test_a_killed_restore_from_leaves_the_project_on_its_data_or_rolls_back(sandbox: Sandbox) -> None:
    """restore --from killed with its one-off server running on the new volume: the next run deletes both; killed
    once the switch is recorded: provision refuses, restore --rollback --yes returns to the old volume."""
    _write_env(sandbox, sandbox.images["db"])
    sandbox.cli("provision", "--project=shop")
    db_url = str(sandbox.cli("outputs", "--project=shop", "--format=json").json()["db_url"])
    sql(db_url, "create table items (id int primary key, name text)")
    sql(db_url, "insert into items select g, 'item ' || g from generate_series(1, 5) g")
    sandbox.cli("backup", "--project=shop")
    sql(db_url, "insert into items values (6, 'after the backup')")
    old_volume = f"{sandbox.compose_name('shop')}_pgdata"

    _kill_at(sandbox, "restore-scratch", "--from=latest", verb="restore", helpers_left=True)
    assert len(_volumes(sandbox)) == 2 and _kept_data(sandbox) == {} and _count(db_url) == 6
    healed = sandbox.cli("provision", "--project=shop", "--json")
    assert "never switched: its new volume (pgdata_restore_" in healed.stderr, healed.output
    assert healed.json()["projects"][0]["changed"] is False
    assert _volumes(sandbox) == {old_volume} and _helpers(sandbox) == [] and _count(db_url) == 6

    _kill_at(sandbox, "restore-switching", "--from=latest", verb="restore")
    assert _kept_data(sandbox)["state"] == "switching" and len(_volumes(sandbox)) == 2
    refused = sandbox.cli("provision", "--project=shop", check=False)
    assert refused.returncode == 1 and "restore --from did not finish" in refused.stderr, refused.output
    assert f" -m invoke restore --env={sandbox.env} --project=shop --rollback --yes`" in refused.stderr
    sandbox.cli("restore", "--project=shop", "--rollback", "--yes")
    assert _count(db_url) == 6 and _kept_data(sandbox) == {} and _volumes(sandbox) == {old_volume}
    assert _helpers(sandbox) == []
