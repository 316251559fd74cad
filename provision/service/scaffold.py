"""`init`: make a directory a provision project, or complete one, without overwriting anything.

It writes what is missing (an env file, an example secrets file, .gitignore entries, example hooks) and gives
every env file that lacks one the repository's owner id: the one an env file already carries, else a new one.
Run twice, the second run changes nothing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.envfile import OWNER_PATTERN, new_owner_id
from ..core.errors import ConfigError
from ..core.names import validate_env_name
from ..infra import hints

# `owner: <id>`, quoted or not, with or without a trailing `# comment` (YAML: a `#` after whitespace)
_OWNER_LINE = re.compile(r"^owner:[ \t]*([^\s#]\S*)(?:[ \t]+#[^\n]*)?[ \t\r]*$", re.MULTILINE)
HOOKS_MODE = 0o700  # hooks run with the operator's rights and get the real db_url: only the owner writes them
ENVS_MODE = 0o755
FILE_MODE = 0o644
GITIGNORE_ENTRIES = (".env", "envs/*.env", "!envs/*.env.example", ".provision/")

_ENV_FILE = """\
# The {env} environment. {command} reads this file; secrets go in envs/{env}.env (git-ignored).
# The owner id marks what this repository creates on a shared server: keep it, and keep it in every env file.
owner: {owner}
backend: {backend}
images:
  db: postgres:16-alpine
  api: postgrest/postgrest:v12.2.3
projects:
  - name: demo
health:
  timeout: 120
{backend_section}"""

_LOCAL_SECTION = """\
local:
  bind_address: 127.0.0.1
"""

_COOLIFY_SECTION = """\
coolify:
  server: ""               # a server uuid or name; may stay empty when Coolify has exactly one usable server
"""

_SECRETS_EXAMPLE = {
    "local": "# Copy to envs/{env}.env (git-ignored). The local backend needs no secrets; a hook may.\n",
    "coolify": ("# Copy to envs/{env}.env (git-ignored). The token needs read, write, deploy and read:sensitive.\n"
                "COOLIFY_API_URL=https://coolify.example.com/api/v1\nCOOLIFY_API_TOKEN=\n"),
}

_HOOK_EXAMPLE = """\
#!/bin/sh
# Rename to hooks/post-provision (and keep it executable) to run it after each project is provisioned.
# PROVISION_ENV, PROVISION_PROJECT, PROVISION_BACKEND, PROVISION_ACTION, PROVISION_API_URL and
# PROVISION_DB_URL are set, and of your environment only PATH, HOME, LANG, LC_*, TZ and TMPDIR;
# this is where migrations run. Output goes to stderr (secrets masked); a non-zero exit marks the project failed.
set -eu
echo "provisioned $PROVISION_PROJECT in $PROVISION_ENV: $PROVISION_API_URL" >&2
"""


@dataclass(frozen=True)
class InitResult:
    """What `init` did, one line per file written or changed; `changed` is false when there was nothing to do.
    `owner` is the id given to new or unowned env files (empty when none needed one)."""

    root: Path
    owner: str
    actions: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def init(root: Path, *, env: str = "dev", backend: str = "local") -> InitResult:
    """Complete `root` as a provision project; never overwrites a file, only appends to .gitignore and
    inserts a missing `owner:` line at the top of an env file."""
    validate_env_name(env)
    if backend not in _SECRETS_EXAMPLE:
        raise ConfigError(f"--backend {backend!r}: use one of {', '.join(sorted(_SECRETS_EXAMPLE))}")
    envs = root / "envs"
    if envs.exists() and not envs.is_dir():
        raise ConfigError(f"{envs}: exists and is not a directory: move it away and run init again")
    existing = sorted(envs.glob("*.yml")) if envs.is_dir() else []
    unowned = [p for p in existing if _OWNER_LINE.search(p.read_text(encoding="utf-8")) is None]
    env_file = envs / f"{env}.yml"
    needs_owner = bool(unowned) or not env_file.exists()
    owner = (_repository_owner(existing) or new_owner_id()) if needs_owner else ""
    actions: list[str] = []
    _make_dir(envs, ENVS_MODE)

    for path in unowned:
        path.write_text(f"owner: {owner}\n{path.read_text(encoding='utf-8')}", encoding="utf-8")
        actions.append(f"envs/{path.name}: added owner: {owner}")

    if not env_file.exists():
        section = _LOCAL_SECTION if backend == "local" else _COOLIFY_SECTION
        _write_new(env_file, _ENV_FILE.format(env=env, command=hints.command("provision", env=env), owner=owner,
                                              backend=backend, backend_section=section))
        actions.append(f"envs/{env}.yml: created ({backend} backend, one project: demo)")
    example = envs / f"{env}.env.example"
    if not example.exists():
        _write_new(example, _SECRETS_EXAMPLE[backend].format(env=env))
        actions.append(f"envs/{env}.env.example: created")

    gitignore = root / ".gitignore"
    present = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.is_file() else []
    missing = [entry for entry in GITIGNORE_ENTRIES if entry not in present]
    if missing:
        lead = "\n" if present and present[-1].strip() else ""
        with gitignore.open("a", encoding="utf-8") as handle:
            handle.write(lead + "# provision: secrets and local state\n" + "\n".join(missing) + "\n")
        actions.append(f".gitignore: added {', '.join(missing)}")

    hooks = root / "hooks"
    if not hooks.exists():
        _make_dir(hooks, HOOKS_MODE)
        _write_new(hooks / "post-provision.example", _HOOK_EXAMPLE, mode=0o700)
        actions.append("hooks/post-provision.example: created (rename it to use it)")
    return InitResult(root, owner, tuple(actions))


def _make_dir(path: Path, mode: int) -> None:
    """`path` made with exactly `mode` whatever the umask (a umask of 000 would leave it world-writable); a
    directory that exists is left as it is."""
    if not path.is_dir():
        path.mkdir(parents=True, mode=mode)
        path.chmod(mode)


def _write_new(path: Path, text: str, *, mode: int = FILE_MODE) -> None:
    """A new file (never an existing one) with exactly `mode` whatever the umask."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(text)


def _repository_owner(env_files: list[Path]) -> str | None:
    """The owner id the env files already carry; when they carry several, which one a new or unowned env
    file should get is the user's choice."""
    owners = {}
    for path in env_files:
        found = _OWNER_LINE.search(path.read_text(encoding="utf-8"))
        if found:
            owners[path.name] = found.group(1).strip("'\"")
    distinct = sorted(set(owners.values()))
    if len(distinct) > 1:
        listed = ", ".join(f"envs/{name}: {value}" for name, value in sorted(owners.items()))
        raise ConfigError(f"the env files carry different owner ids ({listed}): add an owner: line to each env "
                          f"file without one by hand (the id of the repository whose resources it manages)")
    if distinct and re.fullmatch(OWNER_PATTERN, distinct[0]) is None:
        raise ConfigError(f"owner: {distinct[0]!r} is not a valid owner id (6-40 lowercase letters, digits, hyphens)")
    return distinct[0] if distinct else None
