"""The rendered stack's Compose check runs through the Runner seam (interrupts, timeouts, fakes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from provision import compose_check
from provision.errors import BackendUnavailable, CommandFailed, TemplateError
from tests.unit.fakes import FakeRunner

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
