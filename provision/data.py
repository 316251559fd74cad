"""The service layer's data verbs: backup, restore, the restoring half of clone, PostgreSQL major upgrades
and secret rotation. Each runs under the project's locks for its whole length (one `_operation` of the
Provisioner with `shared`: the state directory's, and the backend's that every runner sees, so that no deploy
from another machine comes between two of its steps; its own converge re-enters it), writes its history line, and leaves the project as it was when it fails: a restore runs in one transaction after a
safety backup, an upgrade keeps the old data until --finalize, a rotation puts the old password back.

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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import backups, database, hints
from .clock import utc_now, utc_stamp
from .commands import Runner, SubprocessRunner
from .errors import (
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
from .model import Observed, Prepared, Target
from .render import DEFAULT_DB_VOLUME
from .results import ProjectResult
from .secrets import Secret, generate_secret
from .state import ProjectRecord

if TYPE_CHECKING:
    from .service import Operation, Provisioner

DUMP_TIMEOUT = 3600.0  # seconds for one pg_dump or pg_restore
ROTATABLE = ("db_password", "jwt_secret")
# the states of an upgrade-db in the record's kept_data (see DataLifecycle.upgrade)
SWITCHING, DONE, ROLLING_BACK, FINALIZING = "switching", "done", "rolling back", "finalizing"
PAUSE_AT = "PROVISION_TEST_PAUSE_AT"  # tests only: DataLifecycle._pause


class DataLifecycle:
    """Data verbs for one env; `service` is its Provisioner (locks, records, backends), `runner` runs the
    client tools (a fake in unit tests)."""

    def __init__(self, service: Provisioner, runner: Runner | None = None) -> None:
        self.service = service
        self.runner = runner or SubprocessRunner()

    # --- reaching the database ---------------------------------------------------------------
    def access(self, target: Target, observed: Observed, prepared: Prepared) -> database.DbAccess:
        """The db container's own tools (their major is the server's) where the backend can exec in it, else
        this machine's tools through the published port; NotSupported saying what would work."""
        try:
            return self.container_access(target, prepared)
        except NotSupported as cannot_exec:
            found = self.host_access(target, observed, prepared)
            if found is None:
                raise NotSupported(
                    f"{cannot_exec} And the db of {target.project!r} is not published to this machine: set "
                    f"variables.db_public_port (a port of the server reachable from here) in envs/{target.env}.yml, "
                    f"run provision, and PostgreSQL's tools on this machine do it through that port") from None
            return found

    def container_access(self, target: Target, prepared: Prepared, *, tty: bool = False) -> database.DbAccess:
        """The tools inside the running db container (`exec_argv`; NotSupported where the backend cannot)."""
        environment = self._environment(prepared)
        prefix = self.service.backend.exec_argv(target, "db", [], env_names=tuple(environment), tty=tty)
        return database.DbAccess(tuple(prefix), "127.0.0.1", 5432, *self._role(target), environment,
                                 where="in the db container")

    def host_access(self, target: Target, observed: Observed, prepared: Prepared) -> database.DbAccess | None:
        """This machine's tools through the db's published port; None when it is not published here."""
        record = self.service.record(target.project)
        endpoints = self.service.backend.endpoints(target, self.service._known(observed, record), prepared)
        if endpoints.db_url is None or endpoints.db_url_scope not in ("host", "public"):
            return None
        url = urlsplit(endpoints.db_url.reveal())
        host, port = url.hostname or "127.0.0.1", url.port or 5432
        return database.DbAccess((), host, port, *self._role(target), self._environment(prepared),
                                 where=f"from this machine ({host}:{port})")

    @staticmethod
    def _role(target: Target) -> tuple[str, str]:
        return str(target.spec.variables["db_user"]), str(target.spec.variables["db_name"])

    @staticmethod
    def _environment(prepared: Prepared) -> dict[str, Secret]:
        password = prepared.secrets.get("DB_PASSWORD")
        return {"PGPASSWORD": password} if password is not None else {}

    def running(self, target: Target) -> tuple[Observed, Prepared]:
        """What runs and the project's secrets, once its db is seen running (ProvisionError saying to start it)."""
        record = self.service.record(target.project)
        observed = self.service._observe(target, record)
        db = observed.services.get("db")
        if db is None or not db.running:
            raise ProvisionError(f"the db of {target.project!r} is not running in env {target.env!r}: run "
                                 f"{hints.command('start', env=target.env, project=target.project)} first")
        return observed, self.service._prepare(target, observed, create=False)

    def _running_db(self, target: Target) -> tuple[Observed, Prepared, database.DbAccess]:
        observed, prepared = self.running(target)
        return observed, prepared, self.access(target, observed, prepared)

    # --- backup ---------------------------------------------------------------------------
    def folder(self, project: str) -> Path:
        return backups.directory(self.service.store.root, self.service.env, project)

    def backup(self, project: str, *, out: Path | None = None, keep: int | None = None,
               label: str = "") -> ProjectResult:
        """A pg_dump (custom format) of the project's database with its manifest; with `keep`, older backups
        beyond the newest `keep` are deleted after this one succeeded."""
        target = self.service.known_target(project)
        with self.service._operation(target, "backup", shared=True) as op:
            self.recover(target)
            _, _, access = self._running_db(target)
            made = self._dump(target, access, out=out, label=label)
            op.changed = True
            pruned = backups.prune(self.folder(project), keep) if keep is not None and out is None else []
        messages = [f"wrote {made.path} ({made.manifest['size']} bytes, PostgreSQL {made.manifest['server_major']}, "
                    f"{len(made.row_counts or {})} tables, dumped {access.where})"]
        messages += [f"deleted old backup {p.name}" for p in pruned]
        return self._result(target, "backup", "backed up", op, messages,
                            {**made.to_dict(), "pruned": [str(p) for p in pruned]})

    def before_delete(self, target: Target, observed: Observed, op: Operation) -> backups.Backup | None:
        """destroy --delete-data's backup (the lock is held): the database is started again if it does not run
        (a stopped or destroyed project's kept data), then dumped; ConfirmationRequired when it cannot be dumped
        from here, naming what works. None when the project has no data at all."""
        service = self.service
        db = observed.services.get("db")
        running = db is not None and db.running
        if not running and not observed.exists and observed.kept_data is None:
            return None
        try:
            access = self.access(target, observed, service._prepare(target, observed, create=False))
        except NotSupported as exc:  # before anything is started or changed
            raise ConfirmationRequired(f"no pg_dump can be written before deleting the data of {target.project!r}: "
                                       f"{exc}. Or delete without a dump (CLI: --no-backup; HTTP: ?no_backup=true)") from None
        except ProvisionError:
            if running:
                raise
        if not running:
            service.reporter.step(target.project, "starting the database to dump it before its data is deleted")
            service._converge(target, op)
            op.action = "destroy --delete-data"
            observed = service._observe(target, service.record(target.project))
            access = self.access(target, observed, service._prepare(target, observed, create=False))
        return self._dump(target, access, label="before-delete")

    def listing(self, project: str) -> list[backups.Backup]:
        """The project's backups in the state directory, newest first."""
        self.service.target(project)  # the name is validated
        return backups.listing(self.folder(project))

    def _dump(self, target: Target, access: database.DbAccess, *, out: Path | None = None,
              label: str = "") -> backups.Backup:
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
        self.service.reporter.step(target.project, f"dumping the database {access.where}")
        counts = database.row_counts(access, self.runner)
        database.dump(access, self.runner, path, timeout=DUMP_TIMEOUT)
        header = database.read_header(path)
        record = self.service.record(target.project)
        image = (record.images.get("db") if record is not None else None) or target.images.db
        return backups.write_manifest(path, {
            "project": target.project, "env": target.env, "backend": self.service.backend.name,
            "created_at": utc_now(), "label": label, "server_version": header.server_version,
            "server_major": header.major, "pg_dump_version": header.dump_version, "database": header.database,
            "image": image, "size": path.stat().st_size, "sha256": backups.sha256(path), "row_counts": counts,
        })

    # --- restore --------------------------------------------------------------------------
    def choose(self, project: str, source: str) -> backups.Backup:
        """The backup `source` names (a path, or `latest`: the newest existing now), checked before anything
        changes: a whole custom-format dump whose checksum matches its manifest."""
        if source == backups.LATEST:
            found = self.listing(project)
            if not found:
                raise DumpRefused(f"{project!r} in env {self.service.env!r} has no backup in {self.folder(project)}: "
                                  f"run {hints.command('backup', env=self.service.env, project=project)} first")
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
        """Replace the project's database with a backup: a safety backup first, then pg_restore --clean
        --if-exists in one transaction as the owner role (never a superuser: a dump is code), the API told to
        reload its schema, the manifest's row counts verified (a mismatch puts the safety backup back). A dump
        without a manifest, or whose manifest names another project or env, needs `force`."""
        if not yes:
            raise ConfirmationRequired(f"restore replaces the database of {project!r} in env {self.service.env!r} "
                                       f"(a safety backup is taken first): add --yes to confirm")
        chosen = self.choose(project, source)
        if not force:
            self._check_provenance(project, chosen)
        target = self.service.known_target(project)
        with self.service._operation(target, "restore", shared=True) as op:
            self.recover(target)
            observed, prepared, access = self._running_db(target)
            safety = self._restore_checked(target, observed, prepared, access, chosen, op, safety=True)
        messages = [f"restored {chosen.path.name}", f"row counts match the manifest ({len(chosen.row_counts or {})} tables)"
                    if chosen.row_counts is not None else "the dump has no manifest: row counts were not verified"]
        if safety is not None:
            messages.insert(0, f"safety backup of the database as it was: {safety.path}")
        return self._result(target, "restore", "restored", op, messages, {
            "restored_from": str(chosen.path), "safety_backup": str(safety.path) if safety else None,
            "row_counts": chosen.row_counts})

    def _check_provenance(self, project: str, chosen: backups.Backup) -> None:
        """DumpRefused for a dump that does not say it is this project's, in this env (`--force` skips it)."""
        made_for = (chosen.manifest.get("project"), chosen.manifest.get("env"))
        force = "add --force to restore it anyway (a dump is code: restore only dumps you trust); nothing was changed"
        if not chosen.manifest:
            raise DumpRefused(f"{chosen.path.name} has no manifest ({chosen.manifest_path.name}), so nothing says "
                              f"which project it is of: {force}")
        if made_for != (project, self.service.env):
            raise DumpRefused(f"{chosen.path.name} is a dump of project {made_for[0]!r} in env {made_for[1]!r}, not "
                              f"of {project!r} in env {self.service.env!r}: {hints.command('clone')} copies between "
                              f"projects; or {force}")

    def restore_into_new(self, project: str, chosen: backups.Backup) -> ProjectResult:
        """clone's second half: restore `chosen` into a project just created (no safety backup: it is empty)."""
        target = self.service.known_target(project)
        with self.service._operation(target, "restore", shared=True) as op:
            observed, prepared, access = self._running_db(target)
            self._restore_checked(target, observed, prepared, access, chosen, op, safety=False)
        return self._result(target, "restore", "restored", op, [f"restored {chosen.path.name}"],
                            {"restored_from": str(chosen.path), "row_counts": chosen.row_counts})

    def _restore_checked(self, target: Target, observed: Observed, prepared: Prepared, access: database.DbAccess,
                         chosen: backups.Backup, op: Operation, *, safety: bool) -> backups.Backup | None:
        header = database.read_header(chosen.path)
        server = database.server_major(access, self.runner)
        if header.major > server:
            raise DumpRefused(f"{chosen.path.name} was dumped from PostgreSQL {header.major}, newer than the server "
                              f"of {target.project!r} (PostgreSQL {server}): nothing was changed")
        kept = self._dump(target, access, label="safety") if safety else None
        op.changed = True
        self.service.reporter.step(target.project, f"restoring {chosen.path.name} {access.where}")
        # a kill of this process does not stop pg_restore in the container: the next run finds this mark
        self.service.store.write_pending(target.env, target.project, "restore", {
            "from": str(chosen.path), "safety": str(kept.path) if kept else None, "at": utc_now()})
        self._pause("restore-marked")
        try:
            database.restore(access, self.runner, chosen.path, timeout=DUMP_TIMEOUT)
        except CommandFailed as exc:
            self.service.store.write_pending(target.env, target.project, "restore", None)
            raise with_note(exc, f"The database of {target.project!r} is as it was.") from exc
        self._pause("restore-committed")
        self.service.store.write_pending(target.env, target.project, "restore", None)
        self._reload_api(target, observed, prepared, access)
        expected = chosen.row_counts
        if expected is not None:
            counts = database.row_counts(access, self.runner)
            differ = {t: (n, counts.get(t)) for t, n in expected.items() if counts.get(t) != n}
            if differ:
                shown = ", ".join(f"{t}: {n} expected, {got} found" for t, (n, got) in sorted(differ.items())[:5])
                if kept is not None:
                    database.restore(access, self.runner, kept.path, timeout=DUMP_TIMEOUT)
                    self._reload_api(target, observed, prepared, access)
                raise BackupError(f"after restoring {chosen.path.name} the row counts differ from its manifest "
                                  f"({shown}); " + (f"the safety backup {kept.path.name} was put back"
                                                    if kept is not None else "the clone is not a faithful copy"))
        return kept

    def _reload_api(self, target: Target, observed: Observed, prepared: Prepared, access: database.DbAccess) -> None:
        """PostgREST reloads its schema cache on NOTIFY pgrst (its db-channel); then the API must answer."""
        database.query(access, self.runner, "NOTIFY pgrst, 'reload schema'")
        record = self.service.record(target.project)
        self.service.backend.wait(target, self.service._known(observed, record), prepared,
                                  timeout=self.service.config.health.timeout)

    # --- PostgreSQL major upgrade ---------------------------------------------------------------
    # An upgrade never copies, empties or overwrites the old data directory: the stack moves to a new volume
    # (a new compose key, the record's db_volume) on the new image, where the dump taken just before is
    # restored and its row counts verified; the old volume stays as it was, --rollback moves the stack back to
    # it, --finalize deletes it. kept_data["state"] is written before each step that moves the stack or deletes
    # a volume, so whatever kills a run, the next one finishes or undoes that step from the record, and
    # provision refuses in between (`unfinished_upgrade`):
    #   switching     moving to the new volume and image: upgrade-db --yes finishes it, --rollback --yes undoes it
    #   done          the new major serves the restored rows; the old volume is kept
    #   rolling back  moving back to the old volume and image, then deleting the new one: --rollback --yes
    #   finalizing    deleting the old volume: --finalize --yes
    def upgrade(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Move the project's data to the db image's PostgreSQL major: back up, record the upgrade, start the
        new server on a new volume, restore, verify row counts. The old volume is never written; any failure
        moves the stack back to it and to the old image. An upgrade a killed run left half done is finished."""
        if not yes:
            raise ConfirmationRequired(f"upgrade-db restarts {project!r} in env {self.service.env!r} on a new PostgreSQL "
                                       f"major and a new data volume, restoring a dump there (the old volume is kept "
                                       f"as it is): add --yes to confirm")
        service = self.service
        target = service.known_target(project)
        service._preflight(target)  # the new image is on the engine (pulled when missing) before anything changes
        with service._operation(target, "upgrade-db", shared=True) as op:
            record = service.record(project)
            kept = upgrade_facts(record)
            if kept is not None:
                if kept["state"] != SWITCHING:
                    raise ProjectConflict(self._unfinished(target, kept) or (
                        f"{project!r} has kept data from an earlier upgrade ({kept['volume']}): finish that one first "
                        f"with {_command(target, '--finalize', '--yes')}"
                        + (" (or --rollback --yes)" if kept["state"] == DONE else "")))
                if target.images.db != kept["new_image"]:
                    raise ProjectConflict(f"{project!r} was being upgraded to {kept['new_image']}, but "
                                          f"{service.config.relpath} names {target.images.db} now "
                                          f"({target.spec.key('images.db')}): "
                                          f"{_command(target, '--rollback', '--yes')} undoes that upgrade (or name "
                                          f"{kept['new_image']} again, and this finishes it)")
                service.reporter.step(project, f"finishing the upgrade to PostgreSQL {kept['new_major']} that a run "
                                               f"left half done")
                made = self._resume_dump(target, kept)
            else:
                try:
                    majors = service.majors(target, record, strict=True)
                except NotSupported as exc:
                    copy = hints.command("clone", env=target.env, project=project, to=f"{project}-copy",
                                         set=f"images.db={target.images.db}")
                    raise NotSupported(
                        f"{exc}, so {project!r} cannot be upgraded in place on the {service.backend.name} backend: "
                        f"clone it onto the new image ({copy}), check the copy, then move your clients to it") from None
                if record is None or majors is None or majors[0] == majors[1]:
                    message = (f"nothing to upgrade: the data directory and {target.images.db} are both "
                               f"PostgreSQL {majors[0]}" if majors else
                               "nothing to upgrade: the db image is the one last applied (or the project has no data)")
                    return self._result(target, "upgrade-db", "running", op, [message], {})
                kept, made = self._begin_upgrade(target, record, majors)
            op.changed = True
            downtime = self._switch(target, kept, made, op, resumed=record is not None and bool(record.kept_data))
        old_major, new_major = kept["major"], kept["new_major"]
        messages = [f"upgraded PostgreSQL {old_major} → {new_major}; row counts match ({len(made.row_counts or {})} "
                    f"tables)", f"the API was down {downtime:.1f} s",
                    f"the PostgreSQL {old_major} data is kept as it was in volume {kept['volume']} (and "
                    f"{made.path.name}): {_command(target, '--finalize', '--yes')} deletes it, --rollback --yes returns to it"]
        return self._result(target, "upgrade-db", "running", op, messages, {
            "from_major": old_major, "to_major": new_major, "kept_volume": kept["volume"],
            "volume": service.backend.find_volume(target, str(kept["new_volume_key"])), "backup": str(made.path),
            "downtime_s": round(downtime, 3), "row_counts": made.row_counts})

    def _begin_upgrade(self, target: Target, record: ProjectRecord,
                       majors: tuple[int, int]) -> tuple[dict[str, Any], backups.Backup]:
        """Dump the old server, then record the upgrade (state `switching`, the record's db_volume the new key)."""
        old_major, new_major = majors
        old_image = str(record.images.get("db"))
        old_target = with_db_image(target, old_image)
        _, _, access = self._running_db(old_target)
        made = self._dump(old_target, access, label=f"before-upgrade-to-{new_major}")
        self._pause("dumped")
        old_key = record.db_volume or DEFAULT_DB_VOLUME
        new_key = f"{DEFAULT_DB_VOLUME}_pg{new_major}_{utc_stamp().lower()}"
        kept = {"state": SWITCHING, "label": f"pg{old_major}", "image": old_image, "major": old_major,
                "volume_key": old_key, "volume": self.service.backend.find_volume(old_target, old_key) or old_key,
                "new_image": target.images.db, "new_major": new_major, "new_volume_key": new_key,
                "backup": str(made.path), "at": utc_now()}
        self._record_upgrade(target, kept, db_volume=new_key)
        return kept, made

    def _resume_dump(self, target: Target, kept: dict[str, Any]) -> backups.Backup:
        """The dump a half-done upgrade restores: the recorded one, unless the old server still runs on the old
        data (the run was killed before the stack moved), which may have been written since: then a new one."""
        service = self.service
        old_target = with_db_image(target, str(kept["image"]))
        serving = self._serving_major(old_target)
        record = service.record(target.project)
        if serving is None and record is not None and record.images.get("db") == kept["image"]:
            raise ProvisionError(f"the db of {target.project!r} is not running and the upgrade had not moved it yet: "
                                 f"{hints.command('start', env=target.env, project=target.project)} and then "
                                 f"{_command(target, '--yes')} finishes the upgrade (or {_command(target, '--rollback', '--yes')} "
                                 f"undoes it)")
        if serving != kept["major"]:
            return backups.read(Path(str(kept["backup"])))
        _, _, access = self._running_db(old_target)
        made = self._dump(old_target, access, label=f"before-upgrade-to-{kept['new_major']}")
        kept["backup"] = str(made.path)
        self._record_upgrade(target, kept)
        return made

    def _switch(self, target: Target, kept: dict[str, Any], made: backups.Backup, op: Operation, *,
                resumed: bool) -> float:
        """Start the new major on the new volume (the record says `switching`), restore `made` there (`resumed`: unless
        its row counts are there already) and verify them, then record the upgrade `done`; the seconds the API was
        down. A failure moves the stack back to the old volume and image; an interrupt leaves the record as it is."""
        service, project = self.service, target.project
        old_major = kept["major"]
        self._pause("switching")
        down_since = time.monotonic()
        try:
            service.reporter.step(project, f"starting PostgreSQL {kept['new_major']} on a new volume "
                                           f"({kept['new_volume_key']}); the PostgreSQL {old_major} volume "
                                           f"{kept['volume']} is left as it is")
            service._converge(target, op, major_change=True)
            op.action = "upgrade-db"
            self._pause("restoring")
            observed, prepared, access = self._running_db(target)
            if not (resumed and made.row_counts and database.row_counts(access, self.runner) == made.row_counts):
                self._restore_checked(target, observed, prepared, access, made, op, safety=False)
            self._pause("restored")
        except Interrupted:
            raise
        except ProvisionError as exc:
            service.reporter.step(project, f"the upgrade failed: returning to PostgreSQL {old_major}")
            try:
                self._return_to_kept(with_db_image(target, str(kept["image"])), kept)
            except Interrupted:
                raise
            except ProvisionError as back:
                raise with_note(exc, f"Returning to the old data failed too ({back}): it is in volume "
                                     f"{kept['volume']} as it was (and in {made.path}); {_command(target, '--rollback', '--yes')} "
                                     f"tries again") from exc
            raise with_note(exc, f"{project!r} runs PostgreSQL {old_major} again on its old data ({kept['image']}); "
                                 f"nothing was lost.") from exc
        downtime = time.monotonic() - down_since
        self._record_upgrade(target, {**kept, "state": DONE, "at": utc_now()})
        return downtime

    def rollback(self, project: str, *, yes: bool = False, backup: bool = True) -> ProjectResult:
        """Return to the data and image an upgrade kept (from any state a killed run left it in); what was written
        on the new major is saved in a backup first unless `backup` is False."""
        if not yes:
            raise ConfirmationRequired(f"upgrade-db --rollback returns {project!r} to the data kept before its "
                                       f"upgrade; what was written since is saved in a backup first: add --yes")
        service = self.service
        target = service.known_target(project)
        with service._operation(target, "upgrade-db --rollback", shared=True) as op:
            kept = self._kept(target)
            if kept["state"] == FINALIZING:
                raise ProjectConflict(f"{project!r} in env {target.env!r}: an upgrade-db --finalize did not finish, so "
                                      f"the kept volume {kept['volume']} may be deleted already: nothing to return to. "
                                      f"{_command(target, '--finalize', '--yes')} finishes it")
            since = None
            serving = self._serving_major(target) if backup and kept["state"] in (SWITCHING, DONE) else None
            if serving is not None and serving != kept["major"]:  # the upgraded db: save what was written on it
                _, _, access = self._running_db(target)
                try:
                    since = self._dump(target, access, label="before-rollback")
                except CommandFailed as exc:
                    raise with_note(exc, "Nothing was rolled back: what was written since the upgrade could not be "
                                         "saved (a pg_dump older than the server?); install a client of the "
                                         "server's version, or roll back without it: --no-backup") from exc
            op.changed = True
            self._return_to_kept(with_db_image(target, str(kept["image"])), kept)
        return self._result(target, "upgrade-db --rollback", "running", op, [
            f"back on PostgreSQL {kept['major']} ({kept['image']}) with the data kept before the upgrade",
            f"what was written since the upgrade is in {since.path}" if since else
            "nothing written since the upgrade was saved (--no-backup, or no upgraded db was running)",
            _image_note(target, str(kept["image"]))], {"backup": str(since.path) if since else None})

    def finalize(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Delete the data an upgrade kept (the old volume), once the upgrade is done."""
        if not yes:
            raise ConfirmationRequired(f"upgrade-db --finalize deletes the old data {project!r} kept since its upgrade "
                                       f"(its backup file stays): add --yes to confirm")
        service = self.service
        target = service.known_target(project)
        with service._operation(target, "upgrade-db --finalize", shared=True) as op:
            kept = self._kept(target)
            unfinished = self._unfinished(target, kept)
            if unfinished is not None:
                raise ProjectConflict(unfinished)
            self._record_upgrade(target, {**kept, "state": FINALIZING})
            op.changed = True
            self._pause("finalizing")
            try:
                dropped = service.backend.drop_kept(target, str(kept["volume_key"]))
                done = f"deleted the kept volume {dropped}" if dropped else "the kept volume was already gone"
            except NotSupported as exc:
                dropped, done = None, f"{exc}: the volume {kept['volume']} stays"
            self._record_upgrade(target, {})
        return self._result(target, "upgrade-db --finalize", "running", op,
                            [done, f"the backup {kept.get('backup')} stays"], {"deleted_volume": dropped})

    def unfinished_upgrade(self, target: Target, record: ProjectRecord | None) -> str | None:
        """Why `target` must not be applied now (one line naming the command that finishes or undoes it): an
        upgrade-db, or its rollback, that a run left half done, its stack maybe between two volumes. None if none."""
        kept = upgrade_facts(record)
        return self._unfinished(target, kept) if kept is not None else None

    @staticmethod
    def _unfinished(target: Target, kept: dict[str, Any]) -> str | None:
        where = f"{target.project!r} in env {target.env!r}"
        if kept["state"] == SWITCHING:
            return (f"{where}: an upgrade-db from PostgreSQL {kept['major']} to {kept['new_major']} did not finish (its "
                    f"stack may be between the old volume {kept['volume']} and the new one, key "
                    f"{kept['new_volume_key']}); nothing was changed. {_command(target, '--yes')} finishes it, "
                    f"{_command(target, '--rollback', '--yes')} undoes it")
        if kept["state"] == ROLLING_BACK:
            return (f"{where}: an upgrade-db --rollback to PostgreSQL {kept['major']} did not finish; nothing was "
                    f"changed. {_command(target, '--rollback', '--yes')} finishes it")
        return None

    def _kept(self, target: Target) -> dict[str, Any]:
        kept = upgrade_facts(self.service.record(target.project))
        if kept is None:
            raise ProvisionError(f"{target.project!r} in env {target.env!r} has no data kept by an upgrade")
        return kept

    def _record_upgrade(self, target: Target, kept: dict[str, Any], **changes: Any) -> None:
        """Write the upgrade's facts (and `changes`) to the record, before the step they announce."""
        service = self.service
        record = service.record(target.project)
        if record is None:
            raise ProvisionError(f"{target.project!r} in env {target.env!r} has no record (state.json) any more")
        service._write(record.evolve(kept_data=kept, **changes), record)

    def _serving_major(self, target: Target) -> int | None:
        """The PostgreSQL major of the project's running db; None when none runs or answers."""
        try:
            _, _, access = self._running_db(target)
            return database.server_major(access, self.runner)
        except Interrupted:
            raise
        except ProvisionError:
            return None

    def _return_to_kept(self, old_target: Target, kept: dict[str, Any]) -> None:
        """Move the stack back to the kept volume and the old image (the lock is held), then delete the upgrade's new
        volume where the backend can (Coolify keeps it with the service). Recorded first (`rolling back`), so a
        killed run is finished by --rollback; then the record forgets the upgrade."""
        service = self.service
        if service.backend.find_volume(old_target, str(kept["volume_key"])) is None:  # never a new, empty one
            raise ProjectConflict(f"the PostgreSQL {kept['major']} volume {kept['volume']} that upgrade-db kept for "
                                  f"{old_target.project!r} is gone: nothing to return to, nothing was changed "
                                  f"({_command(old_target, '--finalize', '--yes')} forgets it)")
        self._record_upgrade(old_target, {**kept, "state": ROLLING_BACK}, db_volume=str(kept["volume_key"]))
        self._pause("rolling-back")
        from .service import Operation

        service._converge(old_target, Operation("rollback"), major_change=True)
        self._pause("dropping-new")
        new_key = str(kept.get("new_volume_key") or "")
        if new_key and new_key != kept["volume_key"]:
            with contextlib.suppress(NotSupported):
                service.backend.drop_kept(old_target, new_key)
        self._record_upgrade(old_target, {})

    def _pause(self, step: str) -> None:
        """Tests only (tests/integration/test_upgrade_kill.py): with PROVISION_TEST_PAUSE_AT=<step> in the
        environment, the run writes `<state dir>/paused-at-<step>` and sleeps at that step, to be killed there."""
        if os.environ.get(PAUSE_AT) == step:
            (self.service.store.root / f"paused-at-{step}").write_text(f"{os.getpid()}\n")
            time.sleep(600)

    # --- move to another server -------------------------------------------------------------
    def move(self, project: str, to_server: str, *, yes: bool = False) -> ProjectResult:
        """Move the project, data included, to `to_server` (one of coolify.servers): back up, set the old stack
        aside (stopped, renamed, its volume kept), create the project on the new server with the same secrets,
        restore, verify the row counts. The old stack stays until `move_finalize`. Any failure removes the new
        stack and puts the old one back, started."""
        service = self.service
        if not yes:
            raise ConfirmationRequired(f"move stops {project!r} in env {service.env!r} while its data is copied to "
                                       f"{to_server!r}: add --yes to confirm")
        if not service.backend.spreads_stacks:
            raise NotSupported(f"{service.config.relpath}: move needs coolify.servers (several servers to move "
                               f"between); this env has one place for every stack")
        listed = [s.name for s in service.config.coolify.servers or []]
        if to_server not in listed:
            raise ConfigError(f"--to-server {to_server!r} is not listed in coolify.servers of "
                              f"{service.config.relpath}: one of {', '.join(listed)}")
        target = service.known_target(project)
        with service._operation(target, "move", shared=True) as op:
            observed, _, access = self._running_db(target)
            if observed.server == to_server:
                return self._result(target, "move", "running", op, [f"already on server {to_server}"],
                                    {"server": to_server})
            origin = observed.server or "its old server"
            made = self._dump(target, access, label=f"move-to-{to_server}")
            aside, secrets = service.backend.set_aside(target, observed, utc_stamp().lower())
            op.changed = True
            service.store.write_secrets(target.env, project, secrets)  # the new stack is made with the same ones
            try:
                moved = service.target(project, server=to_server)
                service._converge(moved, op)
                new_observed, new_prepared, new_access = self._running_db(moved)
                self._restore_checked(moved, new_observed, new_prepared, new_access, made, op, safety=False)
            except KeyboardInterrupt:
                self._undo_move(target, aside, op)
                raise
            except ProvisionError as exc:
                try:
                    self._undo_move(target, aside, op)
                except ProvisionError as undo:
                    raise with_note(exc, f"Putting the old stack back failed too ({undo}): it is set aside as "
                                         f"{aside!r} in Coolify with its data; the backup {made.path} stays") from exc
                raise with_note(exc, f"{project!r} is back where it was ({origin}), "
                                     f"with its data; the backup {made.path} stays") from exc
        return self._result(target, "move", "moved", op, [
            f"moved from {origin} to {to_server}: {sum((made.row_counts or {}).values())} "
            f"rows in {len(made.row_counts or {})} tables verified",
            f"the old stack stays stopped on {origin} as {aside!r} with its data: "
            f"{hints.command('move', '--finalize', '--yes', env=target.env, project=project)} deletes it"],
            {"from_server": observed.server, "to_server": to_server, "set_aside": aside, "backup": str(made.path),
             "row_counts": made.row_counts})

    def _undo_move(self, target: Target, aside: str, op: Operation) -> None:
        """Remove a half-made moved stack and put the one set aside back (best effort: each step is tried)."""
        service = self.service
        with contextlib.suppress(ProvisionError):
            half = service._observe(target, None)
            if half.exists:
                service.backend.destroy(target, half, delete_data=True)
        service.backend.put_back(target, aside)
        with contextlib.suppress(ProvisionError):
            service._converge(service.target(target.project), op)  # waits until it answers, records it again

    def move_finalize(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Delete, with its data, what a move left stopped on the old server."""
        service = self.service
        if not yes:
            raise ConfirmationRequired(f"move --finalize deletes the stack a move left behind for {project!r}, with "
                                       f"its data: add --yes to confirm")
        target = service.known_target(project)
        with service._operation(target, "move --finalize", shared=True) as op:
            dropped = service.backend.drop_set_aside(target)
            op.changed = bool(dropped)
        messages = [f"deleted {name!r} and its volumes" for name in dropped] or ["nothing was left behind by a move"]
        return self._result(target, "move --finalize", "finalized", op, messages, {"deleted": dropped})

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
            raise ConfirmationRequired(f"rotate replaces the {secret} of {project!r} in env {self.service.env!r}: "
                                       f"add --yes to confirm")
        service = self.service
        target = service.known_target(project)
        name = secret.upper()
        with service._operation(target, f"rotate {secret}", shared=True) as op:
            self.recover(target)
            observed, prepared = self.running(target)
            old = prepared.secrets.get(name)
            if old is None:
                raise ProvisionError(f"the current {name} of {project!r} is unknown here: nothing was changed")
            new = generate_secret()
            owner = str(target.spec.variables["db_user"])
            service.store.write_pending(target.env, project, "rotate",
                                        {"secret": name, "value": new.reveal(), "at": utc_now()})
            op.changed = True
            self._pause("rotate-pending")
            try:
                if secret == "db_password":
                    service.backend.run_sql(target, observed, database.password_statement(owner, new)[0], user=owner,
                                            purpose="rotate-password")
                self._pause("rotate-altered")
                self._store_secret(target, prepared, name, new)
                service.store.write_pending(target.env, project, "rotate", None)
                service._converge(target, op)
                op.action = f"rotate {secret}"
                proof = self._check_password(target, owner, new, old) if secret == "db_password" else ""
            except ProvisionError as exc:
                service.reporter.step(project, f"the rotation failed: putting the old {name} back")
                try:
                    if secret == "db_password":
                        now = service._observe(target, service.record(project))
                        service.backend.run_sql(target, now, database.password_statement(owner, old)[0],
                                                purpose="rotate-password-back")
                    self._store_secret(target, prepared, name, old)
                    service.store.write_pending(target.env, project, "rotate", None)
                    service._converge(target, op)
                except ProvisionError as back:
                    raise with_note(exc, f"Putting the old {name} back failed too: {back}. The next run of "
                                         f"provision finishes or undoes the rotation") from exc
                raise with_note(exc, f"The old {name} is back in use.") from exc
        messages = [f"rotated {name}; the API answers"]
        if secret == "db_password":
            messages.append(proof)
        else:
            messages.append("tokens signed with the old JWT secret stop working now: issue new ones")
        return self._result(target, f"rotate {secret}", "running", op, messages, {"secret": secret})

    def _store_secret(self, target: Target, prepared: Prepared, name: str, value: Secret) -> None:
        """The service's copy (local: what the compose env file is written from) and the backend's own
        (Coolify: the service's variables), before the stack is re-applied."""
        secrets = {**prepared.secrets, name: value}
        self.service.store.write_secrets(target.env, target.project, secrets)
        observed = self.service._observe(target, self.service.record(target.project))
        self.service.backend.store_secrets(target, observed, secrets)

    def _check_password(self, target: Target, role: str, new: Secret, old: Secret) -> str:
        """The role's stored verifier is one of the new password; where this machine reaches the database
        through its published port, a login with the new password works and one with the old is refused
        (password authentication: inside the official image's container 127.0.0.1 is trusted). Returns what
        was proven."""
        service = self.service
        observed = service._observe(target, service.record(target.project))
        stored = service.backend.run_sql(target, observed, database.stored_verifier_sql(role),
                                         purpose="check-password")
        if not database.password_matches(stored, new):
            raise ProvisionError(f"after ALTER ROLE, role {role!r} does not have the new password")
        found = self.host_access(target, observed, service._prepare(target, observed, create=False))
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
        pending = self.service.store.read_pending(target.env, target.project)
        if not pending:
            return []
        observed, prepared = self.running(target)
        done = []
        if "restore" in pending:
            done.append(self._recover_restore(target, observed, prepared, pending["restore"]))
        if "rotate" in pending:
            done.append(self._recover_rotation(target, observed, prepared, pending["rotate"]))
        for line in done:
            self.service.reporter.step(target.project, line)
        return done

    def _recover_restore(self, target: Target, observed: Observed, prepared: Prepared, facts: dict[str, Any]) -> str:
        service = self.service
        stop = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pg_restore' "
                "AND pid <> pg_backend_pid();\n")
        left = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_restore';\n"
        stopped = int(service.backend.run_sql(target, observed, stop, purpose="recover-restore").strip() or 0)
        deadline = service.clock() + 30
        while (int(service.backend.run_sql(target, observed, left, purpose="recover-restore").strip() or 0)
               and service.clock() < deadline):
            service.sleep(0.2)
        access = self.access(target, observed, prepared)
        try:
            expected = backups.read(Path(str(facts.get("from")))).row_counts
        except BackupError:
            expected = None
        counts = database.row_counts(access, self.runner)
        self._reload_api(target, observed, prepared, access)
        service.store.write_pending(target.env, target.project, "restore", None)
        name = Path(str(facts.get("from"))).name
        if expected is not None and all(counts.get(t) == n for t, n in expected.items()):
            return f"an interrupted restore of {name} had committed: its row counts match its manifest"
        safety = facts.get("safety")
        return (f"an interrupted restore of {name} never committed" + (" (stopped it)" if stopped else "") +
                ": the database is as it was" + (f"; its safety backup is {safety}" if safety else ""))

    def _recover_rotation(self, target: Target, observed: Observed, prepared: Prepared, facts: dict[str, Any]) -> str:
        service = self.service
        name, new = str(facts.get("secret")), Secret(str(facts.get("value")))
        old = prepared.secrets.get(name)
        if name != "DB_PASSWORD":
            self._store_secret(target, prepared, name, new)
            service.store.write_pending(target.env, target.project, "rotate", None)
            from .service import Operation

            service._converge(target, Operation("rotate"))
            return f"an interrupted rotation of {name} is finished: the new value is stored and applied"
        owner = str(target.spec.variables["db_user"])
        stored = service.backend.run_sql(target, observed, database.stored_verifier_sql(owner),
                                         purpose="recover-rotation")
        if old is not None and database.password_matches(stored, old) and not database.password_matches(stored, new):
            service.store.write_pending(target.env, target.project, "rotate", None)
            return f"an interrupted rotation of {name} never reached the database: the old password stays"
        if not database.password_matches(stored, new):  # neither: make it the one we know
            service.backend.run_sql(target, observed, database.password_statement(owner, new)[0],
                                    purpose="recover-rotation")
        self._store_secret(target, prepared, name, new)
        service.store.write_pending(target.env, target.project, "rotate", None)
        return f"an interrupted rotation of {name} is finished: the new password is stored"

    def _result(self, target: Target, action: str, status: str, op: Operation, messages: list[str],
                details: dict[str, Any]) -> ProjectResult:
        for line in messages:
            self.service.reporter.step(target.project, line)
        return ProjectResult(project=target.project, env=target.env, backend=self.service.backend.name,
                             status=status, changed=op.changed, action=action, declared=target.spec.declared,
                             messages=tuple(messages), duration=op.duration, details=details)


def with_db_image(target: Target, image: str) -> Target:
    """`target` with another db image (an upgrade's old one), everything else the same."""
    return Target(target.config, replace(target.spec, images=target.images.model_copy(update={"db": image})))


def upgrade_facts(record: ProjectRecord | None) -> dict[str, Any] | None:
    """The record's kept_data (what an upgrade-db keeps and where it is), None without one. A record written
    before upgrades recorded their steps holds a finished upgrade (state `done`); on the local backend its old
    data was copied to `<volume>-<label>`, i.e. the compose key `<key>-<label>`, and its new data is in `<key>`."""
    if record is None or not record.kept_data:
        return None
    kept = dict(record.kept_data)
    if "state" not in kept:
        key, label = str(kept.get("volume_key") or DEFAULT_DB_VOLUME), str(kept.get("label", ""))
        kept.update(state=DONE, volume_key=key, new_volume_key=record.db_volume or DEFAULT_DB_VOLUME)
        if label and str(kept.get("volume", "")).endswith(f"_{key}-{label}"):
            kept["volume_key"] = f"{key}-{label}"
    return kept


def _image_note(target: Target, old_image: str) -> str:
    """After a rollback to `old_image`: whether the env file names it already, else which key to set back."""
    key, shown = target.spec.key("images.db"), target.config.relpath
    if target.images.db == old_image:
        return f"{shown} names {old_image} ({key}): provision keeps the project on it"
    return (f"{shown} still names {target.images.db} ({key}): set it back to {old_image}, or provision will refuse "
            f"until the next upgrade-db")


def _command(target: Target, *flags: str) -> str:
    """The upgrade-db command of `target`, as a hint (backquoted, in the program's name)."""
    return hints.command("upgrade-db", *flags, env=target.env, project=target.project)
