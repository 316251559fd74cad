"""upgrade-db: move a project's data to another PostgreSQL major, and its --rollback and --finalize.

An upgrade never copies, empties or overwrites the old data directory: the stack moves to a new volume (a new
compose key, the record's db_volume) on the new image, where the dump taken just before is restored and its
row counts verified; the old volume stays as it was, --rollback moves the stack back to it, --finalize deletes
it. The states it records are in upgrade_state.py; the dump and the checked restore are data.py's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..backends.base import DataVolumes
from ..core.errors import (
    CommandFailed,
    ConfirmationRequired,
    Interrupted,
    NotSupported,
    ProjectConflict,
    ProvisionError,
    with_note,
)
from ..core.model import Target
from ..core.render import DEFAULT_DB_VOLUME
from ..core.results import ProjectResult
from ..infra import database, hints
from ..infra.clock import utc_now, utc_stamp
from ..state import backups
from ..state.records import ProjectRecord
from . import upgrade_state as states
from .data import DataVerbs
from .engine import Engine, Operation
from .kept import KINDS_UPGRADE


class Upgrades:
    """upgrade-db for one env on `engine`, with the dump and restore of `data`."""

    def __init__(self, engine: Engine, data: DataVerbs) -> None:
        self.engine = engine
        self.data = data
        self.kept = data.kept

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
            raise ConfirmationRequired(f"upgrade-db restarts {project!r} in env {self.engine.env!r} on a new PostgreSQL "
                                       f"major and a new data volume, restoring a dump there (the old volume is kept "
                                       f"as it is): add --yes to confirm")
        engine = self.engine
        target = engine.known_target(project)
        engine.preflight(target)  # the new image is on the engine (pulled when missing) before anything changes
        with engine.operation(target, "upgrade-db", shared=True) as op:
            record = engine.record(project)
            kept = states.upgrade_facts(record)
            if kept is not None:
                if kept["state"] != states.SWITCHING or kept.get("kind") in states.RESTORES:  # a restore's: its own verb
                    raise ProjectConflict(states.unfinished(target, kept) or (
                        f"{project!r} has kept data from an earlier {states.what_kept(kept)} ({kept['volume']}): finish "
                        f"that one first with {states.kept_command(target, kept, '--finalize', '--yes')}"
                        + (" (or --rollback --yes)" if kept["state"] == states.DONE else "")))
                if target.images.db != kept["new_image"]:
                    raise ProjectConflict(f"{project!r} was being upgraded to {kept['new_image']}, but "
                                          f"{engine.config.relpath} names {target.images.db} now "
                                          f"({target.spec.key('images.db')}): "
                                          f"{states.command(target, '--rollback', '--yes')} undoes that upgrade (or name "
                                          f"{kept['new_image']} again, and this finishes it)")
                engine.reporter.step(project, f"finishing the upgrade to PostgreSQL {kept['new_major']} that a run "
                                               f"left half done")
                made = self._resume_dump(target, kept)
            else:
                try:
                    majors = engine.majors(target, record, strict=True)
                except NotSupported as exc:
                    copy = hints.command("clone", env=target.env, project=project, to=f"{project}-copy",
                                         set=f"images.db={target.images.db}")
                    raise NotSupported(
                        f"{exc}, so {project!r} cannot be upgraded in place on the {engine.backend.name} backend: "
                        f"clone it onto the new image ({copy}), check the copy, then move your clients to it") from None
                if record is None or majors is None or majors[0] == majors[1]:
                    message = (f"nothing to upgrade: the data directory and {target.images.db} are both "
                               f"PostgreSQL {majors[0]}" if majors else
                               "nothing to upgrade: the db image is the one last applied (or the project has no data)")
                    return self.engine.result(target, "upgrade-db", "running", op, [message], {})
                kept, made = self._begin_upgrade(target, record, majors)
            op.changed = True
            downtime = self._switch(target, kept, made, op, resumed=record is not None and bool(record.kept_data))
        old_major, new_major = kept["major"], kept["new_major"]
        messages = [f"upgraded PostgreSQL {old_major} → {new_major}; row counts match ({len(made.row_counts or {})} "
                    f"tables)", f"the API was down {downtime:.1f} s",
                    f"the PostgreSQL {old_major} data is kept as it was in volume {kept['volume']} (and "
                    f"{made.path.name}): {states.command(target, '--finalize', '--yes')} deletes it, --rollback --yes returns to it"]
        return self.engine.result(target, "upgrade-db", "running", op, messages, {
            "from_major": old_major, "to_major": new_major, "kept_volume": kept["volume"],
            "volume": engine.capability(DataVolumes, target).find_volume(target, str(kept["new_volume_key"])), "backup": str(made.path),
            "downtime_s": round(downtime, 3), "row_counts": made.row_counts})

    def _begin_upgrade(self, target: Target, record: ProjectRecord,
                       majors: tuple[int, int]) -> tuple[dict[str, Any], backups.Backup]:
        """Dump the old server, then record the upgrade (state `switching`, the record's db_volume the new key)."""
        old_major, new_major = majors
        old_image = str(record.images.get("db"))
        old_target = states.with_db_image(target, old_image)
        _, _, access = self.data.running_db(old_target)
        made = self.data.dump(old_target, access, label=f"before-upgrade-to-{new_major}")
        self.data.pause("dumped")
        old_key = record.db_volume or DEFAULT_DB_VOLUME
        new_key = f"{DEFAULT_DB_VOLUME}_pg{new_major}_{utc_stamp().lower()}"
        kept = {"state": states.SWITCHING, "label": f"pg{old_major}", "image": old_image, "major": old_major,
                "volume_key": old_key, "volume": self.engine.capability(DataVolumes, old_target).find_volume(old_target, old_key) or old_key,
                "new_image": target.images.db, "new_major": new_major, "new_volume_key": new_key,
                "backup": str(made.path), "at": utc_now()}
        self.kept.record(target, kept, db_volume=new_key)
        return kept, made

    def _resume_dump(self, target: Target, kept: dict[str, Any]) -> backups.Backup:
        """The dump a half-done upgrade restores: the recorded one, unless the old server still runs on the old
        data (the run was killed before the stack moved), which may have been written since: then a new one."""
        engine = self.engine
        old_target = states.with_db_image(target, str(kept["image"]))
        serving = self._serving_major(old_target)
        record = engine.record(target.project)
        if serving is None and record is not None and record.images.get("db") == kept["image"]:
            raise ProvisionError(f"the db of {target.project!r} is not running and the upgrade had not moved it yet: "
                                 f"{hints.command('start', env=target.env, project=target.project)} and then "
                                 f"{states.command(target, '--yes')} finishes the upgrade (or {states.command(target, '--rollback', '--yes')} "
                                 f"undoes it)")
        if serving != kept["major"]:
            return backups.read(Path(str(kept["backup"])))
        _, _, access = self.data.running_db(old_target)
        made = self.data.dump(old_target, access, label=f"before-upgrade-to-{kept['new_major']}")
        kept["backup"] = str(made.path)
        self.kept.record(target, kept)
        return made

    def _switch(self, target: Target, kept: dict[str, Any], made: backups.Backup, op: Operation, *,
                resumed: bool) -> float:
        """Start the new major on the new volume (the record says `switching`), restore `made` there (`resumed`: unless
        its row counts are there already) and verify them, then record the upgrade `done`; the seconds the API was
        down. A failure moves the stack back to the old volume and image; an interrupt leaves the record as it is."""
        engine, project = self.engine, target.project
        old_major = kept["major"]
        self.data.pause("switching")
        down_since = time.monotonic()
        try:
            engine.reporter.step(project, f"starting PostgreSQL {kept['new_major']} on a new volume "
                                           f"({kept['new_volume_key']}); the PostgreSQL {old_major} volume "
                                           f"{kept['volume']} is left as it is")
            engine.converge(target, op, major_change=True)
            op.action = "upgrade-db"
            self.data.pause("restoring")
            observed, prepared, access = self.data.running_db(target)
            if not (resumed and made.row_counts and database.row_counts(access, self.data.runner) == made.row_counts):
                self.data.restore_checked(target, observed, prepared, access, made, op, safety=False)
            self.data.pause("restored")
        except Interrupted:
            raise
        except ProvisionError as exc:
            engine.reporter.step(project, f"the upgrade failed: returning to PostgreSQL {old_major}")
            try:
                self.kept.go_back(states.with_db_image(target, str(kept["image"])), kept)
            except Interrupted:
                raise
            except ProvisionError as back:
                raise with_note(exc, f"Returning to the old data failed too ({back}): it is in volume "
                                     f"{kept['volume']} as it was (and in {made.path}); {states.command(target, '--rollback', '--yes')} "
                                     f"tries again") from exc
            raise with_note(exc, f"{project!r} runs PostgreSQL {old_major} again on its old data ({kept['image']}); "
                                 f"nothing was lost.") from exc
        downtime = time.monotonic() - down_since
        self.kept.record(target, {**kept, "state": states.DONE, "at": utc_now()})
        return downtime

    def rollback(self, project: str, *, yes: bool = False, backup: bool = True) -> ProjectResult:
        """Return to the data and image an upgrade kept (from any state a killed run left it in); what was written
        on the new major is saved in a backup first unless `backup` is False."""
        if not yes:
            raise ConfirmationRequired(f"upgrade-db --rollback returns {project!r} to the data kept before its "
                                       f"upgrade; what was written since is saved in a backup first: add --yes")

        def save(target: Target, kept: dict[str, Any]) -> backups.Backup | None:
            serving = self._serving_major(target) if backup and kept["state"] in (states.SWITCHING, states.DONE) else None
            if serving is None or serving == kept["major"]:
                return None
            _, _, access = self.data.running_db(target)  # the upgraded db: save what was written on it
            try:
                return self.data.dump(target, access, label="before-rollback")
            except CommandFailed as exc:
                raise with_note(exc, "Nothing was rolled back: what was written since the upgrade could not be "
                                     "saved (a pg_dump older than the server?); install a client of the "
                                     "server's version, or roll back without it: --no-backup") from exc

        target, op, kept, since = self.kept.roll_back(project, "upgrade-db --rollback", KINDS_UPGRADE, save=save)
        return self.engine.result(target, "upgrade-db --rollback", "running", op, [
            f"back on PostgreSQL {kept['major']} ({kept['image']}) with the data kept before the upgrade",
            f"what was written since the upgrade is in {since.path}" if since else
            "nothing written since the upgrade was saved (--no-backup, or no upgraded db was running)",
            states.image_note(target, str(kept["image"]))], {"backup": str(since.path) if since else None})

    def finalize(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Delete the data an upgrade kept (the old volume), once the upgrade is done."""
        if not yes:
            raise ConfirmationRequired(f"upgrade-db --finalize deletes the old data {project!r} kept since its upgrade "
                                       f"(its backup file stays): add --yes to confirm")
        target, op, kept, dropped, done = self.kept.drop(project, "upgrade-db --finalize", KINDS_UPGRADE)
        return self.engine.result(target, "upgrade-db --finalize", "running", op,
                            [done, f"the backup {kept.get('backup')} stays"], {"deleted_volume": dropped})

    def _serving_major(self, target: Target) -> int | None:
        """The PostgreSQL major of the project's running db; None when none runs or answers."""
        try:
            _, _, access = self.data.running_db(target)
            return database.server_major(access, self.data.runner)
        except Interrupted:
            raise
        except ProvisionError:
            return None
