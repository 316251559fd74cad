"""The data verbs: backup, restore, the restoring half of clone, and secret rotation; and finishing or undoing
what a killed one left under way. Each runs under the project's locks for its whole length (one engine
operation with `shared`: the state directory's, and the backend's that every runner sees, so that no deploy
from another machine comes between two of its steps; its own converge re-enters it), writes its history line,
and leaves the project as it was when it fails: a restore runs in one transaction after a safety backup, a
rotation puts the old password back. upgrade.py and move.py build on its dump and checked restore.

PostgreSQL's own client tools do the work (provision.database), run in the project's db container where
the backend can exec (local), else on this machine through the db's published port (Coolify with
`variables.db_public_port`); where neither exists the verb says so and what works.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..backends.base import DataVolumes, DroppingVolumes, RestoresDumps, StoresSecrets
from ..core import roles
from ..core.errors import (
    BackupError,
    CommandFailed,
    ConfigError,
    ConfirmationRequired,
    DumpRefused,
    Interrupted,
    NotSupported,
    ProjectConflict,
    ProvisionError,
    with_note,
)
from ..core.model import Observed, Prepared, Target
from ..core.render import DEFAULT_DB_VOLUME
from ..core.results import ProjectResult
from ..core.secrets import Secret, generate_secret
from ..infra import database, dbaccess, hints
from ..infra.clock import utc_now, utc_stamp
from ..infra.commands import Runner, SubprocessRunner
from ..state import backups
from . import upgrade_state as states
from .engine import Engine, Operation
from .kept import KeptData

DUMP_TIMEOUT = 3600.0  # seconds for one pg_dump or pg_restore
ROTATABLE = ("db_password", "jwt_secret")
PENDING_VOLUME = "restore-volume"  # pending.json: the new volume of a restore --from not switched to yet
PAUSE_AT = "PROVISION_TEST_PAUSE_AT"  # tests only: DataVerbs.pause


class DataVerbs:
    """Data verbs for one env on `engine`; `runner` runs the client tools (a fake in unit tests)."""

    def __init__(self, engine: Engine, runner: Runner | None = None) -> None:
        self.engine = engine
        self.runner = runner or SubprocessRunner()
        self.kept = KeptData(engine, self.pause)  # what a switch to a new volume keeps (upgrade-db, restore)

    def access(self, target: Target, observed: Observed, prepared: Prepared) -> database.DbAccess:
        """How the client tools reach the project's database now (dbaccess.access)."""
        handle = self.engine.known(observed, self.engine.record(target.project))
        return dbaccess.access(self.engine.backend, target, handle, prepared)

    def running_db(self, target: Target) -> tuple[Observed, Prepared, database.DbAccess]:
        observed, prepared = self.engine.running(target)
        return observed, prepared, self.access(target, observed, prepared)

    # --- backup ---------------------------------------------------------------------------
    def folder(self, project: str) -> Path:
        return backups.directory(self.engine.store.root, self.engine.env, project)

    def backup(self, project: str, *, out: Path | None = None, keep: int | None = None,
               label: str = "", schema_only: bool = False) -> ProjectResult:
        """A pg_dump (custom format) of the project's database with its manifest; with `keep`, older backups
        beyond the newest `keep` are deleted after this one succeeded."""
        target = self.engine.known_target(project)
        with self.engine.operation(target, "backup", shared=True) as op:
            self.recover(target)
            _, _, access = self.running_db(target)
            made = self.dump(target, access, out=out, label=label, schema_only=schema_only)
            op.changed = True
            pruned = backups.prune(self.folder(project), keep) if keep is not None and out is None else []
        messages = [f"wrote {made.path} ({made.manifest['size']} bytes, PostgreSQL {made.manifest['server_major']}, "
                    f"{len(made.row_counts or {})} tables, dumped {access.where})"]
        messages += [f"deleted old backup {p.name}" for p in pruned]
        return self.engine.result(target, "backup", "backed up", op, messages,
                            {**made.to_dict(), "pruned": [str(p) for p in pruned]})

    def before_delete(self, target: Target, observed: Observed, op: Operation) -> backups.Backup | None:
        """destroy --delete-data's backup (the lock is held): the database is started again if it does not run
        (a stopped or destroyed project's kept data), then dumped; ConfirmationRequired when it cannot be dumped
        from here, naming what works. None when the project has no data at all."""
        engine = self.engine
        db = observed.services.get("db")
        running = db is not None and db.running
        if not running and not observed.exists and observed.kept_data is None:
            return None
        try:
            access = self.access(target, observed, engine.prepare(target, observed, create=False))
        except NotSupported as exc:  # before anything is started or changed
            raise ConfirmationRequired(f"no pg_dump can be written before deleting the data of {target.project!r}: "
                                       f"{exc}. Or delete without a dump (CLI: --no-backup; HTTP: ?no_backup=true)") from None
        except ProvisionError:
            if running:
                raise
        if not running:
            engine.reporter.step(target.project, "starting the database to dump it before its data is deleted")
            engine.converge(target, op)
            op.action = "destroy --delete-data"
            observed = engine.observe(target, engine.record(target.project))
            access = self.access(target, observed, engine.prepare(target, observed, create=False))
        return self.dump(target, access, label="before-delete")

    def listing(self, project: str) -> list[backups.Backup]:
        """The project's backups in the state directory, newest first."""
        self.engine.target(project)  # the name is validated
        return backups.listing(self.folder(project))

    def dump(self, target: Target, access: database.DbAccess, *, out: Path | None = None,
              label: str = "", schema_only: bool = False) -> backups.Backup:
        """Dump and describe (the lock is held by the caller)."""
        if out is not None:
            out = out.expanduser()
            out = out.parent.resolve() / out.name  # links in the directory are followed, never one at `out`
            for taken in (out, backups.manifest_path(out)):
                if taken.is_symlink() or taken.exists():
                    what = "a symbolic link" if taken.is_symlink() else "it exists"
                    raise ConfigError(f"--out {out}: {taken} is taken ({what}); pick a new name (a backup never "
                                      f"overwrites, nor writes through a link)")
            if not out.parent.is_dir():
                raise ConfigError(f"--out {out}: no directory {out.parent}")
        path = out or backups.new_path(self.folder(target.project))
        self.engine.reporter.step(target.project, f"dumping the database {access.where}")
        counts = database.snapshot_dump(access, self.runner, path, timeout=DUMP_TIMEOUT, schema_only=schema_only)
        header = database.read_header(path)
        record = self.engine.record(target.project)
        image = (record.images.get("db") if record is not None else None) or target.images.db
        return backups.write_manifest(path, {
            "project": target.project, "env": target.env, "backend": self.engine.backend.name,
            "created_at": utc_now(), "label": label, "server_version": header.server_version,
            "server_major": header.major, "pg_dump_version": header.dump_version, "database": header.database,
            "image": image, "size": path.stat().st_size, "sha256": backups.sha256(path),
            "row_counts": None if schema_only else counts, **({"schema_only": True} if schema_only else {}),
        })

    # --- restore --------------------------------------------------------------------------
    def choose(self, project: str, source: str) -> backups.Backup:
        """The backup `source` names (a path, or `latest`: the newest existing now), checked before anything
        changes: a whole custom-format dump whose checksum matches its manifest."""
        if source == backups.LATEST:
            found = self.listing(project)
            if not found:
                raise DumpRefused(f"{project!r} in env {self.engine.env!r} has no backup in {self.folder(project)}: "
                                  f"run {hints.command('backup', env=self.engine.env, project=project)} first")
            chosen = found[0]
        else:
            try:
                chosen = backups.read(Path(source).expanduser().resolve())
            except BackupError as exc:
                raise DumpRefused(str(exc)) from None
        try:
            database.read_header(chosen.path)
        except BackupError as exc:
            raise DumpRefused(f"{exc}; nothing was changed") from None
        expected = chosen.manifest.get("sha256")
        if expected and backups.sha256(chosen.path) != expected:
            raise DumpRefused(f"{chosen.path}: its sha256 differs from its manifest's (a corrupt or altered dump); "
                              f"nothing was changed")
        return chosen

    def restore(self, project: str, source: str, *, yes: bool = False, force: bool = False) -> ProjectResult:
        """Replace the project's database with a backup. Where the backend can start a one-off server on a new
        volume (RestoresDumps: local), the dump is restored there beside the running stack, its row counts checked,
        and the stack switched to it; the old volume is kept until restore --finalize (restore --rollback returns
        to it), so no safety backup is needed (`restore_beside`). Elsewhere (Coolify): a safety backup first, then
        pg_restore --clean --if-exists in one transaction in the running database, the manifest's row counts
        verified (a mismatch puts the safety backup back). Either way as the owner role (never a superuser: a
        dump is code). A dump without a manifest, or whose manifest names another project or env, needs `force`."""
        beside = isinstance(self.engine.backend, RestoresDumps)
        if not yes:
            raise ConfirmationRequired(
                f"restore replaces the database of {project!r} in env {self.engine.env!r} "
                + ("(restored into a new data volume; the current one is kept until restore --finalize)" if beside
                   else "(a safety backup is taken first)") + ": add --yes to confirm")
        chosen = self.choose(project, source)
        if not force:
            self._check_provenance(project, chosen)
        target = self.engine.known_target(project)
        if beside:
            return self.restore_beside(target, chosen)
        with self.engine.operation(target, "restore", shared=True) as op:
            self.recover(target)
            observed, prepared, access = self.running_db(target)
            safety = self.restore_checked(target, observed, prepared, access, chosen, op, safety=True)
        messages = [f"restored {chosen.path.name}", f"row counts match the manifest ({len(chosen.row_counts or {})} tables)"
                    if chosen.row_counts is not None else "the dump has no manifest: row counts were not verified"]
        if safety is not None:
            messages.insert(0, f"safety backup of the database as it was: {safety.path} (the {self.engine.backend.name} "
                               f"backend cannot restore into a new volume beside the running one)")
        return self.engine.result(target, "restore", "restored", op, messages, {
            "restored_from": str(chosen.path), "safety_backup": str(safety.path) if safety else None,
            "row_counts": chosen.row_counts})

    def restore_beside(self, target: Target, chosen: backups.Backup) -> ProjectResult:
        """restore --from into a new data volume (key `pgdata_restore_<time>`): a one-off server of the db image
        there, the roles made as on any new volume, pg_restore in one transaction as the owner role, row counts
        checked against the manifest, a clean stop; only then the stack moves to it the way restore --to-time does
        (kept_data, kind `restore-from`), and the old volume is kept. Until the record names the new volume, a
        pending mark names it: a killed run's volume is dropped by the next one (`recover`); after, a killed run
        is undone by restore --rollback. Any failure before the switch drops the new volume: nothing changed."""
        engine, project = self.engine, target.project
        scratch = engine.capability(RestoresDumps, target)
        with engine.operation(target, "restore", shared=True) as op:
            self.recover(target)
            record = engine.record(project)
            kept = states.upgrade_facts(record)
            if kept is not None:
                raise ProjectConflict(states.unfinished(target, kept) or states.kept_refusal(target, kept))
            observed, prepared, access = self.running_db(target)
            header = database.read_header(chosen.path)
            server = database.server_major(access, self.runner)
            if header.major > server:
                raise DumpRefused(f"{chosen.path.name} was dumped from PostgreSQL {header.major}, newer than the server "
                                  f"of {project!r} (PostgreSQL {server}): nothing was changed")
            running = record.images.get("db") if record is not None else None
            if record is None or running != target.images.db:
                raise ProjectConflict(f"{project!r} in env {target.env!r} runs {running or 'no recorded db image'}, "
                                      f"{engine.config.relpath} names {target.images.db} "
                                      f"({target.spec.key('images.db')}): apply it first "
                                      f"({hints.command('provision', env=target.env, project=project)}, or upgrade-db "
                                      f"for a new major); nothing was changed")
            old_key = record.db_volume or DEFAULT_DB_VOLUME
            new_key = f"{DEFAULT_DB_VOLUME}_restore_{utc_stamp().lower()}"
            wanted = roles.Roles.of(target.spec.variables, archiving=target.spec.backup.continuous)
            dbname = str(target.spec.variables["db_name"])
            op.changed = True
            engine.store.write_pending(target.env, project, PENDING_VOLUME, {
                "from": str(chosen.path), "volume_key": new_key, "at": utc_now()})
            engine.reporter.step(project, f"restoring {chosen.path.name} into a new volume ({new_key}); "
                                          f"{project!r} serves its own data meanwhile")
            started = time.monotonic()
            try:
                with scratch.scratch_server(target, new_key, image=target.images.db, admin=wanted.admin,
                                            dbname=dbname, password=prepared.secrets[roles.ADMIN_SECRET],
                                            timeout=max(120.0, engine.config.health.timeout)) as fresh:
                    self.pause("restore-scratch")
                    roles_sql = roles.ensure_sql(wanted, dbname, prepared.secrets, new_key)
                    database.run_script(fresh, self.runner, roles_sql)  # the roles the dump's grants name
                    database.restore_fresh(replace(fresh, user=wanted.owner), self.runner, chosen.path,
                                           timeout=DUMP_TIMEOUT)
                    database.run_script(fresh, self.runner, roles_sql)  # as a converge would on the restored data
                    counts = database.row_counts(fresh, self.runner)
                    self._check_counts(chosen, counts)
            except BaseException as exc:
                with contextlib.suppress(ProvisionError):
                    engine.capability(DroppingVolumes, target).drop_kept(target, new_key)
                engine.store.write_pending(target.env, project, PENDING_VOLUME, None)
                if isinstance(exc, ProvisionError) and not isinstance(exc, Interrupted):
                    raise with_note(exc, f"{project!r} still runs on its own data; the new volume was deleted; "
                                         f"nothing was changed.") from exc
                raise
            restored_s = time.monotonic() - started
            kept = {"state": states.SWITCHING, "kind": states.DUMP, "label": "restore", "image": target.images.db,
                    "major": server, "new_major": server, "volume_key": old_key,
                    "volume": engine.capability(DataVolumes, target).find_volume(target, old_key) or old_key,
                    "new_image": target.images.db, "new_volume_key": new_key, "backup": str(chosen.path),
                    "at": utc_now()}
            # the roles are made in the new volume already: the switch's converge need not make them again
            self.kept.record(target, kept, db_volume=new_key,
                             roles=roles.digest(wanted, dbname, prepared.secrets, new_key))
            engine.store.write_pending(target.env, project, PENDING_VOLUME, None)
            self.pause("restore-switching")
            switch_started = time.monotonic()
            self.kept.switch(target, op, kept)  # waits until the API answers (its schema cache is read anew)
            op.action = "restore"
            switched_s = time.monotonic() - switch_started
            self.kept.record(target, {**kept, "state": states.DONE, "at": utc_now()})
        verified = (f"row counts match the manifest ({len(chosen.row_counts or {})} tables)"
                    if chosen.row_counts is not None else "the dump has no manifest: row counts were not verified")
        messages = [f"restored {chosen.path.name} into a new volume ({restored_s:.1f} s); {verified}",
                    f"switched {project!r} to it ({switched_s:.1f} s: the database restarted on it)",
                    f"the data before the restore is kept as it was in volume {kept['volume']}: "
                    f"{states.kept_command(target, kept, '--finalize', '--yes')} deletes it, "
                    f"{states.kept_command(target, kept, '--rollback', '--yes')} returns to it"]
        return engine.result(target, "restore", "restored", op, messages, {
            "restored_from": str(chosen.path), "safety_backup": None, "row_counts": chosen.row_counts,
            "volume": engine.capability(DataVolumes, target).find_volume(target, new_key),
            "kept_volume": kept["volume"], "restore_s": round(restored_s, 3), "switch_s": round(switched_s, 3)})

    @staticmethod
    def _check_counts(chosen: backups.Backup, counts: dict[str, int]) -> None:
        """BackupError when the restored tables' row counts differ from the dump's manifest."""
        expected = chosen.row_counts
        if expected is None:
            return
        differ = {t: (n, counts.get(t)) for t, n in expected.items() if counts.get(t) != n}
        if differ:
            shown = ", ".join(f"{t}: {n} expected, {got} found" for t, (n, got) in sorted(differ.items())[:5])
            raise BackupError(f"after restoring {chosen.path.name} the row counts differ from its manifest ({shown})")

    def _check_provenance(self, project: str, chosen: backups.Backup) -> None:
        """DumpRefused for a dump that does not say it is this project's, in this env (`--force` skips it)."""
        made_for = (chosen.manifest.get("project"), chosen.manifest.get("env"))
        force = "add --force to restore it anyway (a dump is code: restore only dumps you trust); nothing was changed"
        if not chosen.manifest:
            raise DumpRefused(f"{chosen.path.name} has no manifest ({chosen.manifest_path.name}), so nothing says "
                              f"which project it is of: {force}")
        if made_for != (project, self.engine.env):
            raise DumpRefused(f"{chosen.path.name} is a dump of project {made_for[0]!r} in env {made_for[1]!r}, not "
                              f"of {project!r} in env {self.engine.env!r}: {hints.command('clone')} copies between "
                              f"projects; or {force}")

    def restore_into_new(self, project: str, chosen: backups.Backup) -> ProjectResult:
        """clone's second half: restore `chosen` into a project just created (no safety backup: it is empty)."""
        target = self.engine.known_target(project)
        with self.engine.operation(target, "restore", shared=True) as op:
            observed, prepared, access = self.running_db(target)
            self.restore_checked(target, observed, prepared, access, chosen, op, safety=False)
        return self.engine.result(target, "restore", "restored", op, [f"restored {chosen.path.name}"],
                            {"restored_from": str(chosen.path), "row_counts": chosen.row_counts})

    def restore_checked(self, target: Target, observed: Observed, prepared: Prepared, access: database.DbAccess,
                         chosen: backups.Backup, op: Operation, *, safety: bool) -> backups.Backup | None:
        header = database.read_header(chosen.path)
        server = database.server_major(access, self.runner)
        if header.major > server:
            raise DumpRefused(f"{chosen.path.name} was dumped from PostgreSQL {header.major}, newer than the server "
                              f"of {target.project!r} (PostgreSQL {server}): nothing was changed")
        kept = self.dump(target, access, label="safety") if safety else None
        op.changed = True
        self.engine.reporter.step(target.project, f"restoring {chosen.path.name} {access.where}")
        # a kill of this process does not stop pg_restore in the container: the next run finds this mark
        self.engine.store.write_pending(target.env, target.project, "restore", {
            "from": str(chosen.path), "safety": str(kept.path) if kept else None, "at": utc_now()})
        self.pause("restore-marked")
        try:
            database.restore(access, self.runner, chosen.path, timeout=DUMP_TIMEOUT)
        except CommandFailed as exc:
            self.engine.store.write_pending(target.env, target.project, "restore", None)
            raise with_note(exc, f"The database of {target.project!r} is as it was.") from exc
        self.pause("restore-committed")
        self.engine.store.write_pending(target.env, target.project, "restore", None)
        self.reload_api(target, observed, prepared, access)
        expected = chosen.row_counts
        if expected is not None:
            counts = database.row_counts(access, self.runner)
            differ = {t: (n, counts.get(t)) for t, n in expected.items() if counts.get(t) != n}
            if differ:
                shown = ", ".join(f"{t}: {n} expected, {got} found" for t, (n, got) in sorted(differ.items())[:5])
                if kept is not None:
                    database.restore(access, self.runner, kept.path, timeout=DUMP_TIMEOUT)
                    self.reload_api(target, observed, prepared, access)
                raise BackupError(f"after restoring {chosen.path.name} the row counts differ from its manifest "
                                  f"({shown}); " + (f"the safety backup {kept.path.name} was put back"
                                                    if kept is not None else "the clone is not a faithful copy"))
        return kept

    def reload_api(self, target: Target, observed: Observed, prepared: Prepared, access: database.DbAccess) -> None:
        """PostgREST reloads its schema cache on NOTIFY pgrst (its db-channel); then the API must answer."""
        database.query(access, self.runner, "NOTIFY pgrst, 'reload schema'")
        record = self.engine.record(target.project)
        self.engine.backend.wait(target, self.engine.known(observed, record), prepared,
                                  timeout=self.engine.config.health.timeout)

    # --- rotation ---------------------------------------------------------------------------
    def rotate(self, project: str, secret: str, *, yes: bool = False) -> ProjectResult:
        """A new db_password (the owner role's: ALTER ROLE as that role, in the running database) or jwt_secret.
        The new value is recorded as pending (0600) before the database changes, so a kill at any step is
        finished or undone by the next run (`recover`); a failure puts the old one back. The new password is
        proven from outside the db container (the published port: password authentication whatever pg_hba
        trusts inside), else by the role's stored SCRAM verifier."""
        if secret not in ROTATABLE:
            raise ConfigError(f"--secret {secret!r}: use one of {', '.join(ROTATABLE)}")
        if not yes:
            raise ConfirmationRequired(f"rotate replaces the {secret} of {project!r} in env {self.engine.env!r}: "
                                       f"add --yes to confirm")
        engine = self.engine
        target = engine.known_target(project)
        name = secret.upper()
        with engine.operation(target, f"rotate {secret}", shared=True) as op:
            self.recover(target)
            observed, prepared = self.engine.running(target)
            old = prepared.secrets.get(name)
            if old is None:
                raise ProvisionError(f"the current {name} of {project!r} is unknown here: nothing was changed")
            new = generate_secret()
            owner = str(target.spec.variables["db_user"])
            engine.store.write_pending(target.env, project, "rotate",
                                        {"secret": name, "value": new.reveal(), "at": utc_now()})
            op.changed = True
            self.pause("rotate-pending")
            try:
                if secret == "db_password":
                    engine.sql(target).run_sql(target, observed, database.password_statement(owner, new)[0], user=owner,
                                            purpose="rotate-password")
                self.pause("rotate-altered")
                self.store_secret(target, prepared, name, new)
                engine.store.write_pending(target.env, project, "rotate", None)
                engine.converge(target, op)
                op.action = f"rotate {secret}"
                proof = self._check_password(target, owner, new, old) if secret == "db_password" else ""
            except ProvisionError as exc:
                engine.reporter.step(project, f"the rotation failed: putting the old {name} back")
                try:
                    if secret == "db_password":
                        now = engine.observe(target, engine.record(project))
                        engine.sql(target).run_sql(target, now, database.password_statement(owner, old)[0],
                                                purpose="rotate-password-back")
                    self.store_secret(target, prepared, name, old)
                    engine.store.write_pending(target.env, project, "rotate", None)
                    engine.converge(target, op)
                except ProvisionError as back:
                    raise with_note(exc, f"Putting the old {name} back failed too: {back}. The next run of "
                                         f"provision finishes or undoes the rotation") from exc
                raise with_note(exc, f"The old {name} is back in use.") from exc
        messages = [f"rotated {name}; the API answers"]
        if secret == "db_password":
            messages.append(proof)
        else:
            messages.append("tokens signed with the old JWT secret stop working now: issue new ones")
        return self.engine.result(target, f"rotate {secret}", "running", op, messages, {"secret": secret})

    def store_secret(self, target: Target, prepared: Prepared, name: str, value: Secret) -> None:
        """The service's copy (local: what the compose env file is written from) and the backend's own
        (Coolify: the service's variables), before the stack is re-applied."""
        secrets = {**prepared.secrets, name: value}
        self.engine.store.write_secrets(target.env, target.project, secrets)
        backend = self.engine.backend
        if isinstance(backend, StoresSecrets):
            backend.store_secrets(target, self.engine.observe(target, self.engine.record(target.project)), secrets)

    def _check_password(self, target: Target, role: str, new: Secret, old: Secret) -> str:
        """The role's stored verifier is one of the new password; where this machine reaches the database
        through its published port, a login with the new password works and one with the old is refused
        (password authentication: inside the official image's container 127.0.0.1 is trusted). Returns what
        was proven."""
        engine = self.engine
        observed = engine.observe(target, engine.record(target.project))
        stored = engine.sql(target).run_sql(target, observed, database.stored_verifier_sql(role),
                                         purpose="check-password")
        if not database.password_matches(stored, new):
            raise ProvisionError(f"after ALTER ROLE, role {role!r} does not have the new password")
        found = dbaccess.host_access(engine.backend, target, engine.known(observed, engine.record(target.project)),
                                     engine.prepare(target, observed, create=False))
        if found is None:
            return "the role's stored password is the new one (its SCRAM verifier, checked in the database)"
        if not database.can_log_in(found.host, found.port, role, new, found.dbname):
            raise ProvisionError(f"the new password of role {role!r} does not log in through {found.host}:{found.port}")
        if database.can_log_in(found.host, found.port, role, old, found.dbname):
            raise ProvisionError(f"the old password of role {role!r} still logs in through {found.host}:{found.port}")
        return (f"through {found.host}:{found.port} the new password logs in and the old one is refused")

    # --- what a killed run left under way ------------------------------------------------------
    def recover(self, target: Target) -> list[str]:
        """Finish or undo the data operations a killed run left under way (the state's pending.json): a
        restore still running in the db container is stopped (its one transaction rolls back) or, when it had
        committed, checked against its manifest; a rotation rolls forward when the role has the new password
        already, else back. The lock is held by the caller; what was done is reported and returned."""
        pending = self.engine.store.read_pending(target.env, target.project)
        if not pending:
            return []
        observed, prepared = self.engine.running(target)
        done = []
        if "restore" in pending:
            done.append(self._recover_restore(target, observed, prepared, pending["restore"]))
        if PENDING_VOLUME in pending:
            done.append(self._recover_volume(target, pending[PENDING_VOLUME]))
        if "rotate" in pending:
            done.append(self._recover_rotation(target, observed, prepared, pending["rotate"]))
        for line in done:
            self.engine.reporter.step(target.project, line)
        return done

    def _recover_restore(self, target: Target, observed: Observed, prepared: Prepared, facts: dict[str, Any]) -> str:
        engine = self.engine
        stop = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pg_restore' "
                "AND pid <> pg_backend_pid();\n")
        left = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_restore';\n"
        stopped = int(engine.sql(target).run_sql(target, observed, stop, purpose="recover-restore").strip() or 0)
        deadline = engine.clock() + 30
        while (int(engine.sql(target).run_sql(target, observed, left, purpose="recover-restore").strip() or 0)
               and engine.clock() < deadline):
            engine.sleep(0.2)
        access = self.access(target, observed, prepared)
        try:
            expected = backups.read(Path(str(facts.get("from")))).row_counts
        except BackupError:
            expected = None
        counts = database.row_counts(access, self.runner)
        self.reload_api(target, observed, prepared, access)
        engine.store.write_pending(target.env, target.project, "restore", None)
        name = Path(str(facts.get("from"))).name
        if expected is not None and all(counts.get(t) == n for t, n in expected.items()):
            return f"an interrupted restore of {name} had committed: its row counts match its manifest"
        safety = facts.get("safety")
        return (f"an interrupted restore of {name} never committed" + (" (stopped it)" if stopped else "") +
                ": the database is as it was" + (f"; its safety backup is {safety}" if safety else ""))

    def _recover_volume(self, target: Target, facts: dict[str, Any]) -> str:
        """A restore --from killed before its switch was recorded: its new volume (and any one-off server left on
        it) is deleted; the project never left its own data. Killed after: the record has it (restore --rollback)."""
        engine = self.engine
        key, name = str(facts.get("volume_key") or ""), Path(str(facts.get("from"))).name
        record = engine.record(target.project)
        known = record is not None and key in (record.db_volume, str(record.kept_data.get("new_volume_key", "")))
        if key and not known:
            with contextlib.suppress(NotSupported):
                engine.capability(DroppingVolumes, target).drop_kept(target, key)
        engine.store.write_pending(target.env, target.project, PENDING_VOLUME, None)
        if known:
            return f"an interrupted restore of {name} had recorded its switch to the volume {key}"
        return (f"an interrupted restore of {name} never switched: its new volume ({key}) was deleted; the data is "
                f"as it was")

    def _recover_rotation(self, target: Target, observed: Observed, prepared: Prepared, facts: dict[str, Any]) -> str:
        engine = self.engine
        name, new = str(facts.get("secret")), Secret(str(facts.get("value")))
        old = prepared.secrets.get(name)
        if name != "DB_PASSWORD":
            self.store_secret(target, prepared, name, new)
            engine.store.write_pending(target.env, target.project, "rotate", None)
            engine.converge(target, Operation("rotate"))
            return f"an interrupted rotation of {name} is finished: the new value is stored and applied"
        owner = str(target.spec.variables["db_user"])
        stored = engine.sql(target).run_sql(target, observed, database.stored_verifier_sql(owner),
                                         purpose="recover-rotation")
        if old is not None and database.password_matches(stored, old) and not database.password_matches(stored, new):
            engine.store.write_pending(target.env, target.project, "rotate", None)
            return f"an interrupted rotation of {name} never reached the database: the old password stays"
        if not database.password_matches(stored, new):  # neither: make it the one we know
            engine.sql(target).run_sql(target, observed, database.password_statement(owner, new)[0],
                                    purpose="recover-rotation")
        self.store_secret(target, prepared, name, new)
        engine.store.write_pending(target.env, target.project, "rotate", None)
        return f"an interrupted rotation of {name} is finished: the new password is stored"

    def pause(self, step: str) -> None:
        """Tests only (tests/integration/test_upgrade_kill.py): with PROVISION_TEST_PAUSE_AT=<step> in the
        environment, the run writes `<state dir>/paused-at-<step>` and sleeps at that step, to be killed there."""
        if os.environ.get(PAUSE_AT) == step:
            (self.engine.store.root / f"paused-at-{step}").write_text(f"{os.getpid()}\n")
            time.sleep(600)
