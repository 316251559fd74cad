"""The tasks on a project's data: backup, backups, restore, clone, upgrade-db, rotate, move."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.context import Context
from invoke.exceptions import Exit

from .flags import (
    ENV_HELP,
    LOCK_HELP,
    PROJECT_HELP,
    QUIET_HELP,
    WIDE_HELP,
    number,
    overrides,
    require_project,
    task,
)
from .session import emit, exit_if_failed, provisioner_for, require_env, session, workspace

if TYPE_CHECKING:
    from ..core.results import ProjectResult


def data_result(result: ProjectResult, json: bool, line: str, *, show_secrets: bool = False,
                 quiet: bool = False) -> None:
    """The result as JSON (--json, even with --quiet), else `line` (not with --quiet: errors only)."""
    from . import output

    if json:
        emit(output.to_json(result.to_dict(show_secrets=show_secrets)))
    elif not quiet:
        emit(line)


@task(help={"env": ENV_HELP, "project": "The project (or --all)", "all": "Every declared project",
            "out": "Write the dump here instead of the state directory's backups/<env>/<project>/",
            "keep": "After a successful backup, delete all but the newest N of the project's backups",
            "json": "Print JSON", "parallel": "With --all: how many at once (default 2)",
            "keep_going": "With --all: go on after a failure", "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def backup(c: Context, env: str | None = None, project: str | None = None, all: bool = False,
           out: str | None = None, keep: str | None = None, json: bool = False, parallel: str = "2",
           keep_going: bool = False, lock_timeout: str | None = None, quiet: bool = False) -> None:
    """pg_dump (custom format) of a project's database, 0600 in a 0700 directory, with a manifest (version,
    image, size, sha256, row counts); prints the dump's path."""
    from . import output

    if all == (project is not None):
        raise Exit("error: pass --project=NAME or --all", code=2)
    if all and out is not None:
        raise Exit("error: --out names one file: it does not go with --all", code=2)
    kept = int(number("keep", keep, minimum=1)) if keep is not None else None
    workers = int(number("parallel", parallel, minimum=1))
    with session(quiet=quiet) as reporter:
        provisioner = provisioner_for(env, reporter, lock_timeout=lock_timeout)
        if project is not None:
            result = provisioner.data.backup(project, out=Path(out) if out else None, keep=kept)
            data_result(result, json, str(result.details["path"]), quiet=quiet)
            return
        names = [p.name for p in provisioner.config.projects]
        summary = provisioner.run_many(names, lambda name: provisioner.data.backup(name, keep=kept), action="backup",
                                       keep_going=keep_going, parallel=workers)
    if json:
        emit(output.summary_json(summary))
    elif not quiet:
        emit(output.backup_paths(summary))
    exit_if_failed(summary)


@task(help={"env": ENV_HELP, "project": "The project (default: every project with backup.continuous on)",
            "json": "Print JSON", "wide": WIDE_HELP,
            "check": "Exit 1 when a project's continuous archive is not ok (archiver down, stale, lag over "
                     "backup.max_lag, no base backup), saying why: for cron and monitoring"})
def backups(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
            wide: bool = False, check: bool = False) -> None:
    """A project's dumps, newest first (time, PostgreSQL major, size, tables, path), and, with backup.continuous
    on, its archive: health, recoverable window, last base backup, lag, size, error. Without --project (or with
    --check): the archives of every project with continuous archiving."""
    from ..service.archive import failing
    from . import output

    with session(read_only=True) as reporter:
        provisioner = provisioner_for(env, reporter, offline=True)
        found = provisioner.data.listing(project) if project is not None and not check else None
        archives = provisioner.archive.listing(project) if project is None or check or \
            provisioner.known_target(project).spec.backup.continuous else []
    bad = failing(archives)
    if json:
        body: dict[str, Any] = {"env": provisioner.env, "archives": [a.to_dict() for a in archives]}
        if found is not None:
            body.update(project=project, backups=[b.to_dict() for b in found])
        emit(output.to_json(body))
    else:
        parts = []
        if found is not None:
            parts.append(output.backups_table(found, wide=wide) if found else f"no backups of {project!r} yet")
        if archives:
            parts.append(output.archives_table(archives, wide=wide))
        elif found is None:
            parts.append("no project of this env has backup.continuous on")
        emit("\n\n".join(parts))
    if check and bad:
        raise Exit("backups --check: " + "; ".join(f"{a.project}: {a.status.health} ({a.status.reason})"
                                                   for a in bad if a.status is not None), code=1)


