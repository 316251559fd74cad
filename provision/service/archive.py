"""Continuous archiving's verbs: `backups` (each project's recoverable window and backup health, `--check`) and
`restore --to-time`; `restore --rollback` and `--finalize` (of a restore --to-time or --from).

A point-in-time restore never writes the project's data volume: the backend restores the archive into a NEW volume
with a one-off container (recovery to the target, promotion, row counts), then the stack moves to it the way
upgrade-db moves to a new major (the record's kept_data, kind `restore`; kept.py's KeptData),
and the old volume is kept until --finalize, --rollback returning to it. A target outside the recoverable window is
refused before anything changes, naming the window."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ..backends.base import (
    Archives,
    DataVolumes,
    DroppingVolumes,
    OffsiteCopies,
    RestoresArchive,
    RestoresInStack,
    RunsSql,
)
from ..core import archiving, roles
from ..core.archiving import ArchiveStatus, Restored, RestoreRequest
from ..core.errors import (
    CommandFailed,
    ConfigError,
    ConfirmationRequired,
    Interrupted,
    NotSupported,
    ProjectConflict,
    ProvisionError,
    with_note,
)
from ..core.model import Observed, Target
from ..core.render import DEFAULT_DB_VOLUME
from ..core.results import ProjectResult
from ..infra import hints
from ..infra.clock import utc_now, utc_stamp
from ..infra.database import quote_identifier
from ..state import history
from ..state.records import ProjectRecord
from . import upgrade_state as states
from .engine import Engine, Operation
from .kept import KINDS_RESTORE
from .upgrade import Upgrades

# a restore in the stack runs inside Coolify's start job, which is killed after 600 s (app/Jobs/CoolifyTask.php:33,
# $timeout; app/Actions/Service/StartService.php:43 runs `docker compose up` in it): recovery gets 540 s of that
IN_STACK_WAIT = 540
SETTLING = 4.0 * archiving.POLL_SECONDS  # seconds a restore waits for a restarted archiver to report its window


class OutsideWindow(ConfigError):
    """A restore target the archive cannot reach: refused before anything changed."""


@dataclass(frozen=True)
class ProjectArchive:
    """One project's line of `backups`: its archive status, None where continuous archiving is off."""

    project: str
    status: ArchiveStatus | None
    last_drill: Mapping[str, Any] | None = None  # the last `verify` history line (service/drills.py), None: never

    def to_dict(self) -> dict[str, object]:
        drill = ({key: self.last_drill.get(key) for key in ("time", "result", "duration_s", "detail")}
                 if self.last_drill is not None else None)
        return {"project": self.project, "continuous": self.status is not None,
                **(self.status.to_dict() if self.status is not None else {}), "last_drill": drill}


