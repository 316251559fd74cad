"""Release-grade operations on the real engine: plan and drift, rollback, interrupts, hooks, fleets, history."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import Sandbox, _docker, sql
from tests.waiting import run_state, wait_until


def _containers(sandbox: Sandbox, project: str | None = None) -> list[str]:
    label = f"label=io.provision.project={project}" if project else f"label=io.provision.env={sandbox.env}"
    return _docker("ps", "-aq", "--filter", f"label=io.provision.env={sandbox.env}", "--filter", label).stdout.split()


def _running(sandbox: Sandbox, project: str) -> bool:
    label = f"label=io.provision.project={project}"
    return bool(_docker("ps", "-q", "--filter", f"label=io.provision.env={sandbox.env}", "--filter", label).stdout.split())


def _plan(sandbox: Sandbox, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = sandbox.cli("plan", "--json", "--detailed-exitcode", *args, check=False)
    assert result.returncode in (0, 2), result.stderr
    return result.returncode, result.json()


def test_plan_reports_each_outcome_and_changes_nothing(sandbox: Sandbox) -> None:
    code, data = _plan(sandbox)
    assert code == 2 and [(p["project"], p["outcome"]) for p in data["projects"]] == [("shop", "create")]
    assert _containers(sandbox) == []

    sandbox.cli("provision")
    code, data = _plan(sandbox)
    assert code == 0 and data["projects"][0]["outcome"] == "no-op" and data["changes"] is False

    code, data = _plan(sandbox, "--set", "images.db=provision-test/postgres:15-b")
    [item] = data["projects"]
    assert code == 2 and item["outcome"] == "update"
    assert "-    image: provision-test/postgres:15" in item["diff"] and "+    image: provision-test/postgres:15-b" in item["diff"]
    assert "DB_PASSWORD" not in item["diff"].replace("${DB_PASSWORD", "")
    text = sandbox.cli("plan", "--set", "images.db=provision-test/postgres:15-b").stdout
    assert "update" in text and "1 of 1 project(s) with changes pending" in text

    # drift made by hand: the same project re-created by docker compose from an edited copy of its file
    state = sandbox.state_dir / sandbox.env / "shop"
    edited = state.parent / "edited.yml"
    edited.write_text((state / "docker-compose.yml").read_text().replace('PGRST_DB_SCHEMAS: "public"', 'PGRST_DB_SCHEMAS: "other"'))
    up = _docker("compose", "--project-name", sandbox.compose_name("shop"), "--file", str(edited),
                 "--env-file", str(state / "secrets.env"), "up", "-d", timeout=120)
    assert up.returncode == 0, up.stderr
    code, data = _plan(sandbox)
    assert code == 2 and data["projects"][0]["outcome"] == "drift"
    assert "api" in data["projects"][0]["reason"]
    assert "drift" in sandbox.cli("status", "--project=shop", "--json").stdout
    fixed = sandbox.cli("provision", "--json").json()["projects"][0]
    assert fixed["action"] == "drift" and fixed["changed"] is True
    assert _plan(sandbox)[0] == 0

    # an orphan: deployed, then removed from the env file
    sandbox.write_env(["shop", "old"])
    sandbox.cli("provision", "--project=old")
    sandbox.write_env(["shop"])
    code, data = _plan(sandbox)
    assert code == 2 and ("old", "orphan") in [(p["project"], p["outcome"]) for p in data["projects"]]
    refused = sandbox.cli("provision", "--prune", check=False)
    assert refused.returncode != 0 and "--yes" in refused.stderr and _containers(sandbox, "old")
    sandbox.cli("provision", "--prune", "--yes")
    assert _containers(sandbox, "old") == []
    assert _docker("volume", "inspect", f"old_{sandbox.env}_pgdata").returncode == 0  # pruning keeps data
    assert _plan(sandbox)[0] == 0


def test_plan_detailed_exitcode_is_1_on_error(sandbox: Sandbox) -> None:
    result = sandbox.cli("plan", "--detailed-exitcode", env="nosuch", check=False)
    assert result.returncode == 1


def test_a_failed_upgrade_is_rolled_back_and_the_old_version_serves(sandbox: Sandbox) -> None:
    sandbox.write_env(["shop"], timeout=15)
    sandbox.cli("provision")
    urls = sandbox.cli("outputs", "--project=shop", "--format=json", "--show-secrets").json()
    sql(urls["db_url"], "CREATE TABLE keep (v text); INSERT INTO keep VALUES ('safe'); GRANT SELECT ON keep TO anon")

    result = sandbox.cli("provision", "--json", "--set", "images.api=provision-test/debian-base:bookworm", check=False)
    assert result.returncode != 0
    [shop] = result.json()["projects"]
    assert shop["status"] == "rolled back"
    assert shop["api_url"] == urls["api_url"]  # the summary names the version that serves again
    assert "rolled back" in result.stderr and urls["api_url"] in result.stderr
    image = _docker("inspect", "-f", "{{.Config.Image}}", f"{sandbox.compose_name('shop')}-api-1").stdout.strip()
    assert image == sandbox.images["api"]
    with urllib.request.urlopen(urls["api_url"] + "/keep", timeout=10) as response:
        assert json.loads(response.read()) == [{"v": "safe"}]
    assert sql(urls["db_url"], "SELECT v FROM keep") == [("safe",)]
    history = sandbox.cli("history", "--json").stdout.splitlines()
    assert json.loads(history[-1])["result"] == "rolled back"
    assert sandbox.cli("plan", "--json").json()["projects"][0]["outcome"] == "no-op"


def test_a_crash_looping_db_ends_the_wait_at_once_then_rollback_or_removal(sandbox: Sandbox) -> None:
    """A db that logs FATAL at its first start and restarts: the wait ends at the crash, not at health.timeout
    (120 s), with the FATAL line in the log tail; a create is removed (data kept), an update rolled back. That the
    wait ended at the crash is what the error says: only a crash seen during the wait gives those words
    (ContainerCrashed); a wait that ran out ends with another HealthTimeout."""
    crashing = "variables:\n  pg_work_mem: lots\n"
    sandbox.write_env(["shop"], timeout=120, extra=crashing)
    result = sandbox.cli("provision", check=False)
    assert result.returncode != 0 and "crashed: the wait ended at once" in result.stderr, result.stderr
    assert "FATAL" in result.stderr and "work_mem" in result.stderr
    assert "data volume and credentials are kept" in result.stderr and _containers(sandbox) == []

    # the first start crashed after initdb, before the database was made: that volume is deleted, then an update
    sandbox.cli("destroy", "--project=shop", "--delete-data", "--yes", "--no-backup")
    sandbox.write_env(["shop"], timeout=120)
    sandbox.cli("provision")
    sandbox.write_env(["shop"], timeout=120, extra=crashing)
    result = sandbox.cli("provision", "--json", check=False)
    [shop] = result.json()["projects"]
    assert shop["status"] == "rolled back" and "FATAL" in result.stderr, result.stderr
    assert "crashed: the wait ended at once" in result.stderr, result.stderr
    sandbox.write_env(["shop"], timeout=120)
    assert sandbox.cli("plan", "--json").json()["projects"][0]["outcome"] == "no-op"


def test_a_failed_first_create_is_removed_and_its_data_kept(sandbox: Sandbox) -> None:
    sandbox.write_env(["shop"], timeout=10, images={"db": sandbox.images["db"], "api": "provision-test/debian-base:bookworm"})
    result = sandbox.cli("provision", check=False)
    assert result.returncode != 0 and "data volume and credentials are kept" in result.stderr
    assert _containers(sandbox) == []
    assert _docker("volume", "inspect", f"{sandbox.compose_name('shop')}_pgdata").returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_provision_leaves_nothing_locked_and_the_next_run_converges(
        sandbox: Sandbox, sig: signal.Signals) -> None:
    proc = sandbox.popen("provision", "--project=shop")
    wait_until(lambda: _containers(sandbox), 60, "a container of the provision run to appear",
               detail=lambda: run_state(proc))
    proc.send_signal(sig)
    # how soon the run exits has no evidence but time: communicate's generous 60 s is the bound
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    # the operation was cut short, not finished and then reported
    assert json.loads(sandbox.cli("history", "--json").stdout.splitlines()[-1])["result"] == "interrupted"
    leftover = subprocess.run(["pgrep", "-f", f"--project-name {sandbox.compose_name('shop')}"],
                              capture_output=True, text=True)
    assert leftover.stdout == ""  # the compose child was stopped too
    result = sandbox.cli("provision", "--json", "--lock-timeout=5").json()["projects"][0]
    assert result["status"] == "running"
    assert sandbox.cli("provision", "--json").json()["projects"][0]["action"] == "no-op"


def _hook(sandbox: Sandbox, name: str, body: str) -> None:
    hooks = sandbox.root / "hooks"
    hooks.mkdir(exist_ok=True)
    path = hooks / name
    path.write_text(f"#!{sys.executable}\n" + body)
    path.chmod(0o755)


def test_hooks_migrate_after_provision_and_a_failing_pre_hook_aborts(sandbox: Sandbox) -> None:
    log = sandbox.root / "hooks.log"
    _hook(sandbox, "pre-provision", f"import os\nopen({str(log)!r}, 'a').write('pre ' + os.environ['PROVISION_PROJECT'] + '\\n')\n"
                                    "raise SystemExit(1 if os.environ['PROVISION_PROJECT'] == 'bad' else 0)\n")
    _hook(sandbox, "post-provision", "import os, psycopg\n"
                                     f"open({str(log)!r}, 'a').write('post ' + os.environ['PROVISION_API_URL'] + '\\n')\n"
                                     "with psycopg.connect(os.environ['PROVISION_DB_URL']) as c:\n"
                                     "    c.execute('CREATE TABLE IF NOT EXISTS migrated (id int)')\n")
    sandbox.cli("provision", "--project=shop")
    lines = log.read_text().splitlines()
    assert lines[0] == "pre shop" and lines[1].startswith("post http://127.0.0.1:")
    db_url = sandbox.cli("outputs", "--project=shop", "--format=json", "--show-secrets").json()["db_url"]
    assert sql(db_url, "SELECT to_regclass('migrated')::text") == [("migrated",)]

    aborted = sandbox.cli("provision", "--project=bad", "--create", check=False)
    assert aborted.returncode != 0 and "pre-provision" in aborted.stderr
    assert _containers(sandbox, "bad") == []
    skipped = sandbox.cli("provision", "--project=bad", "--create", "--skip-hooks")
    assert skipped.returncode == 0 and _containers(sandbox, "bad")


def test_ten_projects_in_parallel_fail_fast_and_keep_going(sandbox: Sandbox) -> None:
    names = [f"p{i:02d}" for i in range(10)]
    sandbox.write_env(names)
    _hook(sandbox, "pre-provision", "import os\nraise SystemExit(7 if os.environ['PROVISION_PROJECT'] == 'p00' else 0)\n")

    fail_fast = sandbox.cli("provision", "--json", "--parallel=4", check=False)
    assert fail_fast.returncode != 0
    statuses = {p["project"]: p["status"] for p in fail_fast.json()["projects"]}
    assert statuses["p00"] == "failed"
    assert "skipped" in statuses.values() and set(statuses.values()) <= {"failed", "running", "skipped"}
    for name, status in statuses.items():
        assert bool(_containers(sandbox, name)) == (status == "running")
    assert "PROJECT" in fail_fast.stderr and "DURATION_S" in fail_fast.stderr  # the summary table

    keep_going = sandbox.cli("provision", "--json", "--parallel=4", "--keep-going", check=False)
    assert keep_going.returncode != 0
    statuses = {p["project"]: p["status"] for p in keep_going.json()["projects"]}
    assert statuses == {"p00": "failed", **{n: "running" for n in names[1:]}}
    ports = {p["api_url"] for p in keep_going.json()["projects"] if p["api_url"]}
    assert len(ports) == 9

    # fleet verbs over every deployed project of the env (p00 never came up: not deployed)
    db_url = sandbox.cli("outputs", "--project=p01", "--format=json", "--show-secrets").json()["db_url"]
    sql(db_url, "create table kept (id int)")
    sql(db_url, "insert into kept values (1), (2)")
    stopped = sandbox.cli("stop", "--all", "--parallel=4", "--json")
    assert {p["project"]: p["status"] for p in stopped.json()["projects"]} == {n: "stopped" for n in names[1:]}
    assert "PROJECT" in stopped.stderr and not any(_running(sandbox, n) for n in names)

    # one project cannot start (its rendered compose file is gone): fail-fast starts no further project,
    # --keep-going starts every other one; both exit 1
    compose = sandbox.state_dir / sandbox.env / "p03" / "docker-compose.yml"
    saved = compose.read_text()
    compose.unlink()
    fail_fast = sandbox.cli("start", "--all", "--parallel=1", "--json", check=False)
    statuses = {p["project"]: p["status"] for p in fail_fast.json()["projects"]}
    assert fail_fast.returncode == 1 and statuses["p03"] == "failed"
    assert [statuses[n] for n in ("p01", "p02")] == ["running", "running"]
    assert all(statuses[n] == "skipped" and not _running(sandbox, n) for n in names[4:])
    kept_going = sandbox.cli("start", "--all", "--parallel=4", "--keep-going", "--json", check=False)
    statuses = {p["project"]: p["status"] for p in kept_going.json()["projects"]}
    assert kept_going.returncode == 1 and statuses == {**{n: "running" for n in names[1:]}, "p03": "failed"}
    assert sql(db_url, "select count(*) from kept") == [(2,)]  # data intact through stop and start
    compose.write_text(saved)
    started = sandbox.cli("start", "--all", "--parallel=4", "--json").json()["projects"]
    assert [p["status"] for p in started] == ["running"] * 9
    assert [p["project"] for p in started if p["changed"]] == ["p03"]
    again = sandbox.cli("start", "--all", "--json").json()["projects"]
    assert not any(p["changed"] for p in again)  # nothing to do: changed is false everywhere
    refused = sandbox.cli("destroy", "--all", check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr and _running(sandbox, "p01")
    gone = sandbox.cli("destroy", "--all", "--yes", "--json").json()["projects"]
    assert [p["status"] for p in gone] == ["destroyed"] * 9 and not any(_containers(sandbox, n) for n in names)
    both = sandbox.cli("stop", "--all", "--project=p01", check=False)
    assert both.returncode == 2 and "--all" in both.stderr


def test_history_lists_state_changing_operations(sandbox: Sandbox) -> None:
    sandbox.cli("provision")
    sandbox.cli("stop", "--project=shop")
    sandbox.cli("destroy", "--project=shop")
    text = sandbox.cli("history", "--project=shop").stdout
    for action in ("create", "stop", "destroy"):
        assert action in text
    records = [json.loads(line) for line in sandbox.cli("history", "--json").stdout.splitlines()]
    assert [r["action"] for r in records] == ["create", "stop", "destroy"]
    assert all(r["user"] and r["host"] and r["env"] == sandbox.env for r in records)
    assert os.stat(sandbox.state_dir / "history.jsonl").st_mode & 0o077 == 0