@task(help={"env": ENV_HELP, "project": "The project to drill (default: every project with backup.continuous on)",
            "all": "Every project with backup.continuous on (the default without --project)",
            "at": "Restore this moment instead of the archive's end (ISO with its zone, or -10m)",
            "json": "Print JSON", "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def verify(c: Context, env: str | None = None, project: str | None = None, all: bool = False, at: str | None = None,
           json: bool = False, lock_timeout: str | None = None, quiet: bool = False) -> None:
    """Restore drill: write a marker, restore the continuous archive (its end, or --at) into a throwaway stack,
    check it (PostgreSQL starts, the api answers, the marker is there, every table reads, amcheck is clean),
    remove it, and record the result (backups shows the last drill). Exit 1 when a drill fails."""
    from . import output

    if all and project:
        raise Exit("error: pass --project=NAME or --all, not both", code=2)
    options: dict[str, Any] = {}
    if lock_timeout is not None:
        options["lock_timeout"] = number("lock-timeout", lock_timeout, integer=False)
    with session(quiet=quiet) as reporter:
        results = workspace().verify(require_env(env), project, at=at, reporter=reporter, **options)
    if json:
        emit(output.to_json({"env": env, "drills": [r.to_dict() for r in results]}))
    elif not quiet:
        emit("\n".join(f"{r.project}: {r.messages[0]}" for r in results))
    failed = [r for r in results if r.details.get("result") != "ok"]
    if failed:
        raise Exit("\n".join(f"error: {r.project}: {r.details.get('detail')}" for r in failed), code=1)


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "from": "A dump's path, or latest (the newest backup)",
            "to_time": "Restore the continuous archive to this moment (backup.continuous): an ISO time with its "
                       "zone (2026-12-08T14:03:00Z), a time ago (-10m), or latest; into a new data volume, the "
                       "current one kept until --finalize",
            "finalize": "Delete the data a restore --to-time kept", "rollback": "Return to the data a restore "
                        "--to-time kept",
            "offsite": "With --to-time: restore from the copy in backup.offsite's store (a lost host's archive)",
            "system_id": "With --offsite: the database cluster whose copy to restore (when the store holds several)",
            "yes": "Confirm: the database is replaced (a safety backup is taken first)", "json": "Print JSON",
            "force": "Restore a dump without a manifest, or one of another project or env (a dump is code: "
                     "restore only dumps you trust)",
            "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def restore(c: Context, env: str | None = None, project: str | None = None, from_: str | None = None,
            to_time: str | None = None, finalize: bool = False, rollback: bool = False,
            yes: bool = False, json: bool = False, force: bool = False, lock_timeout: str | None = None,
            quiet: bool = False, offsite: bool = False, system_id: str | None = None) -> None:
    """Restore a backup into a project: safety backup, pg_restore --clean --if-exists in one transaction, API
    schema reload, row counts checked against the manifest. With --to-time: the continuous archive restored to
    that moment in a new data volume, verified, switched to; --rollback returns, --finalize deletes the old."""
    project = require_project(project)
    chosen = [name for name, given in (("--from", from_), ("--to-time", to_time), ("--finalize", finalize),
                                       ("--rollback", rollback)) if given]
    if len(chosen) != 1:
        raise Exit("error: give one of --from (a dump's path, or latest), --to-time (a moment of the continuous "
                   "archive), --finalize or --rollback" + (f", not {' and '.join(chosen)}" if chosen else ""), code=2)
    if (offsite or system_id) and not to_time:
        raise Exit("error: --offsite and --system-id go with --to-time (a moment of the archive's offsite copy)",
                   code=2)
    with session(quiet=quiet) as reporter:
        provisioner = provisioner_for(env, reporter, lock_timeout=lock_timeout)
        if to_time:
            result = provisioner.archive.restore(project, to_time, yes=yes, offsite=offsite or bool(system_id),
                                                 system_id=system_id)
        elif finalize:
            result = provisioner.archive.finalize(project, yes=yes)
        elif rollback:
            result = provisioner.archive.rollback(project, yes=yes)
        else:
            result = provisioner.data.restore(project, str(from_), yes=yes, force=force)
    data_result(result, json, "\n".join(result.messages), quiet=quiet)


