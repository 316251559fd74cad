"""The rendered stack's Compose check runs through the Runner seam (interrupts, timeouts, fakes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from provision.backends.local import LocalBackend
from provision.backends.local.compose import ComposeCLI
from provision.core.config import load_env
from provision.core.errors import BackendUnavailable, CommandFailed, TemplateError
from provision.infra import compose_check
from provision.service import Provisioner
from provision.state.layout import BackendFiles
from provision.state.records import StateStore
from tests.conftest import write_env
from tests.unit.fakes import FakeRunner, MemoryBackend

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="the check runs only where docker is")


def test_a_misspelt_key_is_named_with_its_template_line(tmp_path: Path) -> None:
    template = tmp_path / "stack.yml.j2"
    template.write_text("services:\n  db:\n    restartt: always\n")
    runner = FakeRunner().on("config", returncode=1,
                             stderr="validating /tmp/x/docker-compose.yml: services.db additional property restartt "
                                    "is not allowed")
    with pytest.raises(TemplateError, match=r"stack.yml.j2:3: the rendered stack is not valid Compose"):
        compose_check.check("services: {}\n", template=template, runner=runner)
    assert runner.calls[0][1:3] == ("compose", "--project-name")


def test_a_valid_file_passes_and_a_timeout_says_so(tmp_path: Path) -> None:
    compose_check.check("services: {}\n", template=tmp_path / "t", runner=FakeRunner().on("config"))

    class Slow(FakeRunner):
        def run(self, argv, *, timeout, env=None, stdout=None, stdin=None):  # type: ignore[no-untyped-def]
            raise CommandFailed(argv, -1, "", hint=f"timed out after {timeout:g} s")

    with pytest.raises(BackendUnavailable, match="did not answer in 5 s"):
        compose_check.check("services: {}\n", template=tmp_path / "t", timeout=5, runner=Slow())


def test_a_local_new_projects_bad_template_is_refused_before_its_images_through_the_backends_runner(
        project_root: Path, tmp_path: Path) -> None:
    write_env(project_root, "dev", "images: {db: postgres:16, api: postgrest/postgrest:v12.2.3}\nprojects: [{name: shop}]\n")
    config = load_env("dev", project_root, environ={})
    store = StateStore(tmp_path / "state")
    runner = FakeRunner().on("config", returncode=1, stderr="services.db additional property restartt is not allowed")
    local = LocalBackend(BackendFiles(store.layout), ComposeCLI(runner, environ={}))
    with pytest.raises(TemplateError, match="the rendered stack is not valid Compose"):
        Provisioner(config, local, store).provision("shop")
    assert [call[2:4] for call in runner.calls] == [("--project-name", "provision-check")]  # no image asked for
    assert not store.paths("dev", "shop").dir.exists()


def test_a_backend_without_the_check_never_runs_docker_compose_config(project_root: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A Coolify env (here: the memory backend, which has no ChecksTemplate) parses the compose on its side."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("docker compose config ran")

    monkeypatch.setattr(compose_check, "check", refuse)
    write_env(project_root, "dev", "images: {db: postgres:16, api: postgrest/postgrest:v12.2.3}\nprojects: [{name: shop}]\n")
    provisioner = Provisioner(load_env("dev", project_root, environ={}), MemoryBackend(), StateStore(tmp_path / "state"))
    assert provisioner.provision("shop").changed  # a new project (preflight), then its create (converge)
    assert provisioner.provision_many(["shop"]).results[0].action == "no-op"
