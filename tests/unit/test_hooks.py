"""Hooks run with a minimal, documented environment and their output is printed with secrets masked."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from provision.core.model import db_url
from provision.core.secrets import Secret
from provision.infra.hooks import Hooks, hook_environment, hook_variables

PASSWORD = "p@ss#w/rd 1"


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def banner(self, text: str) -> None:
        self.lines.append(text)

    def step(self, project: str, text: str) -> None:
        self.lines.append(text)

    def warn(self, text: str) -> None:
        self.lines.append(text)


def hook(root: Path, body: str) -> Hooks:
    directory = root / "hooks"
    directory.mkdir()
    path = directory / "post-provision"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return Hooks(directory)


def variables() -> dict[str, str]:
    url = db_url("app", Secret(PASSWORD), "127.0.0.1", 5432, "app").reveal()
    return hook_variables(env="dev", project="shop", backend="local", action="provision",
                          api_url="http://127.0.0.1:1", db_url=url)


def test_a_hook_gets_only_the_documented_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"PROVISION_API_TOKEN": "api-token-123", "COOLIFY_API_TOKEN": "coolify-456",
                       "AWS_SECRET_ACCESS_KEY": "aws-789", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
                       "TMPDIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "env.txt"
    hooks = hook(tmp_path, f"exec env > {out}\n")
    assert hooks.run("post-provision", variables(), reporter=Recorder(), project="shop")
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert set(seen) - {"PWD", "SHLVL", "_"} <= {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", *variables()}
    assert {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", *variables()} <= set(seen)
    assert seen["PROVISION_DB_URL"] == variables()["PROVISION_DB_URL"] and seen["TZ"] == "UTC"
    assert "api-token-123" not in json.dumps(seen) and "coolify-456" not in json.dumps(seen)


def test_hook_environment_keeps_path_home_locale_tz_tmpdir_and_the_variables() -> None:
    environ = {"PATH": "/bin", "HOME": "/h", "LANG": "C", "LC_CTYPE": "C", "TZ": "UTC", "TMPDIR": "/t",
               "PROVISION_API_TOKEN": "x", "DB_PASSWORD": "y", "DOCKER_HOST": "z"}
    assert hook_environment({"PROVISION_ENV": "dev"}, environ) == {
        "PATH": "/bin", "HOME": "/h", "LANG": "C", "LC_CTYPE": "C", "TZ": "UTC", "TMPDIR": "/t", "PROVISION_ENV": "dev"}
    assert "PATH" in hook_environment({}, {})


def test_hook_output_is_printed_with_the_password_and_secrets_masked(tmp_path: Path) -> None:
    hooks = hook(tmp_path, 'echo "url=$PROVISION_DB_URL"\n'
                           f'{sys.executable} -c "import os, urllib.parse as u; print(\'pw=\' + '
                           'u.unquote(u.urlsplit(os.environ[\'PROVISION_DB_URL\']).password))"\n'
                           'echo "jwt=jwt-secret-0123456789"\n')
    recorder = Recorder()
    hooks.run("post-provision", variables(), reporter=recorder, project="shop", secrets=["jwt-secret-0123456789"])
    printed = "\n".join(recorder.lines)
    assert "post-provision: url=postgresql://app:***@127.0.0.1:5432/app" in printed
    assert "post-provision: pw=***" in printed and "post-provision: jwt=***" in printed
    assert PASSWORD not in printed and "p%40ss" not in printed and "jwt-secret" not in printed