@task(iterable=["set_"], help={"env": ENV_HELP, "project": "The project to copy", "to": "The new project's name",
                               "at": "Copy the project as it was at this moment, from its continuous archive "
                                     "(backup.continuous; same env): ISO time with its zone, -10m, or latest",
                               "to_env": "The env of the copy (default: the same)", "json": "Print JSON",
                               "set": "Override a key of the copy's env file, e.g. --set images.db=postgres:17",
                               "show_secrets": "Show the copy's db_url password", "lock_timeout": LOCK_HELP,
                               "quiet": QUIET_HELP,
                               "ttl": "The branch's lifetime (3d, 12h, 90m; default: branches.ttl, else none)",
                               "reset": "When --to is a branch of --project already: bring it back to the "
                                        "parent's current data (default: keep it as it is)",
                               "mask": "A SQL file run in the branch before its API opens (default: branches.mask)",
                               "no_mask": "Copy the rows as they are, even of a prod-like env",
                               "schema_only": "Copy the schema without rows",
                               "format": "env (API_URL=, DB_URL= lines, the default) or json"})
def clone(c: Context, env: str | None = None, project: str | None = None, to: str | None = None,
          to_env: str | None = None, json: bool = False, set_: list[str] | None = None, show_secrets: bool = False,
          lock_timeout: str | None = None, quiet: bool = False, ttl: str | None = None, reset: bool = False,
          mask: str | None = None, no_mask: bool = False, schema_only: bool = False, at: str | None = None,
          format: str = "env") -> None:
    """Branch a project (a preview environment): --to is provisioned as its branch (own secrets, ports and
    URLs) and filled with a fresh backup of --project, masked before its API opens. Called again with the same
    --to, the branch is kept (or --reset). The source is only read."""
    from . import output

    project = require_project(project)
    if not to:
        raise Exit("error: --to is required: the new project's name, e.g. --to=shop-pr-42", code=2)
    if format not in ("env", "json"):
        raise Exit(f"error: --format {format!r}: use env or json", code=2)
    options: dict[str, Any] = {}
    if lock_timeout is not None:
        options["lock_timeout"] = number("lock-timeout", lock_timeout, integer=False)
    with session(quiet=quiet) as reporter:
        result = workspace().clone(require_env(env), project, to=to, to_env=to_env,
                                   overrides=overrides(set_), reporter=reporter, ttl=ttl, reset=reset, mask=mask,
                                   no_mask=no_mask, schema_only=schema_only, at=at, **options)
    data_result(result, json or format == "json", output.clone_env(result, show_secrets=show_secrets),
                show_secrets=show_secrets, quiet=quiet)


@task(help={"env": ENV_HELP, "project": "The branch", "json": "Print JSON", "show_secrets": "Show the db_url password",
            "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP,
            "mask": "A SQL file run in the branch before its API sees the data (default: the one it was made "
                    "with, else branches.mask)",
            "no_mask": "Copy the rows as they are, even of a prod-like env",
            "at": "The parent as it was at this moment, from its continuous archive (ISO with its zone, -10m)"})
def reset(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
          show_secrets: bool = False, lock_timeout: str | None = None, quiet: bool = False,
          mask: str | None = None, no_mask: bool = False, at: str | None = None) -> None:
    """Bring a branch back to its parent's current data (its masking script run again); its URLs, ports and
    secrets stay."""
    from . import output

    project = require_project(project)
    options: dict[str, Any] = {}
    if lock_timeout is not None:
        options["lock_timeout"] = number("lock-timeout", lock_timeout, integer=False)
    with session(quiet=quiet) as reporter:
        result = workspace().reset(require_env(env), project, reporter=reporter, mask=mask, no_mask=no_mask,
                                   at=at, **options)
    data_result(result, json, output.clone_env(result, show_secrets=show_secrets), show_secrets=show_secrets,
                quiet=quiet)


@task(help={"env": ENV_HELP, "json": "Print JSON"})
def branches(c: Context, env: str | None = None, json: bool = False) -> None:
    """List the env's branches: parent, when taken, age, expiry, status, API URL."""
    from . import output

    with session(read_only=True) as reporter:
        found = provisioner_for(env, reporter).branches.listing()
    if json:
        emit(output.to_json({"env": env, "branches": [b.to_dict() for b in found]}))
        return
    emit(output.branches_table(found) if found else "no branches")


