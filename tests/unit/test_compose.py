from __future__ import annotations

from pathlib import Path

import pytest

from provision.compose import ComposeCLI, ComposeFiles, parse_labels, parse_ps
from provision.errors import BackendUnavailable, CommandFailed
from tests.unit.fakes import FakeRunner

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "compose"
FILES = ComposeFiles("shop_dev", Path("/state/dev/shop/docker-compose.yml"), Path("/state/dev/shop/secrets.env"))


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("ps-*")))
def test_parse_recorded_ps_output(fixture: str) -> None:
    containers = parse_ps((FIXTURES / fixture).read_text())
    assert [c.service for c in containers] == ["api", "db"]
    db = containers[1]
    assert db.state == "running" and db.health == "healthy" and db.ready
    assert db.labels["io.provision.project"] == "shop"
    assert len(db.labels["io.provision.config-hash"]) == 16
    assert any(p.published_port and p.target_port == 5432 for p in db.publishers)
    assert containers[0].health == ""


def test_parse_ps_handles_empty_output_and_stopped_containers() -> None:
    assert parse_ps("") == []
    [c] = parse_ps('{"Name":"x","Service":"db","State":"exited","Health":"","ExitCode":137,"Labels":""}\n')
    assert not c.running and c.exit_code == 137


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
    ComposeCLI(runner, environ={"DB_PASSWORD": "shell-value", "PATH": "/bin"}, hidden_env=["DB_PASSWORD"]).ps(FILES)
    assert runner.envs[0] == {"PATH": "/bin"}


def test_engine_down_is_a_clear_backend_error() -> None:
    runner = FakeRunner().on("ps", returncode=1, stderr=(
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n"))
    with pytest.raises(BackendUnavailable, match="Docker Engine is not reachable: start dockerd"):
        ComposeCLI(runner, environ={}).ps(FILES)


def test_missing_plugin_falls_back_to_a_v2_standalone_binary() -> None:
    runner = (FakeRunner()
              .on("docker", "compose", returncode=1, stderr="docker: 'compose' is not a docker command.\n")
              .on("docker-compose", "version", stdout="2.20.2\n")
              .on("docker-compose", "--project-name", stdout=""))
    ComposeCLI(runner, environ={}).ps(FILES)
    assert runner.calls[-1][0] == "docker-compose"


def test_compose_v1_is_refused() -> None:
    runner = (FakeRunner()
              .on("docker", "compose", returncode=1, stderr="docker: 'compose' is not a docker command.\n")
              .on("docker-compose", "version", stdout="1.29.2\n"))
    with pytest.raises(BackendUnavailable, match="Compose v1, which is not supported"):
        ComposeCLI(runner, environ={}).ps(FILES)


def test_no_compose_at_all() -> None:
    runner = (FakeRunner()
              .on("docker", "compose", returncode=1, stderr="docker: 'compose' is not a docker command.\n")
              .on("docker-compose", "version", returncode=127, stderr="not found"))
    with pytest.raises(BackendUnavailable, match="Compose v2 was not found"):
        ComposeCLI(runner, environ={}).ps(FILES)


def test_failure_carries_argv_exit_code_and_redacted_stderr_tail() -> None:
    runner = FakeRunner().on("up", returncode=1, stderr="line\n" * 50 + "password pw-SECRET failed\n")
    cli = ComposeCLI(runner, environ={}).with_secrets(["pw-SECRET"])
    with pytest.raises(CommandFailed) as info:
        cli.run(FILES, "up", timeout=5)
    exc = info.value
    assert exc.returncode == 1 and exc.argv[-1] == "up"
    assert "pw-SECRET" not in str(exc) and "password *** failed" in str(exc)
    assert len(exc.stderr_tail.splitlines()) == 20


def test_port_conflict_gets_a_hint() -> None:
    runner = FakeRunner().on("up", returncode=1, stderr="Bind for 127.0.0.1:20000 failed: port is already allocated\n")
    with pytest.raises(CommandFailed, match="taken by another process"):
        ComposeCLI(runner, environ={}).run(FILES, "up", timeout=5)
