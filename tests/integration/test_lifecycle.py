"""The whole lifecycle of one project on a real Docker Engine with real PostgreSQL containers."""

from __future__ import annotations

import json
import stat
import urllib.request

from tests.conftest import Sandbox, _docker, leftovers, reload_schema, sql


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return int(response.status)


def _urls(sandbox: Sandbox, project: str = "shop") -> tuple[str, str]:
    data = sandbox.cli("outputs", f"--project={project}", "--format=json", "--show-secrets").json()
    return data["api_url"], data["db_url"]


def test_provision_write_stop_start_reprovision_keeps_data(sandbox: Sandbox) -> None:
    first = sandbox.cli("provision", "--json")
    assert "[Provisioning] Using Local Docker provider" in first.stderr
    [result] = first.json()["projects"]
    assert result["status"] == "running" and result["changed"] is True and result["action"] == "create"
    assert result["db_url"].startswith("postgresql://app:***@127.0.0.1:")
    api_url, db_url = _urls(sandbox)
    assert api_url == result["api_url"]
    assert _get(api_url) == 200

    sql(db_url, "CREATE TABLE notes (id serial PRIMARY KEY, body text)")
    sql(db_url, "INSERT INTO notes (body) VALUES (%s)", "survives everything")
    sql(db_url, "GRANT SELECT ON notes TO anon")  # opened to anonymous reads on purpose (docs/security.md)
    reload_schema(db_url, api_url, "notes")
    with urllib.request.urlopen(api_url + "/notes", timeout=10) as response:  # the API serves the row
        assert b"survives everything" in response.read()

    stopped = sandbox.cli("stop", "--project=shop", "--json").json()
    assert stopped["status"] == "stopped" and stopped["changed"] is True
    assert sandbox.cli("stop", "--project=shop", "--json").json()["changed"] is False
    assert "stopped" in sandbox.cli("status", "--project=shop").stdout

    started = sandbox.cli("start", "--project=shop", "--json").json()
    assert started["status"] == "running" and started["changed"] is True
    assert sql(db_url, "SELECT body FROM notes") == [("survives everything",)]

    restarted = sandbox.cli("restart", "--project=shop", "--json").json()
    assert restarted["status"] == "running"
    assert _get(api_url) == 200

    again = sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]
    assert again["changed"] is False and again["action"] == "no-op"
    assert _urls(sandbox) == (api_url, db_url)  # same ports, same password
    assert sql(db_url, "SELECT body FROM notes") == [("survives everything",)]


def _container_id(sandbox: Sandbox, service: str) -> str:
    return _docker("inspect", "-f", "{{.Id}}", f"{sandbox.compose_name('shop')}-{service}-1").stdout.strip()


def test_image_tag_change_keeps_data(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    _, db_url = _urls(sandbox)
    sql(db_url, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)")

    sandbox.write_env(["shop"], images={"db": "provision-test/postgres:15-b", "api": sandbox.images["api"]})
    update = sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]
    assert update["action"] == "update" and update["changed"] is True
    image = _docker("inspect", "-f", "{{.Config.Image}}", f"{sandbox.compose_name('shop')}-db-1").stdout.strip()
    assert image == "provision-test/postgres:15-b"
    assert sql(db_url, "SELECT v FROM t") == [(42,)]


def test_api_only_change_leaves_the_database_container_alone(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    db_before, api_before = _container_id(sandbox, "db"), _container_id(sandbox, "api")
    sandbox.write_env(["shop"], extra="variables:\n  api_schemas: public,extra\n")
    update = sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]
    assert update["action"] == "update"
    assert _container_id(sandbox, "db") == db_before
    assert _container_id(sandbox, "api") != api_before


def test_two_projects_get_different_ports_and_both_work(sandbox: Sandbox) -> None:
    sandbox.write_env(["shop", "blog"])
    summary = sandbox.cli("provision", "--json").json()
    assert [p["project"] for p in summary["projects"]] == ["shop", "blog"]
    shop, blog = _urls(sandbox, "shop"), _urls(sandbox, "blog")
    ports = {url.rsplit(":", 1)[1].split("/")[0] for url in (*shop, *blog)}
    assert len(ports) == 4
    for api_url, db_url in (shop, blog):
        assert _get(api_url) == 200
        assert sql(db_url, "SELECT 1") == [(1,)]
    sql(shop[1], "CREATE TABLE only_in_shop (x int)")
    assert sql(blog[1], "SELECT to_regclass('only_in_shop')::text") == [(None,)]
    listed = sandbox.cli("list", f"--env={sandbox.env}", "--json").json()["projects"]
    assert {p["project"]: p["status"] for p in listed} == {"shop": "running", "blog": "running"}


