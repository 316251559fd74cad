"""Load and validate `envs/<env>.yml` plus secrets from the environment and dotenv files.

Everything is checked on load; a problem raises ConfigError naming the file, the key
path (``projects[2].name``) and what to do. Nothing here touches Docker or the network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import ValidationError

from ..infra import hints
from . import names
from .archiving import DEFAULT_BACKUP, OFFSITE_SECRETS, BackupSettings, backup_settings, offsite_missing
from .envfile import (
    DEFAULT_TEMPLATE,
    DEFAULT_VARIABLES,
    PACKAGED_TEMPLATE,
    BackendName,
    BranchSettings,
    CoolifySettings,
    EnvFile,
    Health,
    ImageOverrides,
    Images,
    LocalSettings,
    ProjectDecl,
    Scalar,
    new_owner_id,
)
from .errors import ConfigError, InvalidName
from .resources import DEFAULTS as DEFAULT_LIMITS
from .resources import POSTGRES_SETTINGS, StackLimits
from .resources import limits as stack_limits
from .roles import check_names as check_role_names
from .secrets import Secret
from .templating import template_variables


@dataclass(frozen=True, slots=True)
class ProjectSpec:
    """One project in one env: its name, whether the env file declares it, and its template variables."""

    name: str
    env: str
    declared: bool
    variables: Mapping[str, str]
    limits: StackLimits = DEFAULT_LIMITS
    # the server a new stack goes to, decided by placement (or by `move`) before it is created; None: decide then
    server: str | None = None
    # the project's own images (the env's with `projects[i].images` laid over them); None: the env's
    images: Images | None = None
    # where the env file declares it (`projects[index]`), and which dotted keys it sets itself (`images.db`,
    # `resources.db.cpus`): what an error names as the key to change
    index: int | None = None
    own_keys: frozenset[str] = frozenset()
    # the `backup:` block (the env's, the project's own keys laid over it): continuous archiving
    backup: BackupSettings = DEFAULT_BACKUP

    def key(self, dotted: str) -> str:
        """The env file's key that sets `dotted` for this project: `projects[i].<dotted>` where the project sets
        it itself, else the env-level `<dotted>`."""
        return f"projects[{self.index}].{dotted}" if dotted in self.own_keys and self.index is not None else dotted

    @property
    def memory_limit(self) -> int:
        """What the stack's memory limits add up to (0 for a service without one): what placement counts."""
        return (self.limits.db.memory or 0) + (self.limits.api.memory or 0)


@dataclass(frozen=True, slots=True)
class CoolifyCredentials:
    api_url: str
    token: Secret

    def __repr__(self) -> str:
        return f"CoolifyCredentials(api_url={self.api_url!r}, token=***)"


@dataclass(frozen=True)
class EnvConfig:
    """A validated environment: what `envs/<env>.yml` declares plus the secrets found for it."""

    name: str
    root: Path
    path: Path
    backend: BackendName
    backend_auto: bool
    template_path: Path
    images: Images
    projects: tuple[ProjectSpec, ...]
    variables: Mapping[str, str]
    health: Health
    local: LocalSettings
    coolify: CoolifySettings
    coolify_credentials: CoolifyCredentials | None = field(default=None, repr=False)
    # marks what this repository's envs create on a shared server (Coolify): other checkouts' resources differ
    owner: str | None = None
    # `provision --project=P` may create a project the env file does not declare without --create
    allow_undeclared: bool = False
    # the env file's resources: (an undeclared project's limits)
    limits: StackLimits = DEFAULT_LIMITS
    # the env file's backup: (an undeclared project's)
    backup: BackupSettings = DEFAULT_BACKUP
    # backup.offsite's keys and passphrase (archiving.OFFSITE_SECRETS) found in the environment or envs/<env>.env
    backup_secrets: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    # `branches:` the lifetime and masking script a branch of this env gets by default (issue 23)
    branches: BranchSettings = field(default_factory=BranchSettings)

    @property
    def relpath(self) -> str:
        return _display(self.path, self.root)

    @property
    def min_project_name(self) -> int:
        """The shortest project name this env accepts: Coolify needs project names of 3 characters or more,
        counting `coolify.project_prefix`."""
        return coolify_min_project_name(self.coolify.project_prefix) if self.backend == "coolify" else 1

    def project(self, name: str) -> ProjectSpec:
        """The declared project `name`, or an undeclared one with env-level variables; name validated."""
        names.validate_name(name)
        if len(name) < self.min_project_name:
            raise InvalidName(
                f"project name {name!r} is too short for env {self.name!r}: Coolify project names need 3 characters "
                f"or more (with coolify.project_prefix {self.coolify.project_prefix!r}): use at least "
                f"{self.min_project_name} characters"
            )
        for spec in self.projects:
            if spec.name == name:
                return spec
        for spec in self.projects:
            if names.normalise(spec.name) == names.normalise(name):
                raise InvalidName(f"project name {name!r} collides with declared project {spec.name!r}")
        return ProjectSpec(name=name, env=self.name, declared=False, variables=self.variables, limits=self.limits,
                           backup=self.backup)


