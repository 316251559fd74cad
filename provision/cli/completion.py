"""Shell completion of flag values (`--env`, `--project`, `--service`, ...), on top of Invoke's completion of
task names and flags. Reads only file names and the env files' `projects:` lists, never a backend, and
never fails: a completion that cannot be worked out offers nothing."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import yaml

from ..core.config import available_envs
from ..state.records import StateStore, default_state_dir

ENV_FLAGS = ("--env", "-e", "--to-env")
PROJECT_FLAGS = ("--project", "-p", "--to")
FIXED_VALUES = {"--service": ("db", "api"), "--format": ("env", "json"), "--via": ("auto", "host", "container"),
                "--backend": ("local", "coolify")}


def flag_values(invocation: str, root: Callable[[], Path]) -> list[str] | None:
    """The candidates for the flag value being typed at the end of `invocation` (the words typed so far,
    program name first, as the shell hands them over), or None when no flag value is being typed (Invoke
    then completes task names and flags). `root`: the project directory (may raise: nothing is offered)."""
    try:
        words = shlex.split(invocation)
    except ValueError:
        words = invocation.split()
    words = [w for w in words[1:] if w != "="]  # bash splits --env=dev into --env, =, dev
    if not words:
        return None
    last = words[-1]
    if last.startswith("-") and "=" in last:  # --env=st (zsh keeps the word whole)
        flag, _, partial = last.partition("=")
        values = _values(flag, words, root)
        return None if values is None else [f"{flag}={v}" for v in values if v.startswith(partial)]
    if last.startswith("-"):
        return _values(last, words, root)
    if len(words) >= 2 and words[-2].startswith("-"):
        values = _values(words[-2], words, root)
        return None if values is None else [v for v in values if v.startswith(last)]
    return None


def _values(flag: str, words: list[str], root: Callable[[], Path]) -> list[str] | None:
    if flag in FIXED_VALUES:
        return list(FIXED_VALUES[flag])
    if flag not in ENV_FLAGS and flag not in PROJECT_FLAGS:
        return None
    try:
        directory = root()
        if flag in ENV_FLAGS:
            return available_envs(directory)
        return _projects(directory, _env_of(words))
    except Exception:  # noqa: BLE001 - completion offers nothing rather than a traceback in the shell
        return []


def _env_of(words: list[str]) -> str | None:
    for i, word in enumerate(words):
        if word in ("--env", "-e") and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--env="):
            return word.partition("=")[2]
    return None


def _projects(root: Path, env: str | None) -> list[str]:
    """Declared projects of the env (of every env when none is typed yet), then recorded ones."""
    envs = [env] if env else available_envs(root)
    found: list[str] = []
    for name in envs:
        path = root / "envs" / f"{name}.yml"
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        entries = data.get("projects") if isinstance(data, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            project = entry.get("name") if isinstance(entry, dict) else entry
            if isinstance(project, str) and project not in found:
                found.append(project)
    for _, project in StateStore(default_state_dir(root)).known_projects(env):
        if project not in found:
            found.append(project)
    return found
