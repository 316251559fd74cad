"""The in-process CLI (Sandbox(in_process=True)) prints, and exits, as the subprocess it stands for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.coolify.conftest import TOKEN, make_sandbox
from tests.coolify_emulator import REALISTIC, CoolifyEmulator
from tests.sandbox import CLIResult, Sandbox

# what differs between two runs whatever runs them: ids Coolify makes, ports, clocks, durations
_VOLATILE = [
    (re.compile(r"[a-z][a-z0-9]{23}\b"), "<uuid>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?"), "<time>"),
    (re.compile(r"\b\d\d:\d\d:\d\d\b"), "<clock>"),
    (re.compile(r'("duration_s": |duration_s=|in )\d+(\.\d+)?'), r"\1<s>"),
    (re.compile(r"\b\d+(\.\d+)?s\b"), "<s>"),
    (re.compile(r"\b\d+\.\d+\b"), "<n>"),
    (re.compile(r" {2,}"), "  "),  # a table's columns are as wide as the widest cell (a duration)
    (re.compile(r"(sslip\.io|\.local)[^\s\"]*"), r"\1<host>"),
]


def _normal(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def _same(first: CLIResult, second: CLIResult) -> None:
    assert (first.returncode, _normal(first.stdout), _normal(first.stderr)) == \
        (second.returncode, _normal(second.stdout), _normal(second.stderr))


def _pair(tmp_path: Path, first: CoolifyEmulator, second: CoolifyEmulator) -> tuple[Sandbox, Sandbox]:
    inside = make_sandbox(tmp_path / "in", first)
    outside = make_sandbox(tmp_path / "out", second, env=inside.env, subprocess=True)
    inside.in_process, inside.clock = True, first.core.clock
    return inside, outside


@pytest.mark.parametrize("args", [("provision", "--help"), ("provision", "--bogus"), ("status", "--project", "nope"),
                                  ("list",)])
def test_in_process_output_is_the_subprocess_output(tmp_path: Path, args: tuple[str, ...]) -> None:
    with CoolifyEmulator(token=TOKEN) as first, CoolifyEmulator(token=TOKEN) as second:
        inside, outside = _pair(tmp_path, first, second)
        _same(inside.cli(*args, check=False), outside.cli(*args, check=False))


def test_in_process_provision_json_is_the_subprocess_one(tmp_path: Path) -> None:
    with CoolifyEmulator(token=TOKEN, **REALISTIC) as first, CoolifyEmulator(token=TOKEN, **REALISTIC) as second:
        inside, outside = _pair(tmp_path, first, second)
        made_inside, made_outside = inside.cli("provision", "--json"), outside.cli("provision", "--json")
        assert made_inside.json()["projects"][0]["action"] == "create"
        _same(made_inside, made_outside)
        _same(inside.cli("provision", "--json"), outside.cli("provision", "--json"))
