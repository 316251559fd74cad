"""What an upgrade-db keeps, read from a project's record (pure): the states of an upgrade, and the sentence
saying why a stack must not be applied while one is half done. The engine refuses on it; upgrade.py writes it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..core.model import Target
from ..core.render import DEFAULT_DB_VOLUME
from ..infra import hints
from ..state.records import ProjectRecord

# the states of an upgrade-db in the record's kept_data (see upgrade.Upgrades.upgrade)
SWITCHING, DONE, ROLLING_BACK, FINALIZING = "switching", "done", "rolling back", "finalizing"
# kept_data["kind"] of a point-in-time restore (service/archive.py) and of a dump's restore (service/dumprestore.py),
# which keep the old volume the same way; an upgrade's has no kind
PITR, DUMP = "restore", "restore-from"
RESTORES = (PITR, DUMP)


def unfinished_upgrade(target: Target, record: ProjectRecord | None) -> str | None:
    """Why `target` must not be applied now (one line naming the command that finishes or undoes it): an
    upgrade-db, or its rollback, that a run left half done, its stack maybe between two volumes. None if none."""
    kept = upgrade_facts(record)
    return unfinished(target, kept) if kept is not None else None


def unfinished(target: Target, kept: dict[str, Any]) -> str | None:
    """The sentence of `unfinished_upgrade` for the upgrade facts `kept`."""
    where = f"{target.project!r} in env {target.env!r}"
    if kept.get("kind") in RESTORES and kept["state"] in (SWITCHING, ROLLING_BACK):
        restore = kept_command(target, kept, "--rollback", "--yes")
        verb = "restore --to-time" if kept.get("kind") == PITR else "restore --from"
        return (f"{where}: a {verb} did not finish (its stack may be between the volume {kept['volume']} "
                f"and the restored one, key {kept['new_volume_key']}); nothing was changed. {restore} returns to "
                f"the data as it was before")
    if kept["state"] == SWITCHING:
        return (f"{where}: an upgrade-db from PostgreSQL {kept['major']} to {kept['new_major']} did not finish (its "
                f"stack may be between the old volume {kept['volume']} and the new one, key "
                f"{kept['new_volume_key']}); nothing was changed. {command(target, '--yes')} finishes it, "
                f"{command(target, '--rollback', '--yes')} undoes it")
    if kept["state"] == ROLLING_BACK:
        return (f"{where}: an upgrade-db --rollback to PostgreSQL {kept['major']} did not finish; nothing was "
                f"changed. {command(target, '--rollback', '--yes')} finishes it")
    return None


def stack_restore(record: ProjectRecord | None) -> dict[str, Any] | None:
    """The restore request a restore --to-time in the stack (Coolify) recorded, while it switches to the new volume
    (the render then adds the one-shot `restore` service: core/render.py restore_context); None otherwise, so any
    later apply drops that service again."""
    kept = upgrade_facts(record)
    if record is None or kept is None or kept.get("kind") != PITR or kept["state"] != SWITCHING:
        return None
    request = kept.get("restore")
    if not isinstance(request, dict) or record.db_volume != kept.get("new_volume_key"):
        return None
    return request


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


def image_note(target: Target, old_image: str) -> str:
    """After a rollback to `old_image`: whether the env file names it already, else which key to set back."""
    key, shown = target.spec.key("images.db"), target.config.relpath
    if target.images.db == old_image:
        return f"{shown} names {old_image} ({key}): provision keeps the project on it"
    return (f"{shown} still names {target.images.db} ({key}): set it back to {old_image}, or provision will refuse "
            f"until the next upgrade-db")


def command(target: Target, *flags: str) -> str:
    """The upgrade-db command of `target`, as a hint (backquoted, in the program's name)."""
    return hints.command("upgrade-db", *flags, env=target.env, project=target.project)


def kept_command(target: Target, kept: dict[str, Any], *flags: str) -> str:
    """The command that finishes, rolls back or finalizes what `kept` keeps: restore's for a restore, else upgrade-db's."""
    if kept.get("kind") in RESTORES:
        return hints.command("restore", *flags, env=target.env, project=target.project)
    return hints.command("upgrade-db", *flags, env=target.env, project=target.project)


def what_kept(kept: dict[str, Any]) -> str:
    """The verb that kept the data, for messages."""
    return {PITR: "restore --to-time", DUMP: "restore --from"}.get(str(kept.get("kind") or ""), "upgrade-db")


def kept_refusal(target: Target, kept: dict[str, Any]) -> str:
    """Why a restore cannot start while `kept` (a finished upgrade-db's or restore's) keeps the data before it."""
    return (f"{target.project!r} in env {target.env!r} keeps the data from before its {what_kept(kept)} in volume "
            f"{kept['volume']}: {kept_command(target, kept, '--finalize', '--yes')} deletes it (--rollback --yes "
            f"returns to it) before another restore; nothing was changed")
