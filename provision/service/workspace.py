"""The entry point for callers (tasks.py, the HTTP API): a project root, its envs, its state directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..backends import create_backend
from ..backends.base import CopiesRunningData, RestoresArchive
from ..core import names
from ..core.branches import BranchMark, parse_ttl
from ..core.config import EnvConfig, available_envs, load_env, load_secrets_environment
from ..core.errors import ConfigError, ProjectConflict, ProvisionError, with_note
from ..core.model import ABSENT, Target
from ..core.render import DEFAULT_DB_VOLUME
from ..core.results import ProjectResult
from ..core.roles import ADMIN_SECRET, AUTHENTICATOR_SECRET, OWNER_SECRET, VOLUME_MARK, Roles
from ..core.secrets import Secret
from ..infra import database, hints
from ..infra.clock import SYSTEM, Clock, utc_now
from ..infra.hooks import Hooks
from ..infra.report import NullReporter, Reporter
from ..state import backups
from ..state.layout import BackendFiles
from ..state.records import ProjectRecord, StateStore, default_state_dir
from . import DEFAULT_LOCK_TIMEOUT, Provisioner
from .branching import mark_of, mask_script
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
                           clock=self.clock.monotonic, sleep=self.clock.sleep, wall=self.clock.time)

    def clone(self, env: str, project: str, *, to: str, to_env: str | None = None,
              overrides: Mapping[str, str] | None = None, reporter: Reporter | None = None,
              lock_timeout: float = DEFAULT_LOCK_TIMEOUT, ttl: str | None = None, reset: bool = False,
              mask: str | None = None, no_mask: bool = False, schema_only: bool = False,
              at: str | None = None) -> ProjectResult:
        """A branch of `project`: back up its database (counts and dump of one snapshot: it may take writes),
        provision `to` (in `to_env`, with `overrides` applied to that env only) recorded as its branch (with
        `ttl`, else the env's `branches.ttl`), and fill it in one transaction: restore, row counts verified, the
        masking script (`mask`, else the env's `branches.mask`). Where the backend can (local.data_root on a
        reflink filesystem), the running source is copied by reflink instead (`clone_by_reflink`). A new
        branch gets its own secrets, ports and network.
        When `to` is already a branch of `project`, it is kept as it is (CI calls this per pull request), or
        brought back to the parent's current data with `reset`; any other existing `to` is refused. If the copy
        fails, the new project is removed again with its data. The source is only read.
        With `at`: the branch is the source as it was then, restored from its continuous archive (service/archive.py;
        the same env only, no masking script yet)."""
        source = self.provisioner(env, reporter=reporter, lock_timeout=lock_timeout)
        target_env = to_env or env
        dest = source if target_env == env and not overrides else self.provisioner(
            target_env, overrides=overrides, reporter=reporter, lock_timeout=lock_timeout)
        source.known_target(project)
        dest.target(to)  # the new name is validated before anything runs
        if target_env == env and to == project:
            raise ConfigError(f"--to {to!r} is the project itself: name the copy differently")
        masking = mask_script(source.config, dest.config, mask, no_mask=no_mask)
        if is_taken(dest.engine, to):
            existing = mark_of(dest.record(to), dest.engine.observe(dest.target(to), dest.record(to)))
            if existing is None or existing.parent != project or existing.parent_env not in ("", env):
                raise ProjectConflict(f"{to!r} already exists in env {target_env!r} and is no branch of {project!r}: "
                                      f"a clone never overwrites a project; pick a new name or destroy it first")
            if reset:
                return self.reset(target_env, to, reporter=reporter, lock_timeout=lock_timeout, mask=mask,
                                  no_mask=no_mask)
            kept = dest.outputs(to)
            return replace(kept, action="clone", changed=False, messages=(
                f"{to!r} is a branch of {project!r} already (taken {existing.taken_at}, "
                + (f"expires {existing.expires_at}" if existing.expires_at else "never expires")
                + "): kept as it is (--reset brings it back to the parent's current data)",),
                details={"source": project, "source_env": env, "branch": existing.to_dict(), "kept": True})
        lifetime = ttl if ttl is not None else dest.config.branches.ttl
        now = self.clock.time()
        from_archive = at is None and dest is source and masking is None and not schema_only and \
            source.target(project).spec.backup.continuous and isinstance(source.backend, RestoresArchive)
        fallback = ("copying from its continuous archive (its latest moment)" if from_archive
                    else "copying logically (pg_dump and pg_restore)")
        copier = reflink_copier(source, dest, project, to, schema_only=schema_only, fallback=fallback) \
            if at is None else None
        if copier is None and from_archive:  # the repository is the next fastest copy (issue 23): a physical one
            at = "latest"
        mark = BranchMark(parent=project, parent_env=env, taken_at=utc_now(now),
                          expires_at=utc_now(now + parse_ttl(lifetime)) if lifetime else None,
                          method="archive" if at is not None else "logical" if copier is None else "reflink",
                          masked_with=str(masking) if masking else None)
        if at is not None:  # from the continuous archive: the same env only (its archive volume is on its engine)
            return self._clone_at(source, dest, project, to, at, mark, masking)
        if copier is not None:
            return clone_by_reflink(source, dest, copier, project, to, mark, masking)
        made = source.data.backup(project, label=f"clone-to-{target_env}-{to}", schema_only=schema_only)
        chosen = backups.read(Path(str(made.details["path"])))  # checked as it was written: no second hash
        previous = dest.record(to)
        dest.engine.write((previous or ProjectRecord(project=to, env=target_env)).evolve(branch=mark.to_dict()),
                          previous)  # before it is created: its containers are labelled a branch from the start
        try:
            dest.provision(to, create=True)
            filled = dest.branches.fill(to, chosen, mask=masking, action="clone")
        except ProvisionError as exc:
            with contextlib.suppress(ProvisionError):
                dest.destroy(to, delete_data=True, yes=True, backup=False, leave_branches=True)
            raise with_note(exc, f"The half-made clone {to!r} was removed; {project!r} was only read.") from exc
        made_now = dest.outputs(to)  # its URLs only now: the data is in and masked
        return replace(made_now, action="clone", changed=True, messages=(
            f"cloned {project!r} ({env}) into {to!r} ({target_env}) logically (pg_dump, pg_restore) from "
            f"{made.details['path']}",
            *filled.messages), details={"source": project, "source_env": env, "backup": made.details["path"],
                                        "row_counts": filled.details.get("row_counts"), "branch": mark.to_dict(),
                                        "schema_only": schema_only, "method": "logical"})

    def reset(self, env: str, project: str, *, reporter: Reporter | None = None,
              lock_timeout: float = DEFAULT_LOCK_TIMEOUT, mask: str | None = None,
              no_mask: bool = False, at: str | None = None) -> ProjectResult:
        """Bring the branch `project` back to its parent's current data: by reflink for a reflink branch where
        the backend still can, else a fresh backup of the parent restored in one transaction with the masking
        script (`mask`; else the one it was made with; else the env's, which a prod-like env requires unless
        `no_mask`: a branch another checkout made carries no script's path). Its URLs, ports and secrets stay."""
        dest = self.provisioner(env, reporter=reporter, lock_timeout=lock_timeout)
        target = dest.known_target(project)
        mark = mark_of(dest.record(project), dest.engine.observe(target, dest.record(project)))
        if mark is None:
            raise ConfigError(f"{project!r} in env {env!r} is no branch: reset brings a branch back to its parent's "
                              f"data (use restore for a project's own backups)")
        source = dest if mark.parent_env in ("", env) else self.provisioner(mark.parent_env, reporter=reporter,
                                                                             lock_timeout=lock_timeout)
        taken = utc_now(self.clock.time())
        masking = mask_script(source.config, dest.config, mask, no_mask=no_mask) if mask or no_mask or \
            not mark.masked_with else Path(mark.masked_with)
        mark = replace(mark, masked_with=str(masking) if masking else None)
        if at is not None:  # the parent then, from its archive (same env); masked in the one-off restore
            if source is not dest:
                raise ConfigError("reset --at restores the parent's archive of the same env: its archive is on that "
                                  "env's engine")
            done = dest.archive.reset_branch(project, mark.parent, at, mask=masking.read_text(encoding="utf-8")
                                             if masking is not None else "")
            previous = dest.record(project)
            if previous is not None:
                dest.engine.write(previous.evolve(branch=replace(
                    mark, taken_at=str(done.details.get("at") or taken), method="archive").to_dict()), previous)
            return replace(dest.outputs(project), action="reset", changed=True, messages=done.messages,
                           details=done.details)
        copier = dest.backend if isinstance(dest.backend, CopiesRunningData) and mark.method == "reflink" else None
        if copier is not None and copier.reflink_refusal(source.target(mark.parent), target) is None:
            return reset_by_reflink(source, dest, copier, project, replace(mark, taken_at=taken), masking)
        made = source.data.backup(mark.parent, label=f"reset-{env}-{project}")
        chosen = backups.read(Path(str(made.details["path"])))
        filled = dest.branches.fill(project, chosen, mask=masking, action="reset")
        previous = dest.record(project)
        if previous is not None:
            dest.engine.write(previous.evolve(branch=replace(mark, taken_at=taken).to_dict()), previous)
        now = dest.outputs(project)
        return replace(now, action="reset", changed=True, messages=(
            f"reset {project!r} to the data of {mark.parent!r} now ({made.details['path']}); its URLs and secrets "
            f"stay", *filled.messages[1:]), details={"backup": made.details["path"], "branch": replace(
                mark, taken_at=taken).to_dict(), "row_counts": filled.details.get("row_counts")})

    @staticmethod
    def _clone_at(source: Provisioner, dest: Provisioner, project: str, to: str, at: str, mark: BranchMark,
                  masking: Path | None) -> ProjectResult:
        """`clone --at`: the branch `to` made from `project`'s continuous archive as it was at `at`, recorded as its
        branch before it is created; a failed one is removed again."""
        if dest is not source:
            raise ConfigError("clone --at makes the copy in the same env, without --set (its archive is on that "
                              "env's engine): drop --to-env and --set")
        source.engine.capability(RestoresArchive, source.engine.known_target(project))  # before anything is written
        previous = source.record(to)
        source.engine.write((previous or ProjectRecord(project=to, env=source.env)).evolve(branch=mark.to_dict()),
                            previous)  # before it is created: its containers are labelled a branch from the start
        made = source.archive.clone(
            project, at, to, lambda name: source.provision(name, create=True),
            lambda name: source.destroy(name, delete_data=True, yes=True, backup=False, leave_branches=True),
            mask=masking.read_text(encoding="utf-8") if masking is not None else "")
        made_now = source.outputs(to)  # its URLs, as every clone gives them
        return replace(made_now, action="clone", changed=True, messages=made.messages, duration=made.duration,
                       details={**made.details, "branch": mark.to_dict(), "method": "archive"})

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

def reflink_copier(source: Provisioner, dest: Provisioner, project: str, to: str, *, schema_only: bool,
                   fallback: str = "copying logically (pg_dump and pg_restore)") -> CopiesRunningData | None:
    """The backend that copies `project`'s data by reflink for the branch `to`, or None: where the env keeps
    its data in no reflink directory (local.data_root unset), silently; else saying once why it cannot and what
    is done instead (`fallback`)."""
    backend = dest.backend
    if not isinstance(backend, CopiesRunningData) or not source.config.local.data_root \
            or source.backend.name != backend.name:
        return None
    why = ("--schema-only copies no data files" if schema_only
           else backend.reflink_refusal(source.target(project), dest.target(to)))
    if why:
        source.reporter.warn(f"no copy-on-write clone: {why}; {fallback}")
        return None
    return backend


def clone_by_reflink(source: Provisioner, dest: Provisioner, copier: CopiesRunningData, project: str, to: str,
                     mark: BranchMark, mask: Path | None) -> ProjectResult:
    """The branch `to` created on a reflink copy of the running `project`'s data (taken under the source's
    lock, the source serving throughout); it starts with its own secrets, ports, URLs and network: before
    anything can connect to the copy, its roles get the branch's passwords and `mask` runs, in one transaction
    (`first_sql`). On a failure the branch is removed with its data."""
    target = source.known_target(project)
    branch = dest.target(to)
    previous = dest.record(to)
    dest.engine.write((previous or ProjectRecord(project=to, env=dest.env)).evolve(branch=mark.to_dict()), previous)
    try:
        prepared = dest.engine.prepare(branch, ABSENT, create=True)  # its own secrets and ports, saved
        with source.engine.operation(target, f"clone --to={to}", shared=True):
            source.engine.running(target)  # a stopped source is refused here
            source.reporter.step(project, f"copying its data by reflink for {to!r} (backup mode; it keeps serving)"
                                 + (f", then masking it with {mask.name}" if mask else ""))
            copied = copier.copy_running(target, branch, sql=first_sql(branch, prepared.secrets, mask))
        dest.provision(to, create=True)
    except ProvisionError as exc:
        with contextlib.suppress(ProvisionError):
            dest.destroy(to, delete_data=True, yes=True, backup=False, leave_branches=True)
        raise with_note(exc, f"The half-made branch {to!r} was removed with its data; {project!r} was only read.") \
            from exc
    made = dest.outputs(to)
    return replace(made, action="clone", changed=True, messages=(
        f"branched {project!r} ({source.env}) into {to!r} ({dest.env}) by reflink: {copied.seconds:.2f} s in "
        f"backup mode, the source serving throughout",), details={
            "source": project, "source_env": source.env, "method": "reflink", "branch": mark.to_dict(),
            "volume": copied.volume, "backup_mode_s": round(copied.seconds, 3), "start_lsn": copied.start_lsn,
            "stop_lsn": copied.stop_lsn})


def first_sql(branch: Target, secrets: Mapping[str, Secret], mask: Path | None) -> str:
    """What runs in a reflink copy before the branch starts, in one transaction as its superuser: its roles'
    passwords set to the branch's own (SCRAM verifiers: no plaintext), its database marked as made in its
    volume, then `mask` as the owner role."""
    wanted = Roles.of(branch.spec.variables)
    dbname = str(branch.spec.variables["db_name"])
    statements = ["BEGIN;"]
    for role, name in ((wanted.owner, OWNER_SECRET), (wanted.authenticator, AUTHENTICATOR_SECRET),
                       (wanted.admin, ADMIN_SECRET)):
        if name in secrets:
            statements.append(database.password_statement(role, secrets[name])[0].strip())
    statements.append(f"COMMENT ON DATABASE {database.quote_identifier(dbname)} IS "
                      f"{database.quote_literal(VOLUME_MARK + DEFAULT_DB_VOLUME)};")
    if mask is not None:
        try:
            script = mask.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"masking script {mask}: cannot be read ({exc.strerror})") from exc
        statements += [f"SET LOCAL ROLE {database.quote_identifier(wanted.owner)};", script, ";", "RESET ROLE;"]
    return "\n".join([*statements, "COMMIT;"])


def reset_by_reflink(source: Provisioner, dest: Provisioner, copier: CopiesRunningData, project: str,
                     mark: BranchMark, mask: Path | None) -> ProjectResult:
    """A reflink branch back to its running parent's data: the branch stopped, a new reflink copy made beside its
    data and swapped in (its own passwords set and `mask` run in it first), the branch started again: same URLs,
    ports and secrets. A failed copy leaves the branch's data as it was (it is started again either way)."""
    branch = dest.known_target(project)
    parent = source.known_target(mark.parent)
    secrets = dest.engine.prepare(branch, dest.engine.observe(branch, dest.record(project)), create=False).secrets
    dest.control(project, "stop")
    try:
        with source.engine.operation(parent, f"reset {project}", shared=True):
            source.engine.running(parent)
            source.reporter.step(mark.parent, f"copying its data by reflink for {project!r} (backup mode)")
            copied = copier.copy_running(parent, branch, sql=first_sql(branch, secrets, mask), replace=True)
    finally:
        started = dest.control(project, "start")
    previous = dest.record(project)
    if previous is not None:
        dest.engine.write(previous.evolve(branch=mark.to_dict()), previous)
    return replace(started, action="reset", changed=True, messages=(
        f"reset {project!r} to the data of {mark.parent!r} now, by reflink ({copied.seconds:.2f} s in backup mode); "
        f"its URLs and secrets stay",), details={"method": "reflink", "branch": mark.to_dict(),
                                                "backup_mode_s": round(copied.seconds, 3)})
