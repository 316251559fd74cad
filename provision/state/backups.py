"""Backups on disk: `<state>/backups/<env>/<project>/<UTC time>.dump` (pg_dump custom format, 0600, in 0700
directories) with a manifest beside it (`<same>.json`): server version, image, size, sha256, exact row
counts per table, time. Written only by the service layer."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import BackupError
from ..infra.fsutil import atomic_write
from .layout import StateLayout

LATEST = "latest"


@dataclass(frozen=True)
class Backup:
    """One dump and what its manifest says (an empty manifest for a dump made elsewhere)."""

    path: Path
    manifest: Mapping[str, Any] = field(default_factory=dict)

    @property
    def manifest_path(self) -> Path:
        return manifest_path(self.path)

    @property
    def row_counts(self) -> dict[str, int] | None:
        counts = self.manifest.get("row_counts")
        return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, Mapping) else None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), **{k: v for k, v in self.manifest.items() if k != "path"}}


def directory(state_root: Path, env: str, project: str) -> Path:
    return StateLayout(state_root).backups(env, project)


def new_path(folder: Path, *, label: str = "") -> Path:
    """A fresh `<UTC time>[-label].dump` in `folder` (created 0700), never an existing file's name."""
    for part in (folder.parent.parent.parent, folder.parent.parent, folder.parent, folder):
        part.mkdir(mode=0o700, exist_ok=True)
    while True:  # names sort in time order: UTC to the microsecond
        now = time.time()
        path = folder / (time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
                         + (f"-{label}" if label else "") + ".dump")
        if not path.exists():
            return path


def manifest_path(dump: Path) -> Path:
    return dump.with_name(dump.name.removesuffix(".dump") + ".json")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(dump: Path, manifest: Mapping[str, Any]) -> Backup:
    """The manifest beside `dump` (0600), a new file: an existing one (or a link there) is never replaced."""
    path = manifest_path(dump)
    try:
        atomic_write(path, json.dumps(dict(manifest), indent=2, sort_keys=True) + "\n", mode=0o600, exclusive=True)
    except FileExistsError:
        raise BackupError(f"{path} exists: the dump {dump} was written but its manifest was not (a backup never "
                          f"overwrites); move {path} away and back up again") from None
    return Backup(dump, dict(manifest))


def read(path: Path) -> Backup:
    """The dump at `path` with its manifest when there is one; BackupError when the dump is missing."""
    if not path.is_file():
        raise BackupError(f"{path}: no such backup file")
    manifest: dict[str, Any] = {}
    beside = manifest_path(path)
    if beside.is_file():
        try:
            loaded = json.loads(beside.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackupError(f"{beside}: an unreadable manifest ({exc}); move it away to restore without "
                              f"verifying row counts") from exc
        manifest = loaded if isinstance(loaded, dict) else {}
    return Backup(path, manifest)


def listing(folder: Path) -> list[Backup]:
    """The project's backups, newest first (by name: names are UTC times)."""
    if not folder.is_dir():
        return []
    return [read(p) for p in sorted(folder.glob("*.dump"), reverse=True)]


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups (dump and manifest); returns the dumps deleted."""
    removed = []
    for old in listing(folder)[keep:]:
        old.path.unlink(missing_ok=True)
        old.manifest_path.unlink(missing_ok=True)
        removed.append(old.path)
    return removed
