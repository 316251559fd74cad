"""The service layer's data verbs: backup, restore, the restoring half of clone, PostgreSQL major upgrades
and secret rotation. Each runs under the project's lock (one `_operation` of the Provisioner), writes its
history line, and leaves the project as it was when it fails: a restore runs in one transaction after a
safety backup, an upgrade keeps the old data until --finalize, a rotation puts the old password back.

PostgreSQL's own client tools do the work (provision.database), run in the project's db container where
the backend can exec (local), else on this machine through the db's published port (Coolify with
`variables.db_public_port`); where neither exists the verb says so and what works.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import backups, database
from .commands import Runner, SubprocessRunner
from .errors import (
    BackupError,
    CommandFailed,
    ConfigError,
    ConfirmationRequired,
    DumpRefused,
    NotSupported,
    ProvisionError,
    with_note,
)
from .model import Observed, Prepared, Target
from .render import DEFAULT_DB_VOLUME
from .results import ProjectResult
from .secrets import Secret, generate_secret
from .state import utc_now, utc_stamp

if TYPE_CHECKING:
    from .service import Provisioner, _Operation

DUMP_TIMEOUT = 3600.0  # seconds for one pg_dump or pg_restore
ROTATABLE = ("db_password", "jwt_secret")


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
                                 f"`provision start --env={target.env} --project={target.project}` first")
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
        with self.service._operation(target, "backup") as op:
            _, _, access = self._running_db(target)
            made = self._dump(target, access, out=out, label=label)
            op.changed = True
            pruned = backups.prune(self.folder(project), keep) if keep is not None and out is None else []
        messages = [f"wrote {made.path} ({made.manifest['size']} bytes, PostgreSQL {made.manifest['server_major']}, "
                    f"{len(made.row_counts or {})} tables, dumped {access.where})"]
        messages += [f"deleted old backup {p.name}" for p in pruned]
        return self._result(target, "backup", "backed up", op, messages,
                            {**made.to_dict(), "pruned": [str(p) for p in pruned]})

    def before_delete(self, target: Target, observed: Observed, op: _Operation) -> backups.Backup | None:
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
            out = out.expanduser().resolve()
            if out.exists():
                raise ConfigError(f"--out {out}: the file exists; pick a new name (a backup never overwrites)")
            if not out.parent.is_dir():
                raise ConfigError(f"--out {out}: no directory {out.parent}")
        path = out or backups.new_path(self.folder(target.project))
        self.service.reporter.step(target.project, f"dumping the database {access.where}")
        counts = database.row_counts(access, self.runner)
        database.dump(access, self.runner, path, timeout=DUMP_TIMEOUT)
        header = database.read_header(path)
        record = self.service.record(target.project)
        image = (record.images.get("db") if record is not None else None) or target.config.images.db
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
                                  f"run `provision backup --env={self.service.env} --project={project}` first")
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

    def restore(self, project: str, source: str, *, yes: bool = False) -> ProjectResult:
        """Replace the project's database with a backup: a safety backup first, then pg_restore --clean
        --if-exists in one transaction, the API told to reload its schema, the manifest's row counts
        verified (a mismatch puts the safety backup back)."""
        if not yes:
            raise ConfirmationRequired(f"restore replaces the database of {project!r} in env {self.service.env!r} "
                                       f"(a safety backup is taken first): add --yes to confirm")
        chosen = self.choose(project, source)
        target = self.service.known_target(project)
        with self.service._operation(target, "restore") as op:
            observed, prepared, access = self._running_db(target)
            safety = self._restore_checked(target, observed, prepared, access, chosen, op, safety=True)
        messages = [f"restored {chosen.path.name}", f"row counts match the manifest ({len(chosen.row_counts or {})} tables)"
                    if chosen.row_counts is not None else "the dump has no manifest: row counts were not verified"]
        if safety is not None:
            messages.insert(0, f"safety backup of the database as it was: {safety.path}")
        return self._result(target, "restore", "restored", op, messages, {
            "restored_from": str(chosen.path), "safety_backup": str(safety.path) if safety else None,
            "row_counts": chosen.row_counts})

    def restore_into_new(self, project: str, chosen: backups.Backup) -> ProjectResult:
        """clone's second half: restore `chosen` into a project just created (no safety backup: it is empty)."""
        target = self.service.known_target(project)
        with self.service._operation(target, "restore") as op:
            observed, prepared, access = self._running_db(target)
            self._restore_checked(target, observed, prepared, access, chosen, op, safety=False)
        return self._result(target, "restore", "restored", op, [f"restored {chosen.path.name}"],
                            {"restored_from": str(chosen.path), "row_counts": chosen.row_counts})

    def _restore_checked(self, target: Target, observed: Observed, prepared: Prepared, access: database.DbAccess,
                         chosen: backups.Backup, op: _Operation, *, safety: bool) -> backups.Backup | None:
        header = database.read_header(chosen.path)
        server = database.server_major(access, self.runner)
        if header.major > server:
            raise DumpRefused(f"{chosen.path.name} was dumped from PostgreSQL {header.major}, newer than the server "
                              f"of {target.project!r} (PostgreSQL {server}): nothing was changed")
        kept = self._dump(target, access, label="safety") if safety else None
        op.changed = True
        self.service.reporter.step(target.project, f"restoring {chosen.path.name} {access.where}")
        try:
            database.restore(access, self.runner, chosen.path, timeout=DUMP_TIMEOUT)
        except CommandFailed as exc:
            raise with_note(exc, f"The database of {target.project!r} is as it was.") from exc
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
    def upgrade(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Move the project's data to the db image's PostgreSQL major: back up, stop, keep the old data
        volume aside (named with its major), start the new server on an empty data directory, restore,
        verify row counts. Any failure after the stop returns to the old data and image."""
        if not yes:
            raise ConfirmationRequired(f"upgrade-db stops {project!r} in env {self.service.env!r} while its data is "
                                       f"moved to a new PostgreSQL major (the old data is kept): add --yes to confirm")
        service = self.service
        target = service.known_target(project)
        with service._operation(target, "upgrade-db") as op:
            record = service.record(project)
            if record is not None and record.kept_data:
                raise ProvisionError(f"{project!r} has kept data from an earlier upgrade "
                                     f"({record.kept_data.get('volume')}): finish that one first with "
                                     f"`provision upgrade-db --env={target.env} --project={project} --finalize --yes` "
                                     f"(or --rollback --yes)")
            try:
                majors = service.majors(target, record, strict=True)
            except NotSupported as exc:
                raise NotSupported(
                    f"{exc}, so {project!r} cannot be upgraded in place on the {service.backend.name} backend: clone it "
                    f"onto the new image (`provision clone --env={target.env} --project={project} --to=<new name> "
                    f"--set images.db={target.config.images.db}`), check the copy, then move your clients to it") from None
            if majors is None or majors[0] == majors[1]:
                message = (f"nothing to upgrade: the data directory and {target.config.images.db} are both "
                           f"PostgreSQL {majors[0]}" if majors else
                           "nothing to upgrade: the db image is the one last applied (or the project has no data)")
                return self._result(target, "upgrade-db", "running", op, [message], {})
            old_major, new_major = majors
            old_image = str(record.images.get("db")) if record is not None else target.config.images.db
            old_target = with_db_image(target, old_image)
            observed, prepared, access = self._running_db(old_target)
            made = self._dump(old_target, access, label=f"before-upgrade-to-{new_major}")
            op.changed = True
            label = f"pg{old_major}"
            record = service.record(project)
            old_key = (record.db_volume if record is not None else "") or DEFAULT_DB_VOLUME
            new_key = old_key
            down_since = time.monotonic()
            if service.backend.copies_data:
                service.reporter.step(project, f"stopping; keeping the PostgreSQL {old_major} data aside")
                service.backend.control(old_target, observed, "stop")
            else:  # the old volume stays untouched; the stack moves to a new, empty one
                new_key = f"{DEFAULT_DB_VOLUME}_pg{new_major}_{utc_stamp().lower()}"
            kept = service.backend.keep_data(old_target, label, old_image, old_key)
            kept_data = {"label": label, "volume": kept, "volume_key": old_key, "image": old_image,
                         "major": old_major, "backup": str(made.path), "at": utc_now()}
            record = service.record(project)
            if record is not None:
                record = service._write(record.evolve(kept_data=kept_data, db_volume=new_key), record)
            try:
                service.reporter.step(project, f"starting PostgreSQL {new_major} on a new data directory")
                service._converge(target, op, major_change=True)
                op.action = "upgrade-db"
                _, prepared, access = self._running_db(target)
                observed = service._observe(target, service.record(project))
                self._restore_checked(target, observed, prepared, access, made, op, safety=False)
            except ProvisionError as exc:
                service.reporter.step(project, f"the upgrade failed: returning to PostgreSQL {old_major}")
                try:
                    self._return_to_kept(old_target, kept_data, drop=True)
                except ProvisionError as back:
                    raise with_note(exc, f"Returning to the old data failed too ({back}): its copy is in volume "
                                         f"{kept} and {made.path}; `provision upgrade-db --rollback --yes` tries "
                                         f"again") from exc
                raise with_note(exc, f"{project!r} runs PostgreSQL {old_major} again on its old data ({old_image}); "
                                     f"nothing was lost.") from exc
            downtime = time.monotonic() - down_since
        messages = [f"upgraded PostgreSQL {old_major} → {new_major}; row counts match ({len(made.row_counts or {})} "
                    f"tables)", f"the API was down {downtime:.1f} s",
                    f"the PostgreSQL {old_major} data is kept in volume {kept} (and {made.path.name}): "
                    f"`provision upgrade-db --env={target.env} --project={project} --finalize --yes` deletes it, "
                    f"--rollback --yes returns to it"]
        return self._result(target, "upgrade-db", "running", op, messages, {
            "from_major": old_major, "to_major": new_major, "kept_volume": kept, "backup": str(made.path),
            "downtime_s": round(downtime, 3), "row_counts": made.row_counts})

    def rollback(self, project: str, *, yes: bool = False, backup: bool = True) -> ProjectResult:
        """Return to the data and image an upgrade kept; what was written since the upgrade is saved in a
        backup first unless `backup` is False."""
        if not yes:
            raise ConfirmationRequired(f"upgrade-db --rollback returns {project!r} to the data kept before its "
                                       f"upgrade; what was written since is saved in a backup first: add --yes")
        service = self.service
        target = service.known_target(project)
        with service._operation(target, "upgrade-db --rollback") as op:
            kept_data = self._kept(target)
            since = None
            observed = service._observe(target, service.record(project))
            db = observed.services.get("db")
            if backup and db is not None and db.running:  # save what was written since the upgrade
                _, _, access = self._running_db(target)
                try:
                    since = self._dump(target, access, label="before-rollback")
                except CommandFailed as exc:
                    raise with_note(exc, "Nothing was rolled back: what was written since the upgrade could not be "
                                         "saved (a pg_dump older than the server?); install a client of the "
                                         "server's version, or roll back without it: --no-backup") from exc
            op.changed = True
            old_target = with_db_image(target, str(kept_data["image"]))
            self._return_to_kept(old_target, kept_data, drop=True)
        return self._result(target, "upgrade-db --rollback", "running", op, [
            f"back on PostgreSQL {kept_data['major']} ({kept_data['image']}) with the data kept before the upgrade",
            f"what was written since the upgrade is in {since.path}" if since else
            "nothing written since the upgrade was saved (--no-backup, or the db was not running)",
            f"envs/{target.env}.yml still names {target.config.images.db}: set images.db back, or provision will "
            f"refuse until the next upgrade-db"], {"backup": str(since.path) if since else None})

    def finalize(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Delete the data an upgrade kept aside."""
        if not yes:
            raise ConfirmationRequired(f"upgrade-db --finalize deletes the old data {project!r} kept since its upgrade "
                                       f"(its backup file stays): add --yes to confirm")
        service = self.service
        target = service.known_target(project)
        with service._operation(target, "upgrade-db --finalize") as op:
            kept_data = self._kept(target)
            try:
                dropped = service.backend.drop_kept(target, str(kept_data["label"]))
                done = f"deleted the kept volume {dropped}" if dropped else "the kept volume was already gone"
            except NotSupported as exc:
                dropped, done = None, f"{exc}: the volume {kept_data.get('volume')} stays"
            record = service.record(project)
            if record is not None:
                service._write(record.evolve(kept_data={}), record)
            op.changed = True
        return self._result(target, "upgrade-db --finalize", "running", op,
                            [done, f"the backup {kept_data.get('backup')} stays"], {"deleted_volume": dropped})

    def _kept(self, target: Target) -> dict[str, Any]:
        record = self.service.record(target.project)
        if record is None or not record.kept_data:
            raise ProvisionError(f"{target.project!r} in env {target.env!r} has no data kept by an upgrade")
        return dict(record.kept_data)

    def _return_to_kept(self, old_target: Target, kept_data: dict[str, Any], *, drop: bool) -> None:
        """Put the kept data back (local: copied back into the stopped stack's volume; Coolify: the stack moves
        back to the old volume) and apply the old image (the lock is held); with `drop`, a local kept copy is
        then deleted. The record forgets the upgrade."""
        service = self.service
        label = str(kept_data["label"])
        if service.backend.copies_data:
            observed = service._observe(old_target, service.record(old_target.project))
            if observed.any_running:
                service.backend.control(old_target, observed, "stop")
            service.backend.return_data(old_target, label, str(kept_data["image"]))
        record = service.record(old_target.project)
        if record is not None:
            service._write(record.evolve(db_volume=str(kept_data.get("volume_key") or "")), record)
        from .service import _Operation

        service._converge(old_target, _Operation("rollback"), major_change=True)
        if drop and service.backend.copies_data:
            service.backend.drop_kept(old_target, label)
        record = service.record(old_target.project)
        if record is not None:
            service._write(record.evolve(kept_data={}), record)

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
        with service._operation(target, "move") as op:
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
            f"`provision move --env={target.env} --project={project} --finalize --yes` deletes it"],
            {"from_server": observed.server, "to_server": to_server, "set_aside": aside, "backup": str(made.path),
             "row_counts": made.row_counts})

    def _undo_move(self, target: Target, aside: str, op: _Operation) -> None:
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
        with service._operation(target, "move --finalize") as op:
            dropped = service.backend.drop_set_aside(target)
            op.changed = bool(dropped)
        messages = [f"deleted {name!r} and its volumes" for name in dropped] or ["nothing was left behind by a move"]
        return self._result(target, "move --finalize", "finalized", op, messages, {"deleted": dropped})

    # --- rotation ---------------------------------------------------------------------------
    def rotate(self, project: str, secret: str, *, yes: bool = False) -> ProjectResult:
        """A new db_password (ALTER ROLE in the running database, stored, the stack re-applied, the API and a
        connection with the new password checked; the old one is put back on any failure) or jwt_secret."""
        if secret not in ROTATABLE:
            raise ConfigError(f"--secret {secret!r}: use one of {', '.join(ROTATABLE)}")
        if not yes:
            raise ConfirmationRequired(f"rotate replaces the {secret} of {project!r} in env {self.service.env!r}: "
                                       f"add --yes to confirm")
        service = self.service
        target = service.known_target(project)
        name = secret.upper()
        with service._operation(target, f"rotate {secret}") as op:
            observed, prepared = self.running(target)
            old = prepared.secrets.get(name)
            if old is None:
                raise ProvisionError(f"the current {name} of {project!r} is unknown here: nothing was changed")
            new = generate_secret()
            role = str(target.spec.variables["db_user"])
            statement, verifier = database.password_statement(role, new)
            if secret == "db_password":
                service.backend.run_sql(target, observed, statement)
            op.changed = True
            try:
                self._store_secret(target, prepared, name, new)
                service._converge(target, op)
                op.action = f"rotate {secret}"
                proof = self._check_password(target, role, verifier, new, old) if secret == "db_password" else ""
            except ProvisionError as exc:
                service.reporter.step(project, f"the rotation failed: putting the old {name} back")
                try:
                    if secret == "db_password":
                        now = service._observe(target, service.record(project))
                        service.backend.run_sql(target, now, database.password_statement(role, old)[0])
                    self._store_secret(target, prepared, name, old)
                    service._converge(target, op)
                except ProvisionError as back:
                    raise with_note(exc, f"Putting the old {name} back failed too: {back}") from exc
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

    @staticmethod
    def _with_password(access: database.DbAccess, password: Secret) -> database.DbAccess:
        return replace(access, environment={**access.environment, "PGPASSWORD": password})

    def _check_password(self, target: Target, role: str, verifier: str, new: Secret, old: Secret) -> str:
        """The role's stored password is exactly the new verifier (so the new password logs in and the old
        does not); where this machine reaches the database, also a TCP connection (password auth, unlike the
        container's local socket) with each. Returns what was proven."""
        service = self.service
        observed = service._observe(target, service.record(target.project))
        if service.backend.run_sql(target, observed, database.verifier_check(role, verifier)).strip() != "t":
            raise ProvisionError(f"after ALTER ROLE, role {role!r} does not have the new password")
        try:
            access = self.access(target, observed, service._prepare(target, observed, create=False))
        except NotSupported:
            return "the role's stored password is the new one (its SCRAM verifier, checked in the database)"
        database.query(self._with_password(access, new), self.runner, "select 1")
        try:
            database.query(self._with_password(access, old), self.runner, "select 1")
        except CommandFailed:
            return "a connection with the new password works and one with the old is refused"
        raise ProvisionError(f"the old password of role {role!r} still connects after the rotation")

    def _result(self, target: Target, action: str, status: str, op: _Operation, messages: list[str],
                details: dict[str, Any]) -> ProjectResult:
        for line in messages:
            self.service.reporter.step(target.project, line)
        return ProjectResult(project=target.project, env=target.env, backend=self.service.backend.name,
                             status=status, changed=op.changed, action=action, declared=target.spec.declared,
                             messages=tuple(messages), duration=op.duration, details=details)


def with_db_image(target: Target, image: str) -> Target:
    """`target` with another db image (an upgrade's old one), everything else the same."""
    images = target.config.images.model_copy(update={"db": image})
    return Target(replace(target.config, images=images), target.spec)
