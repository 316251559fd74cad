"""The data lifecycle on Coolify (the emulator deploys on the local engine): Coolify's API moves no bytes in
or out of a service, so dumps go through the db's published port (variables.db_public_port) with this
machine's PostgreSQL tools; without a published port each verb says so and changes nothing."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.conftest import reload_schema, sql
from tests.coolify.conftest import coolify_env, free_port, make_sandbox
from tests.coolify_emulator import CoolifyEmulator

pytestmark = pytest.mark.docker


def test_backup_restore_rotate_and_clone_through_the_published_port(
        tmp_path: Path, docker_emulator: CoolifyEmulator, test_images: Mapping[str, str]) -> None:
    emu = docker_emulator
    box = make_sandbox(tmp_path, emu)
    port = free_port()
    box.write_env_text(coolify_env(dict(test_images), timeout=90, extra=f"variables:\n  db_public_port: {port}\n"))
    result = box.cli("provision", "--json", "--show-secrets", timeout=300).json()["projects"][0]
    db_url, api_url = result["db_url"], result["api_url"]
    sql(db_url, "create table items (id int primary key)")
    sql(db_url, "insert into items select generate_series(1, 4)")
    sql(db_url, "grant select on items to anon")  # opened to anonymous reads on purpose (docs/security.md)
    reload_schema(db_url, api_url, "items", proxy=emu.proxy_url)

    made = box.cli("backup", "--project=shop", "--json", timeout=300).json()["details"]
    assert made["row_counts"] == {"public.items": 4} and made["backend"] == "coolify"
    sql(db_url, "delete from items")
    box.cli("restore", "--project=shop", "--from=latest", "--yes", timeout=300)
    assert sql(db_url, "select count(*) from items") == [(4,)]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": emu.proxy_url}))
    with opener.open(api_url + "/items", timeout=10) as response:
        assert len(json.loads(response.read())) == 4

    rotated = box.cli("rotate", "--project=shop", "--secret=db_password", "--yes", timeout=300)
    assert "the new password logs in and the old one is refused" in rotated.stdout
    new_url = box.cli("outputs", "--project=shop", "--format=json").json()["db_url"]
    assert new_url != db_url and sql(new_url, "select count(*) from items") == [(4,)]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(db_url, connect_timeout=10).close()
    with opener.open(api_url + "/items", timeout=10) as response:  # the API was given the new password
        assert len(json.loads(response.read())) == 4

    copy_port = free_port()
    cloned = box.cli("clone", "--project=shop", "--to=shop-copy", f"--set=variables.db_public_port={copy_port}",
                     "--json", "--show-secrets", timeout=600).json()
    assert cloned["details"]["row_counts"] == {"public.items": 4} and f":{copy_port}/" in cloned["db_url"]
    sql(cloned["db_url"], "insert into items values (99)")
    assert sql(new_url, "select count(*) from items") == [(4,)]
    # a branch on Coolify too: its service's description marks its parent, which a checkout without the
    # records reads (plan: no orphan, no drift)
    elsewhere = box.cli("plan", "--json", timeout=300,
                        extra_env={"PROVISION_STATE_DIR": str(box.root / "other")}).json()["projects"]
    assert {p["project"]: p["outcome"] for p in elsewhere}["shop-copy"] == "branch"

    # PostgreSQL 15 -> 17: Coolify's API cannot copy a volume, so the stack moves to a new one
    box.write_env_text(coolify_env({**test_images, "db": "provision-test/postgres:17"}, timeout=90,
                                   extra=f"variables:\n  db_public_port: {port}\n"))
    [planned] = box.cli("plan", "--project=shop", "--json", timeout=300).json()["projects"]
    assert planned["outcome"] == "upgrade-db" and "15 → 17" in planned["reason"]
    refused = box.cli("provision", "--project=shop", check=False, timeout=300)
    assert refused.returncode == 1 and "upgrade-db" in refused.stderr
    upgraded = box.cli("upgrade-db", "--project=shop", "--yes", "--json", timeout=600).json()["details"]
    assert (upgraded["from_major"], upgraded["to_major"]) == (15, 17) and upgraded["kept_volume"].endswith("_pgdata")
    assert sql(new_url, "show server_version_num")[0][0].startswith("17")
    assert sql(new_url, "select count(*) from items") == [(4,)]
    with opener.open(api_url + "/items", timeout=10) as response:
        assert len(json.loads(response.read())) == 4
    back = box.cli("upgrade-db", "--project=shop", "--rollback", "--yes", "--no-backup", timeout=600)
    assert "back on PostgreSQL 15" in back.stdout
    assert sql(new_url, "show server_version_num")[0][0].startswith("15")
    assert sql(new_url, "select count(*) from items") == [(4,)]


def test_without_a_published_port_dumps_are_refused_and_rotation_goes_through_a_task(
        tmp_path: Path, docker_emulator: CoolifyEmulator, test_images: Mapping[str, str]) -> None:
    emu = docker_emulator
    box = make_sandbox(tmp_path, emu)
    box.write_env_text(coolify_env(dict(test_images), timeout=90))
    api_url = box.cli("provision", "--json", timeout=300).json()["projects"][0]["api_url"]
    for verb in (("backup", "--project=shop"), ("psql", "--project=shop", "--command=select 1")):
        refused = box.cli(*verb, check=False, timeout=120)
        assert refused.returncode == 1 and "db_public_port" in refused.stderr, refused.output
    assert not (box.state_dir / "backups").exists()

    old_url = box.cli("outputs", "--project=shop", "--format=json").json()["db_url"]
    rotated = box.cli("rotate", "--project=shop", "--secret=db_password", "--yes", timeout=300)
    assert "its SCRAM verifier, checked in the database" in rotated.stdout, rotated.output
    new_url = box.cli("outputs", "--project=shop", "--format=json").json()["db_url"]
    new_password = urlsplit(new_url).password
    assert new_password and new_url != old_url
    posted = [r for r in emu.requests if r.method == "POST" and r.path.endswith("/scheduled-tasks")]
    assert posted and all(new_password not in json.dumps(r.body) for r in posted)  # no plaintext in a command
    assert any(r.path.endswith("/execute") for r in emu.requests) and not emu.core.store.tasks  # deleted after
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": emu.proxy_url}))
    with opener.open(api_url + "/", timeout=10) as response:  # the API connects with the new password
        assert response.status == 200


def test_move_to_another_server_keeps_the_rows_and_the_old_stack_until_finalize(
        tmp_path: Path, docker_emulator: CoolifyEmulator, test_images: Mapping[str, str]) -> None:
    emu = docker_emulator
    # the same engine, another address of it: a db_url naming the wrong server's address shows (the API's host,
    # and so the seeded localhost's, is 127.0.0.1)
    second = emu.add_server("second", "127.0.0.2")["uuid"]
    box = make_sandbox(tmp_path, emu)
    port = free_port()
    servers = "  servers:\n    - {name: localhost, max_stacks: 5}\n    - {name: second, max_stacks: 5}\n"
    box.write_env_text(coolify_env(dict(test_images), timeout=90,
                                   extra=servers + f"variables:\n  db_public_port: {port}\n"))
    result = box.cli("provision", "--json", "--show-secrets", timeout=300).json()["projects"][0]
    db_url, api_url = result["db_url"], result["api_url"]
    sql(db_url, "create table items (id int primary key)")
    sql(db_url, "insert into items select generate_series(1, 7)")
    sql(db_url, "grant select on items to anon")  # opened to anonymous reads on purpose (docs/security.md)
    reload_schema(db_url, api_url, "items", proxy=emu.proxy_url)
    assert box.cli("status", "--json").json()["projects"][0]["server"] == "localhost"

    # the target cannot take it: nothing is lost, the project runs where it was
    emu.set_server(second, is_reachable=False)
    failed = box.cli("move", "--project=shop", "--to-server=second", "--yes", check=False, timeout=600)
    assert failed.returncode == 1 and "second cannot take 'shop': unreachable" in failed.stderr
    assert "is back where it was (localhost)" in failed.stderr
    assert [s["name"] for s in emu.find_services()] == ["shop"]
    assert sql(db_url, "select count(*) from items") == [(7,)]

    emu.set_server(second, is_reachable=True)
    moved = box.cli("move", "--project=shop", "--to-server=second", "--yes", "--json", timeout=600).json()
    assert moved["details"]["row_counts"] == {"public.items": 7} and moved["details"]["to_server"] == "second"
    services = {s["name"]: s for s in emu.find_services()}
    assert services["shop"]["server_uuid"] == second
    aside = moved["details"]["set_aside"]
    assert aside.startswith("shop-moved-") and not services[aside]["status"].startswith("running")
    assert sql(db_url, "select count(*) from items") == [(7,)]  # same secrets, same published port
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": emu.proxy_url}))
    outputs = box.cli("outputs", "--project=shop", "--format=json", "--show-secrets").json()
    new_api = outputs["api_url"]
    assert f"@127.0.0.2:{port}/" in outputs["db_url"] and f"@127.0.0.1:{port}/" in db_url
    assert sql(outputs["db_url"], "select count(*) from items") == [(7,)]
    with opener.open(new_api + "/items", timeout=10) as response:
        assert len(json.loads(response.read())) == 7
    [status] = box.cli("status", "--json").json()["projects"]
    assert status["server"] == "second" and status["status"] == "running"
    assert "already on server second" in box.cli("move", "--project=shop", "--to-server=second", "--yes").stdout

    finalized = box.cli("move", "--project=shop", "--finalize", "--yes", "--json", timeout=300).json()
    assert finalized["details"]["deleted"] == [aside]
    assert [s["name"] for s in emu.find_services()] == ["shop"]