def test_destroy_keeps_data_then_delete_data_dumps_and_removes_it(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    api_url, db_url = _urls(sandbox)
    sql(db_url, "CREATE TABLE keep (v text); INSERT INTO keep VALUES ('precious')")
    volume = f"{sandbox.compose_name('shop')}_pgdata"

    destroyed = sandbox.cli("destroy", "--project=shop")
    assert "kept data volume" in destroyed.stderr and "reattaches" in destroyed.stderr
    assert _docker("volume", "inspect", volume).returncode == 0
    again = sandbox.cli("destroy", "--project=shop", "--json")
    assert again.json()["changed"] is False and "compose" not in again.stderr  # nothing ran, nothing changed
    history = [json.loads(line)["action"] for line in sandbox.cli("history", "--project=shop", "--json").stdout.splitlines()]
    assert history == ["create", "destroy"]
    assert _docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={sandbox.compose_name('shop')}").stdout == ""
    assert "destroyed" in sandbox.cli("status", "--project=shop").stdout
    assert sandbox.cli("start", "--project=shop", check=False).returncode != 0  # says: provision it instead

    back = sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]
    assert back["action"] == "create"
    assert _urls(sandbox) == (api_url, db_url)
    assert sql(db_url, "SELECT v FROM keep") == [("precious",)]

    refused = sandbox.cli("destroy", "--project=shop", "--delete-data", check=False)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert _docker("volume", "inspect", volume).returncode == 0

    sandbox.cli("destroy", "--project=shop")  # only the data is left: it is started again to be dumped
    deleted = sandbox.cli("destroy", "--project=shop", "--delete-data", "--yes")
    assert "pg_dump" in deleted.stderr
    assert _docker("volume", "inspect", volume).returncode != 0
    [dump] = list((sandbox.state_dir / "backups" / sandbox.env / "shop").glob("*.dump"))
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600 and dump.read_bytes().startswith(b"PGDMP")
    assert json.loads(dump.with_suffix(".json").read_text())["row_counts"] == {"public.keep": 1}
    assert not (sandbox.state_dir / sandbox.env / "shop" / "secrets.env").exists()
    assert leftovers(sandbox.env) == []


