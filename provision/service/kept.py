"""The data a volume switch keeps: upgrade-db, restore --to-time and restore --from each move the stack to a NEW data
volume and keep the old one (the record's kept_data: upgrade_state.py), until --finalize deletes it or --rollback
moves the stack back. One helper for the three kinds: recording the steps, returning, deleting."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from ..backends.base import DataVolumes, DroppingVolumes
from ..core.errors import Interrupted, NotSupported, ProjectConflict, ProvisionError, with_note
from ..core.model import Target
from . import upgrade_state as states
from .engine import Engine, Operation

T = TypeVar("T")
KINDS_UPGRADE: tuple[str | None, ...] = (None,)
KINDS_RESTORE: tuple[str | None, ...] = states.RESTORES


class KeptData:
    """The kept data of one env on `engine`; `pause` is DataVerbs.pause (tests kill a run at its steps)."""

    def __init__(self, engine: Engine, pause: Callable[[str], None]) -> None:
        self.engine = engine
        self.pause = pause

    def facts(self, target: Target, kinds: tuple[str | None, ...]) -> dict[str, Any]:
        """The record's kept facts when a verb of `kinds` kept them; ProvisionError (naming the right verb) else."""
        kept = states.upgrade_facts(self.engine.record(target.project))
        wanted = "an upgrade-db" if kinds == KINDS_UPGRADE else "a restore"
        if kept is None:
            raise ProvisionError(f"{target.project!r} in env {target.env!r} has no data kept by {wanted}")
        if kept.get("kind") not in kinds:
            raise ProvisionError(f"{target.project!r} in env {target.env!r} keeps the data of {states.what_kept(kept)}, "
                                 f"not of {wanted}: {states.kept_command(target, kept, '--finalize', '--yes')} deletes "
                                 f"it, --rollback --yes returns to it")
        return kept

    def record(self, target: Target, kept: dict[str, Any], **changes: Any) -> None:
        """Write the kept facts (and `changes`) to the record, before the step they announce."""
        engine = self.engine
        record = engine.record(target.project)
        if record is None:
            raise ProvisionError(f"{target.project!r} in env {target.env!r} has no record (state.json) any more")
        engine.write(record.evolve(kept_data=kept, **changes), record)

    def go_back(self, old_target: Target, kept: dict[str, Any]) -> None:
        """Move the stack back to the kept volume and the old image (the lock is held), then delete the new volume
        where the backend can (Coolify keeps it with the service). Recorded first (`rolling back`), so a killed run
        is finished by --rollback; then the record forgets the kept data."""
        engine = self.engine
        if engine.capability(DataVolumes, old_target).find_volume(old_target, str(kept["volume_key"])) is None:
            raise ProjectConflict(f"the volume {kept['volume']} that {states.what_kept(kept)} kept for "
                                  f"{old_target.project!r} is gone: nothing to return to, nothing was changed "
                                  f"({states.kept_command(old_target, kept, '--finalize', '--yes')} forgets it)")
        self.record(old_target, {**kept, "state": states.ROLLING_BACK}, db_volume=str(kept["volume_key"]))
        self.pause("rolling-back")
        engine.converge(old_target, Operation("rollback"), major_change=True)
        self.pause("dropping-new")
        new_key = str(kept.get("new_volume_key") or "")
        if new_key and new_key != kept["volume_key"]:
            with contextlib.suppress(NotSupported):
                engine.capability(DroppingVolumes, old_target).drop_kept(old_target, new_key)
        self.record(old_target, {})

    def switch(self, target: Target, op: Operation, kept: dict[str, Any]) -> None:
        """Start the stack on the new volume the record names (a restore's); when it does not start, go back to the
        kept volume and raise the failure with a note saying so (or that going back failed too, and the command that
        tries again). Interrupted passes through untouched: the record lets the next run finish or undo it."""
        try:
            self.engine.converge(target, op, major_change=True)
        except Interrupted:
            raise
        except ProvisionError as exc:
            self.engine.reporter.step(target.project, "the restored data did not start: returning to the data before")
            try:
                self.go_back(target, kept)
            except Interrupted:
                raise
            except ProvisionError as back:
                raise with_note(exc, f"Returning failed too ({back}): the data before is in volume {kept['volume']}; "
                                     f"{states.kept_command(target, kept, '--rollback', '--yes')} tries again") from exc
            raise with_note(exc, f"{target.project!r} runs on its data as it was before; nothing was lost.") from exc

    def roll_back(self, project: str, action: str, kinds: tuple[str | None, ...], *,
                  save: Callable[[Target, dict[str, Any]], T | None] | None = None
                  ) -> tuple[Target, Operation, dict[str, Any], T | None]:
        """--rollback of `kinds`: under the operation `action`, `save` (what was written since, or None) and then
        `go_back`, from any state a killed run left, but a --finalize under way."""
        engine = self.engine
        target = engine.known_target(project)
        with engine.operation(target, action, shared=True) as op:
            kept = self.facts(target, kinds)
            if kept["state"] == states.FINALIZING:
                raise ProjectConflict(f"{project!r} in env {target.env!r}: a {states.what_kept(kept)} --finalize did "
                                      f"not finish, so the kept volume {kept['volume']} may be deleted already: nothing "
                                      f"to return to. {states.kept_command(target, kept, '--finalize', '--yes')} "
                                      f"finishes it")
            saved = save(target, kept) if save is not None else None
            op.changed = True
            self.go_back(states.with_db_image(target, str(kept["image"])), kept)
        return target, op, kept, saved

    def drop(self, project: str, action: str, kinds: tuple[str | None, ...]
             ) -> tuple[Target, Operation, dict[str, Any], str | None, str]:
        """--finalize of `kinds`: delete the kept volume (recorded first, `finalizing`) and forget it; the target,
        the operation, the facts, the deleted volume's name and the sentence saying what happened."""
        engine = self.engine
        target = engine.known_target(project)
        with engine.operation(target, action, shared=True) as op:
            kept = self.facts(target, kinds)
            unfinished = states.unfinished(target, kept)
            if unfinished is not None:
                raise ProjectConflict(unfinished)
            self.record(target, {**kept, "state": states.FINALIZING})
            op.changed = True
            self.pause("finalizing")
            try:
                dropped = engine.capability(DroppingVolumes, target).drop_kept(target, str(kept["volume_key"]))
                done = f"deleted the kept volume {dropped}" if dropped else "the kept volume was already gone"
            except NotSupported as exc:
                dropped, done = None, f"{exc}: the volume {kept['volume']} stays"
            self.record(target, {})
        return target, op, kept, dropped, done
