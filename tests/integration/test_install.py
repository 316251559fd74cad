"""The built wheel installs into a fresh virtualenv, and its `provision` command makes a project from nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Mapping
from pathlib import Path

from tests.conftest import REPO, cleanup_env, leftovers


def _run(argv: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result


def test_the_wheel_installs_and_its_command_provisions_from_an_empty_directory(
        tmp_path: Path, test_images: Mapping[str, str]) -> None:
    # the wheel, built offline with the test virtualenv's setuptools
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--wheel-dir", str(tmp_path / "dist"), str(REPO)], tmp_path)
    [wheel] = (tmp_path / "dist").glob("provision-*.whl")
    # a fresh virtualenv; its dependencies come from the test virtualenv's site-packages (no network here),
    # added as a plain path, so the test virtualenv's editable install of provision is not seen
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)], tmp_path)
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip()
    (Path(site) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    located = _run([str(python), "-c", "import provision, pathlib; print(pathlib.Path(provision.__file__))"], tmp_path)
    assert located.stdout.strip().startswith(str(venv)), located.stdout  # the wheel's code, not the checkout's

    command = str(venv / "bin" / "provision")
    project = tmp_path / "empty"
    project.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("COOLIFY_", "PROVISION_"))}
    env = "it-" + uuid.uuid4().hex[:8]
    try:
        assert "provision " in _run([command, "--version"], project, environ).stdout
        _run([command, "init", f"--env={env}"], project, environ)
        env_file = project / "envs" / f"{env}.yml"
        env_file.write_text(env_file.read_text().replace("postgres:16-alpine", test_images["db"])
                            .replace("postgrest/postgrest:v12.2.3", test_images["api"]))
        assert not (project / "templates").exists()  # the template ships in the wheel
        _run([command, "provision", f"--env={env}"], project, environ)
        subdir = project / "hooks"  # found upward, like git finds .git
        urls = json.loads(_run([command, "outputs", f"--env={env}", "--project=demo", "--format=json"],
                               subdir, environ).stdout)
        assert urls["api_url"].startswith("http://127.0.0.1:") and "***" not in urls["db_url"]
        python_m = _run([str(python), "-m", "provision", "status", f"--env={env}", "--json"], project, environ)
        assert json.loads(python_m.stdout)["projects"][0]["status"] == "running"
        _run([command, "destroy", f"--env={env}", "--project=demo", "--delete-data", "--yes", "--no-backup"],
             project, environ)
        assert leftovers(env) == []
    finally:
        cleanup_env(env)