def test_delete_data_without_backup_writes_no_dump(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    sandbox.cli("destroy", "--project=shop", "--delete-data", "--yes", "--no-backup")
    assert not (sandbox.state_dir / "backups").exists()
    assert _docker("volume", "inspect", f"{sandbox.compose_name('shop')}_pgdata").returncode != 0


def test_state_files_are_private(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    project_dir = sandbox.state_dir / sandbox.env / "shop"
    assert stat.S_IMODE((project_dir / "secrets.env").stat().st_mode) == 0o600
    assert stat.S_IMODE(project_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(sandbox.state_dir.stat().st_mode) == 0o700
    password = sandbox.secrets("shop")["DB_PASSWORD"]
    assert password not in (project_dir / "docker-compose.yml").read_text()
    assert password not in (project_dir / "state.json").read_text()


def test_resource_limits_and_postgres_settings_reach_the_containers(sandbox: Sandbox) -> None:
    sandbox.write_env(["shop"], extra="resources:\n  api: {memory: 48M, cpus: 0.25}\n")
    sandbox.write_env_text(sandbox.root.joinpath("envs", f"{sandbox.env}.yml").read_text().replace(
        "  - name: shop\n", "  - name: shop\n    resources: {db: {memory: 192M, memory_reservation: 96M}}\n"))
    sandbox.cli("provision", "--project=shop")
    _, db_url = _urls(sandbox)

    def host_config(service: str, key: str) -> str:
        name = f"{sandbox.compose_name('shop')}-{service}-1"
        return _docker("inspect", "-f", f"{{{{.HostConfig.{key}}}}}", name).stdout.strip()

    assert host_config("db", "Memory") == str(192 * 1024 * 1024)
    assert host_config("db", "MemoryReservation") == str(96 * 1024 * 1024)
    assert host_config("db", "NanoCpus") == str(10**9)  # the default 1.0
    assert host_config("api", "Memory") == str(48 * 1024 * 1024) and host_config("api", "NanoCpus") == str(25 * 10**7)
    assert sql(db_url, "SHOW shared_buffers") == [("48MB",)]  # a quarter of 192M
    assert sql(db_url, "SHOW max_connections") == [("40",)]


def test_status_reports_what_each_stack_costs_and_an_oom_kill(sandbox: Sandbox) -> None:
    """Memory used and limit, CPU and uptime per project from one sweep; a backend killed for going over the
    db's memory limit is named in status (the container itself runs on: only its cgroup counts the kill)."""
    import psycopg
    import pytest

    sandbox.write_env(["shop"], extra="resources:\n  db: {memory: 64M}\n")
    sandbox.cli("provision", "--project=shop")
    _, db_url = _urls(sandbox)
    project = sandbox.cli("status", "--json").json()["projects"][0]
    assert project["memory_limit_bytes"] == 64 * 2**20 + 64 * 2**20  # db 64M + the api's default 64M
    assert 5 * 2**20 < project["memory_used_bytes"] < 128 * 2**20
    assert project["cpu_percent"] is not None and project["uptime_s"] is not None and project["oom_killed"] == []
    by_service = {s["service"]: s for s in project["services"]}
    assert by_service["db"]["memory_limit_bytes"] == 64 * 2**20 and by_service["db"]["oom_killed"] is False

    with pytest.raises(psycopg.Error):  # 300 MB in one backend, over the db's 64M
        sql(db_url, "SELECT length(repeat('x', 300000000))")
    project = sandbox.cli("status", "--json").json()["projects"][0]
    assert project["oom_killed"] == ["db"]
    assert any("db: OOM-killed" in m and "64 MiB" in m and "resources.db.memory" in m for m in project["messages"])
    assert "OOM-killed: db" in sandbox.cli("status").stdout


def _container_ids(sandbox: Sandbox) -> dict[str, str]:
    listed = _docker("ps", "--all", "--no-trunc", "--filter", f"label=io.provision.env={sandbox.env}",
                     "--format", "{{.Label \"com.docker.compose.service\"}} {{.ID}}").stdout.split("\n")
    return dict(line.split(" ", 1) for line in listed if line.strip())


def test_plain_compose_up_on_the_stacks_own_file_recreates_nothing(sandbox: Sandbox) -> None:
    """A user running `docker compose up -d` on the file provision wrote, with its 0600 secrets file as the env
    file (as provision runs it), changes nothing; the next provision is a no-op."""
    sandbox.cli("provision", "--project=shop")
    before = _container_ids(sandbox)
    assert set(before) == {"db", "api"}
    folder = sandbox.state_dir / sandbox.env / "shop"
    compose = ["docker", "compose", "--project-name", sandbox.compose_name("shop"),
               "--file", str(folder / "docker-compose.yml"), "--env-file", str(folder / "secrets.env")]
    up = _docker(*compose[1:], "up", "--detach")
    assert up.returncode == 0, up.stderr
    assert "Recreate" not in up.stderr, up.stderr
    assert _container_ids(sandbox) == before
    [again] = sandbox.cli("provision", "--project=shop", "--json").json()["projects"]
    assert again["changed"] is False and again["action"] == "no-op", again
    assert _container_ids(sandbox) == before

    # the api changed by hand (drift): provision re-applies the stack, and plain compose is stable again
    edited = folder.parent / "edited.yml"
    edited.write_text((folder / "docker-compose.yml").read_text().replace('PGRST_DB_SCHEMAS: "public"',
                                                                          'PGRST_DB_SCHEMAS: "other"'))
    assert _docker(*compose[1:4], "--file", str(edited), *compose[6:], "up", "--detach").returncode == 0
    fixed = sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]
    assert fixed["action"] == "drift" and fixed["changed"] is True
    after = _container_ids(sandbox)
    assert after["api"] != before["api"]
    up = _docker(*compose[1:], "up", "--detach")
    assert up.returncode == 0 and "Recreate" not in up.stderr, up.stderr
    assert _container_ids(sandbox) == after
    assert sandbox.cli("provision", "--project=shop", "--json").json()["projects"][0]["changed"] is False
