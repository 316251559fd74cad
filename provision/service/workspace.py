"""The entry point for callers (tasks.py, the HTTP API): a project root, its envs, its state directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..backends import create_backend
from ..core import names
from ..core.config import EnvConfig, available_envs, load_env, load_secrets_environment
from ..core.errors import ConfigError, ProjectConflict, ProvisionError, with_note
from ..core.results import ProjectResult
from ..core.secrets import Secret
from ..infra import hints
from ..infra.clock import SYSTEM, Clock
from ..infra.hooks import Hooks
from ..infra.report import NullReporter, Reporter
from ..state import backups
from ..state.layout import BackendFiles
from ..state.records import StateStore, default_state_dir
from . import DEFAULT_LOCK_TIMEOUT, Provisioner
from .drills import NO_ARCHIVING, Drills
from .requests import is_taken
from .scaffold import InitResult, init


@dataclass
class Workspace:
    """A checkout with `envs/` and `templates/`; `environ` defaults to the process environment. `clock`: what
    the service and backend built here read and wait time through (the real one by default)."""

    root: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    state_dir: Path | None = None
    clock: Clock = SYSTEM

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        if self.state_dir is None:
            self.state_dir = default_state_dir(self.root, self.environ)
        self.store = StateStore(self.state_dir)

    def init(self, env: str = "dev", *, backend: str = "local") -> InitResult:
        """Complete this root as a provision project (see `scaffold.init`); never overwrites a file."""
        return init(self.root, env=env, backend=backend)

    def envs(self) -> list[str]:
        return available_envs(self.root)

    def load(self, env: str, *, overrides: Mapping[str, str] | None = None, offline: bool = False) -> EnvConfig:
        return load_env(env, self.root, environ=self.environ, overrides=overrides, offline=offline)

    def provisioner(
        self,
        env: str,
        *,
        overrides: Mapping[str, str] | None = None,
        reporter: Reporter | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        skip_hooks: bool = False,
        offline: bool = False,
    ) -> Provisioner:
        """Load the env, pick its backend and say which one was chosen on the reporter. `offline`: for a
        command that contacts no server (render); a Coolify env then needs no credentials."""
        reporter = reporter or NullReporter()
        config = self.load(env, overrides=overrides, offline=offline)
        backend = create_backend(config, BackendFiles(self.store.layout), clock=self.clock)
        reporter.banner(f"[Provisioning] Using {backend.describe()}")
        hooks = Hooks(self.root / "hooks", enabled=not skip_hooks)
        return Provisioner(config, backend, self.store, lock_timeout=lock_timeout, reporter=reporter, hooks=hooks,
                           clock=self.clock.monotonic, sleep=self.clock.sleep)

    def clone(self, env: str, project: str, *, to: str, to_env: str | None = None,
              overrides: Mapping[str, str] | None = None, reporter: Reporter | None = None,
              lock_timeout: float = DEFAULT_LOCK_TIMEOUT, at: str | None = None) -> ProjectResult:
        """A parallel copy: back up `project`, provision `to` (in `to_env`, with `overrides` applied to that env
        only) and restore the backup into it, row counts verified. With `at`: from the continuous archive as it
        was then (service/archive.py), same env only. `to` must be new; if the copy fails, the new project is
        removed again (with its data: nothing of it existed before). The source is only read."""
        source = self.provisioner(env, reporter=reporter, lock_timeout=lock_timeout)
        target_env = to_env or env
        dest = source if target_env == env and not overrides else self.provisioner(
            target_env, overrides=overrides, reporter=reporter, lock_timeout=lock_timeout)
        source.known_target(project)
        dest.target(to)  # the new name is validated before anything runs
        if target_env == env and to == project:
            raise ConfigError(f"--to {to!r} is the project itself: name the copy differently")
        if is_taken(dest.engine, to):
            raise ProjectConflict(f"{to!r} already exists in env {target_env!r}: a clone never overwrites a project; "
                                  f"pick a new name or destroy it first")
        if at is not None:  # from the continuous archive: the same env only (its archive volume is on its engine)
            if dest is not source:
                raise ConfigError("clone --at makes the copy in the same env, without --set (its archive is on "
                                  "that env's engine): drop --to-env and --set")
            return source.archive.clone(project, at, to, lambda name: source.provision(name, create=True),
                                        lambda name: source.destroy(name, delete_data=True, yes=True, backup=False))
        made = source.data.backup(project, label=f"clone-to-{target_env}-{to}")
        chosen = backups.read(Path(str(made.details["path"])))  # checked as it was written: no second hash
        created = dest.provision(to, create=True)
        try:
            restored = dest.data.restore_into_new(to, chosen)
        except ProvisionError as exc:
            with contextlib.suppress(ProvisionError):
                dest.destroy(to, delete_data=True, yes=True, backup=False)
            raise with_note(exc, f"The half-made clone {to!r} was removed; {project!r} was only read.") from exc
        return replace(created, action="clone", changed=True, messages=(
            f"cloned {project!r} ({env}) into {to!r} ({target_env}) from {made.details['path']}",
            *restored.messages), details={"source": project, "source_env": env, "backup": made.details["path"],
                                          "row_counts": restored.details.get("row_counts")})

    def api_token(self, env: str) -> Secret | None:
        """PROVISION_API_TOKEN from the environment, envs/<env>.env or .env (None when unset)."""
        value = load_secrets_environment(env, self.root, self.environ).get("PROVISION_API_TOKEN", "").strip()
        return Secret(value) if value else None

    def history(self, env: str, project: str | None = None) -> list[dict[str, object]]:
        """The history records of an env (and project), oldest first."""
        from ..state import history

        names.validate_env_name(env)
        records = list(history.read(self.store.root, env=env, project=project))
        if not records and env not in self.envs():
            raise ConfigError(f"envs/{env}.yml not found, and env {env!r} has no history here (envs here: "
                              f"{', '.join(self.envs()) or 'none'})")
        return records

    def list_projects(self, env: str | None = None, *, reporter: Reporter | None = None) -> list[ProjectResult]:
        """Every declared, recorded or deployed project of one env, or of every env.

        Across every env, an env that cannot be read (say, Coolify credentials missing) is
        skipped with a warning; a named env fails loudly.
        """
        reporter = reporter or NullReporter()
        results: list[ProjectResult] = []
        envs = [env] if env is not None else self.envs()
        if not envs:
            raise ConfigError(f"no envs/*.yml in {self.root}: run {hints.command('init')}, or pass --env")
        skipped = []
        for name in envs:
            try:
                provisioner = self.provisioner(name, reporter=reporter)
                results.extend(provisioner.status(usage=False).results)
            except ProvisionError as exc:
                if env is not None:
                    raise
                reason = str(exc).splitlines()[0]
                skipped.append(f"{name}: {reason}")
                reporter.warn(f"skipped env {name!r}: {reason}")
        if skipped and len(skipped) == len(envs):
            raise ProvisionError("every env was skipped, so nothing is listed:\n  " + "\n  ".join(skipped))
        return results

    def verify(self, env: str, project: str | None = None, *, at: str | None = None,
               reporter: Reporter | None = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> list[ProjectResult]:
        """Restore drills (service/drills.py) of `project`, or of every project of `env` with continuous archiving
        on, one after the other; each drill's result is the project's history line. ConfigError when there is
        nothing to drill."""
        source = self.provisioner(env, reporter=reporter, lock_timeout=lock_timeout)
        throwaway = self.provisioner(env, overrides=NO_ARCHIVING, reporter=reporter, lock_timeout=lock_timeout)
        drills = Drills(source, throwaway, wall=self.clock.monotonic, sleep=self.clock.sleep)
        if project is not None:
            return [drills.verify(project, at=at)]
        names_ = sorted({p.name for p in source.config.projects} | set(source.engine.records()))
        chosen = [name for name in names_ if source.target(name).spec.backup.continuous and "-drill-" not in name]
        if not chosen:
            raise ConfigError(f"verify: no project of env {env!r} has backup.continuous on: nothing to drill")
        return [drills.verify(name, at=at) for name in chosen]