class ArchiveVerbs:
    """backups and restore --to-time for one env on `engine`; the volume switch is `upgrades`'."""

    def __init__(self, engine: Engine, upgrades: Upgrades,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.upgrades = upgrades
        self.kept = upgrades.kept
        self.now = now

    # --- reading --------------------------------------------------------------------------------------------
    def status(self, project: str) -> ProjectArchive:
        """The project's archive as it is now (NotSupported where the backend cannot read it); None when
        continuous archiving is off for it."""
        target = self.engine.known_target(project)
        if not target.spec.backup.continuous:
            return ProjectArchive(project, None)
        return ProjectArchive(project, self._read(target), self._drills().get(project))

    def listing(self, project: str | None = None) -> list[ProjectArchive]:
        """`status` of `project`, or of every project of the env (declared or recorded) with archiving on."""
        if project is not None:
            return [self.status(project)]
        found = {p.name for p in self.engine.config.projects} | set(self.engine.records())
        targets = [self.engine.target(name) for name in sorted(found)]
        drills = self._drills()
        return [ProjectArchive(t.project, self._read(t), drills.get(t.project)) for t in targets
                if t.spec.backup.continuous]

    def _drills(self) -> dict[str, dict[str, Any]]:
        return history.last_of(self.engine.store.root, env=self.engine.env, action="verify")

    def _read(self, target: Target, lineage: str | None = None) -> ArchiveStatus:
        """The status of `lineage` (default: the current data volume's)."""
        record = self.engine.record(target.project)
        observed = self.engine.observe(target, record)
        return read_archive(self.engine, target, observed, lineage or self._lineage(target), self.now())

    def _lineage(self, target: Target) -> str:
        return lineage_of(self.engine.record(target.project))

    def _pull(self, target: Target, system_id: str | None) -> str:
        """Pull a copy of the store (backup.offsite) into the repository volume: the one of cluster `system_id`, or
        the only one there is, or the only one that is not the running cluster's; its lineage there."""
        if target.spec.backup.offsite is None:
            raise ConfigError(f"--offsite: {target.project!r} in env {target.env!r} has no backup.offsite store: set "
                              f"{target.spec.key('backup.offsite')} in {self.engine.config.relpath}")
        store = self.engine.capability(OffsiteCopies, target)
        lineage = self._lineage(target)
        found = store.offsite_copies(target, lineage)
        shown = ", ".join(f"{c.system_identifier} (to {c.latest or '?'})" for c in found) or "none"
        if system_id is not None:
            chosen = [c for c in found if c.system_identifier == system_id]
        else:
            current = self._read(target).offsite
            running = current.system_identifier if current is not None else None
            chosen = found if len(found) == 1 else [c for c in found if c.system_identifier != running]
        if len(chosen) != 1:
            where = target.spec.backup.offsite.location(target.env, target.project, lineage)
            raise ConfigError(f"--offsite: {'no copy of cluster ' + system_id if system_id else 'pick a copy'} in "
                              f"{target.spec.backup.offsite.shown()} ({where}); the copies there: {shown}: give "
                              f"--system-id=<one of them>; nothing was changed")
        self.engine.reporter.step(target.project, f"copying cluster {chosen[0].system_identifier}'s archive from "
                                                  f"{target.spec.backup.offsite.shown()} into the repository volume")
        return store.pull_offsite(target, lineage, chosen[0].system_identifier)

    # --- restore to a point in time ---------------------------------------------------------------------------
    def restore(self, project: str, to_time: str, *, yes: bool = False, offsite: bool = False,
                system_id: str | None = None) -> ProjectResult:
        """Restore the project to `to_time` (ISO with a zone, `-10m`, `latest`) into a new data volume, verified
        (PostgreSQL promoted there, row counts read), then switch the stack to it; the old volume is kept until
        --finalize. Refused, before anything changes, outside the recoverable window. With `offsite`, from a copy
        in backup.offsite's store (cluster `system_id`), pulled into the repository volume first."""
        engine = self.engine
        try:
            moment = archiving.parse_time(to_time, self.now())
        except ValueError as exc:
            raise ConfigError(f"--to-time: {exc}") from None
        target = engine.known_target(project)
        if not target.spec.backup.continuous:
            raise ConfigError(f"{project!r} in env {target.env!r} has no continuous archive to restore from: set "
                              f"{target.spec.key('backup.continuous')}: true in {engine.config.relpath} (restore "
                              f"--from restores a dump)")
        engine.capability(Archives, target)
        # a one-off container restores (local), or the stack itself does (Coolify: a one-shot service, `_in_stack`)
        restorer: RestoresArchive | RestoresInStack = (
            engine.backend if isinstance(engine.backend, RestoresArchive) else engine.capability(RestoresInStack, target))
        if offsite:
            engine.capability(OffsiteCopies, target)
        else:
            self._refuse_outside(target, moment)  # first: a target it cannot reach is said even without --yes
        if not yes:
            raise ConfirmationRequired(f"restore --to-time restores {project!r} in env {target.env!r} to "
                                       f"{archiving.iso(moment) or 'the latest archived moment'} in a new data volume "
                                       f"and switches the project to it (the current volume is kept until "
                                       f"--finalize){' from a copy pulled from its offsite store' if offsite else ''}: "
                                       f"add --yes to confirm")
        with engine.operation(target, "restore --to-time", shared=True) as op:
            record = engine.record(project)
            kept = states.upgrade_facts(record)
            if kept is not None:
                raise ProjectConflict(states.unfinished(target, kept) or states.kept_refusal(target, kept))
            old_key = (record.db_volume if record is not None else "") or DEFAULT_DB_VOLUME
            source = self._pull(target, system_id) if offsite else old_key
            status = self._refuse_outside(target, moment, source)
            base = archiving.base_for(moment, status.bases)
            if base is None:  # refusal() said the window; a base ends at or before any moment in it
                raise OutsideWindow(f"no base backup ends before {archiving.iso(moment)}; nothing was changed")
            new_key = f"{DEFAULT_DB_VOLUME}_pitr_{utc_stamp().lower()}"
            wanted = roles.Roles.of(target.spec.variables)
            dbname = str(target.spec.variables["db_name"])
            request = RestoreRequest(
                lineage=source, base=base.name, target=moment, image=target.images.db, admin=wanted.admin,
                dbname=dbname, mark_sql=f"COMMENT ON DATABASE {quote_identifier(dbname)} IS "
                                        f"'{roles.VOLUME_MARK}{new_key}'",
                timeout=max(600.0, engine.config.health.timeout))
            op.changed = True
            major = engine.image_majors.get(target.images.db)
            kept = {"state": states.SWITCHING, "kind": states.PITR, "label": "pitr", "image": target.images.db,
                    "major": major, "new_major": major, "volume_key": old_key,
                    "volume": engine.capability(DataVolumes, target).find_volume(target, old_key) or old_key,
                    "new_image": target.images.db, "new_volume_key": new_key, "backup": "",
                    "to_time": archiving.iso(moment), "at": utc_now()}
            if isinstance(restorer, RestoresInStack):
                engine.reporter.step(project, f"restoring base backup {base.name} and the archive up to "
                                              f"{archiving.iso(moment) or 'its end'} in the stack, into a new volume "
                                              f"({new_key}), before its db starts there")
                restored = self._in_stack(target, op, restorer, request, kept)
            else:
                restored = self._one_off(target, op, restorer, request, kept)
        return self._restored(target, op, moment, base.name, source, restored, kept)

    def _one_off(self, target: Target, op: Operation, restorer: RestoresArchive, request: RestoreRequest,
                 kept: dict[str, Any]) -> Restored:
        """restore --to-time with a one-off container (local): the archive restored into the new volume (dropped
        again when that fails: nothing changed), then the stack moved there; a stack that does not start on it
        returns to the old volume."""
        engine, project, new_key = self.engine, target.project, str(kept["new_volume_key"])
        engine.reporter.step(project, f"restoring base backup {request.base} and the archive up to "
                                      f"{archiving.iso(request.target) or 'its end'} into a new volume ({new_key})")
        try:
            restored = restorer.restore_archive(target, new_key, request)
        except ProvisionError as exc:
            self._drop(target, new_key)
            if isinstance(exc, Interrupted):
                raise
            raise with_note(exc, f"{project!r} still runs on its own data; nothing was changed.") from exc
        except BaseException:
            self._drop(target, new_key)  # no volume the record does not know of is left behind
            raise
        counts = ", ".join(f"{t} {n}" for t, n in restored.row_counts.items()) or "no tables"
        engine.reporter.step(project, f"restored ({restored.duration:.1f} s): PostgreSQL recovered and was "
                                      f"promoted; rows: {counts}")
        self.kept.record(target, kept, db_volume=new_key)
        self.kept.switch(target, op, kept)
        op.action = "restore --to-time"
        self.kept.record(target, {**kept, "state": states.DONE, "at": utc_now()})
        return restored

    def _in_stack(self, target: Target, op: Operation, restorer: RestoresInStack, request: RestoreRequest,
                  kept: dict[str, Any]) -> Restored:
        """restore --to-time where the stack restores (Coolify): the record first asks for the new volume and the
        one-shot `restore` service (upgrade_state.stack_restore), the converge applies it (the db starts only once
        the restore succeeded), then what the restore reported is read; the record says done, and a second converge
        drops the one-shot service. Any failure returns the stack to the old volume (kept as it was) and raises with
        the restore's own output where it left one (CommandFailed, recovery's log tail)."""
        engine, project = self.engine, target.project
        asked = {"lineage": request.lineage, "base": request.base, "target": archiving.pg_time(request.target),
                 "admin": request.admin, "dbname": request.dbname, "mark": request.mark_sql,
                 "wait": min(int(request.timeout), IN_STACK_WAIT)}
        new_key = str(kept["new_volume_key"])
        self.kept.record(target, {**kept, "restore": asked}, db_volume=new_key)
        started = time.monotonic()
        try:
            engine.converge(target, op, major_change=True)
            restored = restorer.restore_outcome(target, engine.observe(target, engine.record(project)), new_key)
        except Interrupted:
            raise
        except ProvisionError as exc:
            engine.reporter.step(project, "the restore did not finish or its data did not start: returning to the "
                                          "data before")
            try:
                self.kept.go_back(target, kept)
            except Interrupted:
                raise
            except ProvisionError as back:
                raise with_note(exc, f"Returning failed too ({back}): the data before is in volume "
                                     f"{kept['volume']}; {self._command(target, '--rollback', '--yes')} tries "
                                     f"again") from exc
            back_on = f"{project!r} runs on its data as it was before; nothing was lost."
            if not isinstance(exc, CommandFailed):  # the restore's own report, read now the archiver runs again
                try:
                    restorer.restore_outcome(target, engine.observe(target, engine.record(project)), new_key)
                except CommandFailed as failed:
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise with_note(failed, f"{back_on} (the stack on the restored volume: {first})") from exc
                except ProvisionError:
                    pass
            raise with_note(exc, back_on) from exc
        restored = replace(restored, duration=time.monotonic() - started)
        # restored: the record says so (the render no longer has the one-shot service), and the stack drops it
        self.kept.record(target, {**kept, "state": states.DONE, "at": utc_now()})
        try:
            engine.converge(target, op, major_change=True)
        except Interrupted:
            raise
        except ProvisionError as exc:
            raise with_note(exc, f"{project!r} was restored and runs on the restored data; its stack still has the "
                                 f"one-shot restore service (it does nothing now): "
                                 f"{hints.command('provision', env=target.env, project=project)} drops it") from exc
        op.action = "restore --to-time"
        return restored

    def _restored(self, target: Target, op: Operation, moment: datetime | None, base: str, source: str,
                  restored: Restored, kept: dict[str, Any]) -> ProjectResult:
        engine, project = self.engine, target.project
        counts = ", ".join(f"{t} {n}" for t, n in restored.row_counts.items()) or "no tables"
        reached = ("the archive holds no commit after the target: all of it was replayed"
                   if restored.reached == "end" and moment is not None else
                   f"recovery stopped at {archiving.iso(moment)}" if moment is not None else "all of the archive")
        messages = [f"restored {project!r} to {archiving.iso(moment) or 'the latest archived moment'} ({reached}); "
                    f"rows: {counts}",
                    f"the data before the restore is kept as it was in volume {kept['volume']}: "
                    f"{self._command(target, '--finalize', '--yes')} deletes it, --rollback --yes returns to it"]
        return engine.result(target, "restore --to-time", "running", op, messages, {
            "to_time": archiving.iso(moment), "base": base, "reached": restored.reached, "lineage": source,
            "volume": restored.volume, "kept_volume": kept["volume"], "row_counts": dict(restored.row_counts),
            "restore_s": round(restored.duration, 3), "recovery_log": list(restored.log)})

    def clone(self, project: str, at: str, to: str, provision: Callable[[str], ProjectResult],
              remove: Callable[[str], object], *, mask: str = "", xid: int | None = None) -> ProjectResult:
        """A new project `to` made from `project`'s archive at `at` (branch from the past): the archive restored
        into `to`'s new data volume by a one-off container, then `provision(to)` creates its stack on it (its own
        secrets and roles). The source is only read, and never stopped. A failed clone is removed again (`remove`).
        With `xid`, recovery stops right after that transaction's commit (`at`, its time, chooses the base)."""
        engine = self.engine
        try:
            moment = archiving.parse_time(at, self.now())
        except ValueError as exc:
            raise ConfigError(f"--at: {exc}") from None
        source = engine.known_target(project)
        copy = engine.target(to)
        if not source.spec.backup.continuous:
            raise ConfigError(f"{project!r} in env {source.env!r} has no continuous archive: set "
                              f"{source.spec.key('backup.continuous')}: true in {engine.config.relpath}")
        dbname = str(source.spec.variables["db_name"])
        if str(copy.spec.variables["db_name"]) != dbname:
            raise ConfigError(f"{to!r} would have db_name {copy.spec.variables['db_name']!r}, the archive of "
                              f"{project!r} holds {dbname!r}: a clone keeps the database's name")
        archives = engine.capability(RestoresArchive, source)
        request = self._request(source, moment, DEFAULT_DB_VOLUME, "clone --at", mask=mask)
        if xid is not None:
            request = dataclasses.replace(request, target_xid=xid)
        engine.reporter.step(to, f"restoring {project!r}'s base backup {request.base} and archive up to "
                                 f"{archiving.iso(moment) or 'its end'} into a new project")
        # the copy's secrets (and ports) first: a backend refuses to make new ones beside existing data
        engine.prepare(copy, engine.observe(copy, None), create=True)
        try:
            restored = archives.restore_archive(source, DEFAULT_DB_VOLUME, request, into=copy)
        except BaseException:
            self._drop(copy, DEFAULT_DB_VOLUME)
            with contextlib.suppress(ProvisionError):
                remove(to)
            raise
        try:
            created = provision(to)
        except ProvisionError as exc:
            with contextlib.suppress(ProvisionError):
                remove(to)
            raise with_note(exc, f"The half-made clone {to!r} was removed; {project!r} was only read.") from exc
        counts = ", ".join(f"{t} {n}" for t, n in restored.row_counts.items()) or "no tables"
        messages = (f"cloned {project!r} as it was at {archiving.iso(moment) or 'the latest archived moment'} into "
                    f"{to!r}; rows: {counts}",)
        for line in messages:
            engine.reporter.step(to, line)
        return ProjectResult(project=to, env=copy.env, backend=engine.backend.name, status=created.status,
                             changed=True, action="clone --at", declared=copy.spec.declared,
                             messages=messages, duration=created.duration + restored.duration,
                             details={**created.details, "source": project, "at": archiving.iso(moment),
                                      "base": request.base, "reached": restored.reached,
                                      "row_counts": dict(restored.row_counts)})

    def rollback(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Return to the data a restore (--to-time or --from) kept (what was written since the restore is left in the
        restored volume, which is deleted)."""
        if not yes:
            raise ConfirmationRequired(f"restore --rollback returns {project!r} to the data it had before its "
                                       f"restore; what was written since is deleted: add --yes")
        target, op, kept, _ = self.kept.roll_back(project, "restore --rollback", KINDS_RESTORE)
        return self.engine.result(target, "restore --rollback", "running", op,
                                  [f"back on the data as it was before the restore (volume {kept['volume']})"],
                                  {"volume": kept["volume"]})

    def finalize(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Delete the data a restore (--to-time or --from) kept (the volume from before it)."""
        if not yes:
            raise ConfirmationRequired(f"restore --finalize deletes the data {project!r} had before its restore: "
                                       f"add --yes to confirm")
        target, op, _, dropped, done = self.kept.drop(project, "restore --finalize", KINDS_RESTORE)
        return self.engine.result(target, "restore --finalize", "running", op, [done], {"deleted_volume": dropped})

    def reset_branch(self, branch: str, parent: str, at: str, *, mask: str = "") -> ProjectResult:
        """`reset --at`: the branch `branch` back to `parent`'s data as it was at `at`, from the parent's archive:
        restored into a new data volume of the branch, which then moves there (its URLs, ports and secrets stay:
        its roles get its own passwords again), and its old volume is deleted. Refused, before anything changes,
        outside the parent's window."""
        engine = self.engine
        try:
            moment = archiving.parse_time(at, self.now())
        except ValueError as exc:
            raise ConfigError(f"--at: {exc}") from None
        source, target = engine.known_target(parent), engine.known_target(branch)
        if not source.spec.backup.continuous:
            raise ConfigError(f"reset --at: the parent {parent!r} in env {source.env!r} has no continuous archive")
        archives = engine.capability(RestoresArchive, source)
        new_key = f"{DEFAULT_DB_VOLUME}_reset_{utc_stamp().lower()}"
        request = self._request(source, moment, new_key, "reset --at", mask=mask)
        with engine.operation(target, "reset --at", shared=True) as op:
            record = engine.record(branch)
            old_key = (record.db_volume if record is not None else "") or DEFAULT_DB_VOLUME
            op.changed = True
            engine.reporter.step(branch, f"restoring {parent!r}'s base backup {request.base} and archive up to "
                                         f"{archiving.iso(moment) or 'its end'} into a new volume ({new_key})")
            try:
                restored = archives.restore_archive(source, new_key, request, into=target)
            except BaseException:
                self._drop(target, new_key)
                raise
            if record is not None:
                engine.write(record.evolve(db_volume=new_key), record)
            engine.converge(target, op, major_change=True)
            dropped = self._drop(target, old_key)
        counts = ", ".join(f"{t} {n}" for t, n in restored.row_counts.items()) or "no tables"
        return engine.result(target, "reset --at", "running", op, [
            f"reset {branch!r} to {parent!r} as it was at {archiving.iso(moment) or 'the latest archived moment'}; "
            f"rows: {counts}; its URLs and secrets stay",
            f"deleted its data before the reset ({dropped})" if dropped else "its data before the reset is gone"],
            {"at": archiving.iso(moment), "volume": restored.volume, "row_counts": dict(restored.row_counts)})

    # --- helpers ------------------------------------------------------------------------------------------------
    def _request(self, source: Target, moment: datetime | None, volume_key: str, verb: str, *,
                 mask: str = "") -> RestoreRequest:
        """The restore of `source`'s archive at `moment` into a new volume of compose key `volume_key`; OutsideWindow
        (nothing changed) when the archive cannot reach it. `mask` (a branch's masking script) runs as the owner
        role in the one-off restore, with the volume's mark, before any stack can open the data."""
        status = self._refuse_outside(source, moment, verb=verb)
        base = archiving.base_for(moment, status.bases)
        if base is None:
            raise OutsideWindow(f"no base backup ends before {archiving.iso(moment)}; nothing was changed")
        record = self.engine.record(source.project)
        dbname = str(source.spec.variables["db_name"])
        return RestoreRequest(
            lineage=(record.db_volume if record is not None else "") or DEFAULT_DB_VOLUME, base=base.name,
            target=moment, image=source.images.db, admin=roles.Roles.of(source.spec.variables).admin, dbname=dbname,
            mark_sql=f"COMMENT ON DATABASE {quote_identifier(dbname)} IS '{roles.VOLUME_MARK}{volume_key}'" + (
                f";\nSET ROLE {quote_identifier(roles.Roles.of(source.spec.variables).owner)};\n{mask}" if mask else ""),
            timeout=max(600.0, self.engine.config.health.timeout))

    def _refuse_outside(self, target: Target, moment: datetime | None, lineage: str | None = None,
                        verb: str = "restore --to-time") -> ArchiveStatus:
        status = self._read(target, lineage)
        # an archiver that runs but has not reported its window yet (it restarted: a rollback, a converge) is waited
        # for a little, up to SETTLING seconds; one that does not run, or a target outside a window, is said at once
        deadline = self.engine.clock() + SETTLING
        # a read on Coolify is a scheduled task, about six requests of the 200 a minute it allows: once per status
        pause = 1.0 if isinstance(self.engine.backend, RestoresArchive) else float(archiving.POLL_SECONDS)
        while (status.window is None or (moment is not None and moment > status.window.latest)) \
                and not status.reason.startswith(archiving.NOT_RUNNING) and self.engine.clock() < deadline:
            self.engine.sleep(pause)
            status = self._read(target, lineage)
        refused = archiving.refusal(moment, status)
        if refused is not None:
            raise OutsideWindow(f"{verb} of {target.project!r} in env {target.env!r}: {refused}")
        return status

    def _drop(self, target: Target, volume_key: str) -> str | None:
        with contextlib.suppress(NotSupported):
            return self.engine.capability(DroppingVolumes, target).drop_kept(target, volume_key)
        return None

    @staticmethod
    def _command(target: Target, *flags: str) -> str:
        return hints.command("restore", *flags, env=target.env, project=target.project)


def lineage_of(record: ProjectRecord | None) -> str:
    """The lineage a project's archive is read as: its current data volume's compose key."""
    return (record.db_volume if record is not None else "") or DEFAULT_DB_VOLUME


def read_archive(engine: Engine, target: Target, observed: Observed, lineage: str, now: datetime) -> ArchiveStatus:
    """The status of `target`'s archive of `lineage` (NotSupported where the backend cannot read it). When its
    archiver does not run, the replication slot's hold on the db's disk is asked of the database (where the backend
    runs SQL and the db runs), so that the health says how far the slot is from being dropped."""
    archives = engine.capability(Archives, target)
    facts = archives.archive_facts(target, observed, lineage)
    db = observed.services.get("db")
    if not facts.running and isinstance(engine.backend, RunsSql) and db is not None and db.running:
        with contextlib.suppress(ProvisionError):
            found = engine.backend.run_sql(target, observed, _SLOT, timeout=30, purpose="slot").strip().split("|")
            facts = dataclasses.replace(facts, slot_status=found[0] or None,
                                        slot_held_bytes=int(found[1]) if len(found) > 1 and found[1].isdigit() else None)
    return archiving.read_status(facts, target.spec.backup, now)


_SLOT = (f"SELECT coalesce(wal_status, 'unknown'), pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
         f"FROM pg_replication_slots WHERE slot_name = '{archiving.SLOT}';\n")


def failing(archives: list[ProjectArchive]) -> list[ProjectArchive]:
    """The projects `backups --check` fails on: archiving on and health not ok."""
    return [a for a in archives if a.status is not None and a.status.health != "ok"]