def available_envs(root: Path) -> list[str]:
    """Env names that have an `envs/<env>.yml` under `root`."""
    return sorted(p.stem for p in (root / "envs").glob("*.yml"))


def load_secrets_environment(env: str, root: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Process environment, then `envs/<env>.env`, then `.env`: earlier sources win, nothing is overridden."""
    merged: dict[str, str] = {}
    for path in (root / ".env", root / "envs" / f"{env}.env"):
        if path.is_file():
            merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def load_env(
    env: str,
    root: Path,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    offline: bool = False,
) -> EnvConfig:
    """Read, validate and resolve `envs/<env>.yml` under `root`.

    `overrides` maps dotted keys (``images.api``) to values applied on top of the file,
    like `--set`. `offline`: for a command that contacts no server (render), a Coolify env may lack its
    credentials. Raises ConfigError or InvalidName with the file and key at fault.
    """
    names.validate_env_name(env)
    path = root / "envs" / f"{env}.yml"
    shown = _display(path, root)
    if not path.is_file():
        known = ", ".join(available_envs(root)) or "none"
        raise ConfigError(f"{shown} not found: create it, or pick one of the envs that exist ({known})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{shown}:{where}: invalid YAML: {problem}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: the top level must be a mapping of keys such as 'images' and 'projects'")
    for dotted, value in (overrides or {}).items():
        _apply_override(raw, dotted, value, shown)
    try:
        parsed = EnvFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(shown, exc)) from exc

    template_path = (root / parsed.template).resolve()
    if not template_path.is_file() and parsed.template == DEFAULT_TEMPLATE:
        template_path = PACKAGED_TEMPLATE  # a project's own templates/ overrides the one provision ships
    if not template_path.is_file():
        raise ConfigError(f"{shown}: template: {parsed.template} not found (paths are relative to {root})")

    values = load_secrets_environment(env, root, environ)
    credentials = _coolify_credentials(values, shown, env)
    if parsed.backend is None:
        backend: BackendName = "coolify" if credentials is not None else "local"
    else:
        backend = parsed.backend
    if backend == "coolify" and credentials is None and not offline:
        raise ConfigError(
            f"{shown}: backend: coolify needs COOLIFY_API_URL and COOLIFY_API_TOKEN "
            f"in the environment or in envs/{env}.env (never in a committed file)"
        )

    if backend == "coolify":
        _check_coolify_names(env, parsed, shown)
        if parsed.owner is None:
            raise ConfigError(
                f"{shown}: owner: missing: a Coolify env needs an owner id, which marks the resources this "
                f"repository creates so that other checkouts' and teams' stacks on the same server are never "
                f"touched. Add this line to {shown} and commit it (every clone must use the same value), or "
                f"run {hints.command('init')}, which adds the repository's owner id to every env file without one:\n"
                f"owner: {new_owner_id()}"
            )

    _check_variables_used(parsed, template_path, shown)
    env_variables = {**DEFAULT_VARIABLES, **{k: _scalar(v) for k, v in parsed.variables.items()}}
    env_limits = _limits(shown, "resources", parsed.resources)
    env_backup = _backup(shown, parsed.backup, root=root)
    layers: list[tuple[str, Mapping[str, object]]] = [("variables", env_variables)]
    layers += [(f"projects[{i}].variables", {**env_variables, **p.variables}) for i, p in enumerate(parsed.projects)]
    for where, variables in layers:
        unsafe = check_role_names(variables)
        if unsafe is not None:
            raise ConfigError(f"{shown}: {where}: {unsafe}")
    projects = tuple(
        ProjectSpec(
            name=p.name,
            env=env,
            declared=True,
            variables={**env_variables, **{k: _scalar(v) for k, v in p.variables.items()}},
            limits=_limits(shown, f"projects[{i}].resources", parsed.resources, p.resources) if p.resources
            else env_limits,
            images=_project_images(parsed.images, p.images),
            index=i,
            own_keys=_own_keys(p),
            backup=_backup(shown, parsed.backup, p.backup, where=f"projects[{i}].backup", root=root) if p.backup else env_backup,
        )
        for i, p in enumerate(parsed.projects)
    )
    backup_secrets = {name: Secret(values[name].strip()) for name in OFFSITE_SECRETS if values.get(name, "").strip()}
    if not offline:
        _check_offsite_secrets(shown, env, [("backup", env_backup)] + [
            (f"projects[{i}].backup" if p.backup else "backup", spec.backup)
            for i, (p, spec) in enumerate(zip(parsed.projects, projects, strict=True))], backup_secrets)
    return EnvConfig(
        name=env,
        root=root,
        path=path,
        backend=backend,
        backend_auto=parsed.backend is None,
        template_path=template_path,
        images=parsed.images,
        projects=projects,
        variables=env_variables,
        health=parsed.health,
        local=parsed.local,
        coolify=parsed.coolify,
        coolify_credentials=credentials,
        owner=parsed.owner,
        allow_undeclared=parsed.allow_undeclared,
        limits=env_limits,
        backup=env_backup,
        backup_secrets=backup_secrets,
        branches=parsed.branches,
    )


def _check_offsite_secrets(shown: str, env: str, layers: Sequence[tuple[str, BackupSettings]],
                           found: Mapping[str, Secret]) -> None:
    """An offsite copy whose keys are missing is refused when the env file is loaded, naming them."""
    for where, settings in layers:
        missing = offsite_missing(settings, found)
        if missing:
            raise ConfigError(f"{shown}: {where}.offsite needs {' and '.join(missing)} in the environment or in "
                              f"envs/{env}.env (never in a committed file)")


# variables provision itself reads (db_url, pg_dump, the Coolify db port, PostgreSQL's settings), whatever the
# template uses
CODE_VARIABLES = frozenset({"db_user", "db_name", "db_public_port", "api_anon_role", "api_schemas",
                            *(f"pg_{k}" for k in POSTGRES_SETTINGS)})


def _project_images(env_images: Images, own: ImageOverrides | None) -> Images | None:
    """The env's images with a project's own laid over them; None when the project names none."""
    if own is None or (own.db is None and own.api is None):
        return None
    return Images(db=own.db or env_images.db, api=own.api or env_images.api)


def _own_keys(project: ProjectDecl) -> frozenset[str]:
    """The dotted keys (`images.db`, `resources.db.cpus`) a project declaration sets itself."""
    keys = {f"images.{name}" for name in ("db", "api") if project.images is not None and getattr(project.images, name)}
    for service, fields in project.resources.items():
        keys |= {f"resources.{service}.{name}" for name in (fields if isinstance(fields, dict) else {})}
    keys |= {f"backup.{name}" for name in project.backup}
    return frozenset(keys)


def _limits(shown: str, where: str, *layers: Mapping[str, Any]) -> StackLimits:
    try:
        return stack_limits(*layers)
    except ValueError as exc:
        raise ConfigError(f"{shown}: {where}.{exc}") from None


def _backup(shown: str, env: Mapping[str, Any], own: Mapping[str, Any] | None = None, *,
            where: str = "backup", root: Path) -> BackupSettings:
    try:
        return backup_settings(env, *([own] if own is not None else []), where=("backup", where), root=root)
    except ValueError as exc:
        raise ConfigError(f"{shown}: {exc}") from None


def _check_variables_used(parsed: EnvFile, template_path: Path, shown: str) -> None:
    """A variable that neither the template nor provision reads is a typo until shown otherwise."""
    used = template_variables(template_path)
    if used is None:
        return
    known = used | CODE_VARIABLES
    declared = [(f"variables.{k}", k) for k in parsed.variables]
    declared += [(f"projects[{i}].variables.{k}", k) for i, p in enumerate(parsed.projects) for k in p.variables]
    for where, key in declared:
        if key not in known:
            hint = names.did_you_mean(key, known)
            raise ConfigError(f"{shown}: {where}: the template {template_path.name} does not use {key!r}: {hint}"
                              f"it uses {', '.join(sorted(known))}")


# environment names that Coolify's routes shadow: GET /projects/{uuid}/envs and /projects/{uuid}/environments
COOLIFY_RESERVED_ENVS = ("envs", "environments")


def coolify_min_project_name(prefix: str) -> int:
    """Coolify needs project and environment names of 3 characters or more (ValidationPatterns.php)."""
    return max(1, 3 - len(prefix))


def _check_coolify_names(env: str, parsed: EnvFile, shown: str) -> None:
    """Names Coolify would refuse or misroute are refused when the env file is loaded."""
    if len(env) < 3 or env in COOLIFY_RESERVED_ENVS:
        why = "has fewer than 3 characters" if len(env) < 3 else "is shadowed by a Coolify API route"
        raise ConfigError(f"{shown}: env name {env!r} {why}: Coolify would refuse or misroute it; rename the file "
                          f"to an env name of 3 or more characters other than {' or '.join(COOLIFY_RESERVED_ENVS)}")
    shortest = coolify_min_project_name(parsed.coolify.project_prefix)
    for index, project in enumerate(parsed.projects):
        if len(project.name) < shortest:
            raise ConfigError(
                f"{shown}: projects[{index}].name: {project.name!r} is too short for Coolify, which needs project "
                f"names of 3 characters or more (with coolify.project_prefix {parsed.coolify.project_prefix!r}): "
                f"use at least {shortest} characters, or set a coolify.project_prefix such as 'app-'"
            )


def _coolify_credentials(values: Mapping[str, str], shown: str, env: str) -> CoolifyCredentials | None:
    url = values.get("COOLIFY_API_URL", "").strip()
    token = values.get("COOLIFY_API_TOKEN", "").strip()
    if not url or not token:
        return None
    if not re.match(r"^https?://[^\s/]+", url):
        raise ConfigError(
            f"COOLIFY_API_URL {url!r} is not an http(s) URL such as https://coolify.example.com/api/v1 "
            f"(set in the environment or envs/{env}.env)"
        )
    url = url.rstrip("/")
    if not url.endswith("/api/v1"):
        url += "/api/v1"
    return CoolifyCredentials(api_url=url, token=Secret(token))


def _scalar(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _apply_override(raw: dict[str, Any], dotted: str, value: str, shown: str) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"--set {dotted}={value}: key must be dotted names such as images.api")
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {shown} has {key!r} as a {type(child).__name__}, not a mapping")
        node = child
    # the value is text, which the schema converts to the type the key expects (so 05432 stays "05432" for a
    # variable and `no` stays "no"); only a list or mapping written inline ([a, b], {k: v}) is parsed as YAML
    if value.lstrip().startswith(("[", "{")):
        try:
            node[keys[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {dotted}={value}: not a valid inline list or mapping: {exc}") from None
    else:
        node[keys[-1]] = value


def _format_validation_error(shown: str, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = error["loc"]
        path = ""
        for part in loc:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key: remove it or check its spelling"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] in ("model_type", "dict_type"):
            example = " such as {db: 'postgres:17'}" if loc and loc[-1] == "images" else ""
            message = f"must be a mapping of keys{example}, not {_yaml_kind(error.get('input'))}"
        lines.append(f"{shown}: {path + ': ' if path else ''}{message}")
    return "\n".join(lines)


def _yaml_kind(value: object) -> str:
    """What a YAML value is, in the file's words: 'a string', 'a list', ..."""
    kinds = {str: "a string", list: "a list", bool: "a boolean", int: "a number", float: "a number"}
    return "nothing" if value is None else kinds.get(type(value), type(value).__name__)


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
