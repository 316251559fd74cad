from __future__ import annotations

from pathlib import Path

import pytest

from provision.backends.local.compose import ComposeCLI, ComposeFiles, parse_docker_ps, parse_labels
from provision.core.errors import BackendUnavailable, CommandFailed
from tests.unit.fakes import FakeRunner

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FILES = ComposeFiles("shop_dev", Path("/state/dev/shop/docker-compose.yml"), Path("/state/dev/shop/secrets.env"))


def test_parse_recorded_docker_ps_of_a_running_stack() -> None:
    containers = parse_docker_ps((FIXTURES / "docker" / "ps-running-20.10.24.jsonl").read_text())
    assert [c.service for c in containers] == ["api", "db"]
    api, db = containers
    assert db.state == "running" and db.health == "healthy" and db.ready
    assert api.state == "running" and api.health == "" and api.ready
    assert db.labels["io.provision.project"] == "shop" and db.labels["io.provision.env"] == "demo"
    assert len(db.labels["io.provision.config-hash"]) == 16
    assert len(db.labels["com.docker.compose.config-hash"]) == 64
    assert db.name == "shop_demo-db-1"


def test_parse_recorded_docker_ps_of_a_stopped_stack() -> None:
    containers = parse_docker_ps((FIXTURES / "docker" / "ps-stopped-20.10.24.jsonl").read_text())
    assert {c.state for c in containers} == {"exited"}
    assert not any(c.running or c.ready for c in containers)


def test_parse_docker_ps_handles_empty_output_and_exit_codes() -> None:
    assert parse_docker_ps("") == []
    [c] = parse_docker_ps('{"Names":"x","State":"exited","Status":"Exited (137) 2 minutes ago",'
                          '"Labels":"com.docker.compose.service=db"}\n')
    assert c.service == "db" and not c.running and c.exit_code == 137
    [c] = parse_docker_ps('{"Names":"x","State":"running","Status":"Up 1 second (health: starting)","Labels":""}')
    assert c.health == "starting" and c.ready  # not yet judged: provision's own probes decide
    [c] = parse_docker_ps('{"Names":"x","State":"running","Status":"Up 2 minutes (unhealthy)","Labels":""}')
    assert c.health == "unhealthy" and c.running and not c.ready


def test_volume_listing_maps_projects_to_volumes() -> None:
    runner = FakeRunner().on("volume", "ls", stdout=(FIXTURES / "docker" / "volume-ls-20.10.24.jsonl").read_text())
    assert ComposeCLI(runner, environ={}).volumes("io.provision.env=demo") == {"shop": "shop_demo_pgdata"}


def test_labels_string_and_dict() -> None:
    assert parse_labels("a=1,b=x=y") == {"a": "1", "b": "x=y"}
    assert parse_labels({"a": 1}) == {"a": "1"}


def test_argv_is_a_list_with_project_file_and_env_file() -> None:
    runner = FakeRunner().on("up", stdout="")
    ComposeCLI(runner, environ={}).run(FILES, "up", "--detach", timeout=5)
    assert runner.calls == [("docker", "compose", "--project-name", "shop_dev", "--file", str(FILES.compose_file),
                             "--env-file", str(FILES.env_file), "up", "--detach")]


def test_secret_names_are_hidden_from_the_subprocess_environment() -> None:
    runner = FakeRunner().on("ps")
    ComposeCLI(runner, environ={"DB_PASSWORD": "shell-value", "PATH": "/bin"}, hidden_env=["DB_PASSWORD"]).containers("a=b")
    assert runner.envs[0] == {"PATH": "/bin"}


def test_engine_down_is_a_clear_backend_error() -> None:
    stderr = (FIXTURES / "compose" / "engine-down-2.26.1.stderr").read_text()
    for call in (lambda cli: cli.containers("a=b"), lambda cli: cli.run(FILES, "up", timeout=5)):
        runner = FakeRunner().on("ps", returncode=1, stderr=stderr).on("up", returncode=1, stderr=stderr)
        with pytest.raises(BackendUnavailable, match="Docker Engine is not reachable: start dockerd"):
            call(ComposeCLI(runner, environ={}))


def test_missing_plugin_falls_back_to_a_v2_standalone_binary() -> None:
    runner = (FakeRunner()
              .on("docker", "compose", returncode=1, stderr="docker: 'compose' is not a docker command.\n")
              .on("docker-compose", "version", stdout="2.20.2\n")
              .on("docker-compose", "--project-name", stdout=""))
    ComposeCLI(runner, environ={}).run(FILES, "stop", timeout=5)
    assert runner.calls[-1][0] == "docker-compose"


def test_compose_v1_is_refused() -> None:
    runner = (FakeRunner()
              .on("docker", "compose", returncode=1, stderr="docker: 'compose' is not a docker command.\n")
              .on("docker-compose", "version", stdout="1.29.2\n"))
    with pytest.raises(BackendUnavailable, match="Compose v1, which is not supported"):
        ComposeCLI(runner, environ={}).run(FILES, "stop", timeout=5)


def test_no_compose_at_all() -> None:
    runner = (FakeRunner()
              .on("docker", "compose", returncode=1, stderr="docker: 'compose' is not a docker command.\n")
              .on("docker-compose", "version", returncode=127, stderr="not found"))
    with pytest.raises(BackendUnavailable, match="Compose v2 was not found"):
        ComposeCLI(runner, environ={}).run(FILES, "stop", timeout=5)


def test_failure_carries_argv_exit_code_and_redacted_stderr_tail() -> None:
    runner = FakeRunner().on("up", returncode=1, stderr="line\n" * 50 + "password pw-SECRET failed\n")
    cli = ComposeCLI(runner, environ={}).with_secrets(["pw-SECRET"])
    with pytest.raises(CommandFailed) as info:
        cli.run(FILES, "up", timeout=5)
    exc = info.value
    assert exc.returncode == 1 and exc.argv[-1] == "up"
    assert "pw-SECRET" not in str(exc) and "password *** failed" in str(exc)
    assert len(exc.stderr_tail.splitlines()) == 20


@pytest.mark.parametrize(("fixture", "hint"), [
    ("up-port-taken-2.26.1.stderr", "taken by another process"),
    ("up-no-address-pool-2.26.1.stderr", "set local.network_pool"),
])
def test_recorded_up_failures_get_a_hint(fixture: str, hint: str) -> None:
    runner = FakeRunner().on("up", returncode=1, stderr=(FIXTURES / "compose" / fixture).read_text())
    with pytest.raises(CommandFailed, match=hint):
        ComposeCLI(runner, environ={}).run(FILES, "up", timeout=5)


def test_the_sdk_sparse_attrs_read_like_docker_ps() -> None:
    from provision.backends.local.compose import container_state

    attrs = {"Names": ["/shop_demo-db-1"], "State": "running", "Status": "Up 4 seconds (healthy)",
             "Labels": {"com.docker.compose.service": "db", "io.provision.project": "shop"}}
    db = container_state(attrs)
    assert (db.name, db.service, db.state, db.health, db.ready) == ("shop_demo-db-1", "db", "running", "healthy", True)
    assert container_state({"Names": ["/x"], "State": "exited", "Status": "Exited (1) 3 seconds ago"}).exit_code == 1