@task(help={"env": ENV_HELP, "dry_run": "Only say which branches would be removed",
            "keep_data": "Keep the expired branches' data volumes (default: deleted with them)",
            "json": "Print JSON", "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def gc(c: Context, env: str | None = None, dry_run: bool = False, keep_data: bool = False, json: bool = False,
       lock_timeout: str | None = None, quiet: bool = False) -> None:
    """Remove the env's expired branches, with their data unless --keep-data."""
    from . import output

    with session(quiet=quiet) as reporter:
        results = provisioner_for(env, reporter, lock_timeout=lock_timeout).branches.gc(dry_run=dry_run,
                                                                                        keep_data=keep_data)
    if json:
        emit(output.to_json({"env": env, "dry_run": dry_run, "removed": [r.to_dict() for r in results]}))
    elif not quiet:
        emit("\n".join(f"{r.project}: {r.messages[0]}" for r in results) or "no expired branches")


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "yes": "Confirm (the project is stopped while it moves)",
            "finalize": "Delete the old data an upgrade kept", "rollback": "Return to the old data and image",
            "backup": "With --rollback: first back up what was written since the upgrade (default)",
            "json": "Print JSON", "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def upgrade_db(c: Context, env: str | None = None, project: str | None = None, yes: bool = False,
               finalize: bool = False, rollback: bool = False, backup: bool = True, json: bool = False,
               lock_timeout: str | None = None, quiet: bool = False) -> None:
    """Move a project's data to the PostgreSQL major of the env's db image: backup, new data directory,
    restore, row counts checked; the old data is kept until --finalize (--rollback returns to it)."""
    project = require_project(project)
    if finalize and rollback:
        raise Exit("error: --finalize and --rollback exclude each other", code=2)
    with session(quiet=quiet) as reporter:
        upgrades = provisioner_for(env, reporter, lock_timeout=lock_timeout).upgrades
        if finalize:
            result = upgrades.finalize(project, yes=yes)
        elif rollback:
            result = upgrades.rollback(project, yes=yes, backup=backup)
        else:
            result = upgrades.upgrade(project, yes=yes)
    data_result(result, json, "\n".join(result.messages), quiet=quiet)


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "secret": "db_password or jwt_secret", "yes": "Confirm",
            "json": "Print JSON", "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def rotate(c: Context, env: str | None = None, project: str | None = None, secret: str | None = None,
           yes: bool = False, json: bool = False, lock_timeout: str | None = None, quiet: bool = False) -> None:
    """Replace a project's db_password (inside the running database, checked; the old one is put back on any
    failure) or jwt_secret (tokens signed with the old one stop working)."""
    project = require_project(project)
    if not secret:
        raise Exit("error: --secret is required: db_password or jwt_secret", code=2)
    with session(quiet=quiet) as reporter:
        result = provisioner_for(env, reporter, lock_timeout=lock_timeout).data.rotate(project, secret, yes=yes)
    data_result(result, json, "\n".join(result.messages), quiet=quiet)


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "to_server": "A server of coolify.servers to move to",
            "yes": "Confirm (the project is stopped while its data is copied)",
            "finalize": "Delete, with its data, the old stack a move left stopped on the old server",
            "json": "Print JSON", "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def move(c: Context, env: str | None = None, project: str | None = None, to_server: str | None = None,
         yes: bool = False, finalize: bool = False, json: bool = False, lock_timeout: str | None = None,
         quiet: bool = False) -> None:
    """Move a project with its data to another Coolify server (coolify.servers): backup, set the old stack
    aside, create on the new server, restore, row counts checked; the old stack stays until --finalize."""
    project = require_project(project)
    if finalize == bool(to_server):
        raise Exit("error: give --to-server=NAME to move, or --finalize to delete what a move left behind", code=2)
    with session(quiet=quiet) as reporter:
        moves = provisioner_for(env, reporter, lock_timeout=lock_timeout).moves
        result = moves.move_finalize(project, yes=yes) if finalize else moves.move(project, str(to_server), yes=yes)
    data_result(result, json, "\n".join(result.messages), quiet=quiet)
