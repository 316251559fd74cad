"""Copy-on-write branches on the local backend (issue 23): a running project's data directory copied by reflink
inside PostgreSQL's backup mode, as the documentation's low-level base backup says, into the directory a new
branch's data volume will bind.

With `local.data_root` on a filesystem with reflinks (XFS reflink=1, btrfs), each project's data volume is a
bind of `<data_root>/<volume>` (engine.make_volumes). A copy then: reserves a temporary physical replication
slot (the WAL from here on is kept), starts a non-exclusive backup (`pg_backup_start(label, fast => true)`, in
one psql session held open to the end), copies the data directory with `cp -a --reflink=always` (without
postmaster.pid/.opts, pg_wal's and pg_replslot's contents), stops the backup (`pg_backup_stop`: its backup_label
and tablespace map are written into the copy), copies the WAL segments into the copy's pg_wal, and drops the
slot. The source never stops; the copy starts as a crash recovery from the backup's checkpoint to a consistent
point. Reflinks share every block with the source until either side writes it.
"""

from __future__ import annotations

import base64
import os
import re
import secrets as random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ...core import names
from ...core.errors import CommandFailed, ProvisionError
from ...core.model import DataCopy, Target
from ...core.render import DEFAULT_DB_VOLUME
from ...infra.database import psql_in_container
from ...infra.pgsession import PsqlSession
from .engine import HELPER_LABEL, Engine

COPY_TIMEOUT = 3600.0
_WAL_SEGMENT = re.compile(r"[0-9A-F]{24}")
_EXTENT = re.compile(r"^\s*\d+:\s+\d+\.\.\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+):\s*(?:\d+:)?\s*(\S*)\s*$", re.M)
_LEFT_OUT = {"postmaster.pid", "postmaster.opts", "pg_wal", "pg_replslot"}
_probed: dict[str, str | None] = {}  # data root -> why it cannot reflink (None: it can), probed once a process


def can_reflink(root: Path) -> str | None:
    """None when `root`'s filesystem makes reflinks (`cp --reflink=always` of a small test file, once a
    process), else why not."""
    key = str(root)
    if key not in _probed:
        probe = root / f".provision-reflink-probe-{random.token_hex(4)}"
        try:
            probe.write_bytes(b"provision reflink probe\n")
            done = subprocess.run(["cp", "--reflink=always", "--", str(probe), f"{probe}.copy"],  # noqa: S603
                                  capture_output=True, text=True, timeout=30, check=False)
            _probed[key] = None if done.returncode == 0 else (
                f"the filesystem of {root} cannot make reflinks ({done.stderr.strip() or 'cp --reflink=always failed'})")
        except OSError as exc:
            _probed[key] = f"{root} cannot be written ({exc.strerror})"
        finally:
            for path in (probe, Path(f"{probe}.copy")):
                path.unlink(missing_ok=True)
    return _probed[key]


def bound_directory(volume: Any) -> Path | None:
    """The host directory a bind volume (driver local, o=bind) mounts, from its `docker volume inspect` attrs."""
    options = (getattr(volume, "attrs", None) or {}).get("Options") or {}
    device = options.get("device")
    return Path(device) if device and "bind" in str(options.get("o", "")).split(",") else None


def remove_bound(volumes: Iterable[Any], data_root: str | None) -> list[str]:
    """Delete the bind directories of deleted `volumes` that lie in `data_root` (never anything outside it)."""
    removed: list[str] = []
    if not data_root:
        return removed
    root = Path(data_root).resolve()
    for directory in (found for volume in volumes if (found := bound_directory(volume)) is not None):
        resolved = directory.resolve()
        if resolved.parent == root and resolved.is_dir():
            shutil.rmtree(resolved)
            removed.append(str(resolved))
    return removed


class ReflinkCopier:
    """Reflink copies of one engine's projects; `exec_argv` and `data_volume` are the backend's."""

    def __init__(self, engine: Engine, exec_argv: Callable[[Target, str, list[str]], list[str]],
                 data_volume: Callable[[Target], str | None]) -> None:
        self.engine, self.exec_argv, self.data_volume = engine, exec_argv, data_volume

    def refusal(self, source: Target, branch: Target) -> str | None:
        """None when `source`'s data can be copied by reflink into a new volume of `branch`; else why not."""
        root = source.config.local.data_root
        if not root:
            return "local.data_root is not set (a directory on XFS with reflink=1 or btrfs)"
        if branch.config.local.data_root != root:
            return f"the branch's env keeps its data elsewhere ({branch.config.local.data_root}) than {root}"
        if os.geteuid() != 0:
            return "a reflink copy reads PostgreSQL's own files, which needs root on this machine"
        source_dir = self.source_directory(source)
        if source_dir is None or source_dir.parent != Path(root).resolve():
            return (f"the data volume of {source.project!r} is not in {root} (made before local.data_root was set): "
                    f"only projects created since are copied by reflink")
        return can_reflink(Path(root))

    def source_directory(self, source: Target) -> Path | None:
        name = self.data_volume(source)
        if name is None:
            return None
        try:
            return bound_directory(self.engine.client().volumes.get(name))
        except Exception:  # noqa: BLE001 - the SDK's NotFound or APIError: no directory to copy
            return None

    def own_disk(self, target: Target) -> int | None:
        """The bytes of `target`'s data directory no other project shares (None: not in local.data_root)."""
        directory = self.source_directory(target)
        root = target.config.local.data_root
        if directory is None or root is None or directory.parent != Path(root).resolve() or os.geteuid() != 0:
            return None
        return own_bytes(directory)

    def copy(self, source: Target, branch: Target, *, sql: str | None = None, replace: bool = False,
             timeout: float = COPY_TIMEOUT) -> DataCopy:
        """Copy the running `source`'s data directory into the directory of `branch`'s data volume (made here:
        it must not exist) by reflink inside backup mode, then run `sql` in the copy (`single_user`) before
        anything can connect to it; the copy is removed again on any failure. With `replace` (a reset: the
        branch exists and is stopped), the copy is made beside its data directory and swapped in once whole."""
        source_dir = self.source_directory(source)
        if source_dir is None:
            raise ProvisionError(f"the data volume of {source.project!r} is no bind of local.data_root")
        volume = f"{names.compose_project_name(branch.env, branch.project)}_{DEFAULT_DB_VOLUME}"
        final = Path(str(branch.config.local.data_root)) / volume
        if replace:
            current = self.source_directory(branch)
            if current is None or not current.is_dir():
                raise ProvisionError(f"the data of {branch.project!r} is not in local.data_root")
            volume, final = self.data_volume(branch) or volume, current
        target_dir = final.with_name(f".{final.name}.reset-{random.token_hex(4)}") if replace else final
        try:
            target_dir.mkdir(mode=0o700)
        except FileExistsError:
            raise ProvisionError(f"{target_dir} exists already (data of an earlier {branch.project!r}): remove it, "
                                 f"or destroy --delete-data that project first") from None
        started = time.monotonic()
        try:
            start_lsn, stop_lsn = self._copy_in_backup_mode(source, source_dir, target_dir, timeout)
            seconds = time.monotonic() - started
            if sql:
                single_user(branch, target_dir, sql, timeout=timeout)
        except BaseException:
            shutil.rmtree(target_dir, ignore_errors=True)
            raise
        if replace:
            old = final.with_name(f".{final.name}.old-{random.token_hex(4)}")
            os.rename(final, old)
            os.rename(target_dir, final)
            shutil.rmtree(old, ignore_errors=True)
        return DataCopy(volume, final, start_lsn, stop_lsn, seconds)

    def _copy_in_backup_mode(self, source: Target, source_dir: Path, target_dir: Path,
                             timeout: float) -> tuple[str, str]:
        argv = self.exec_argv(source, "db", ["sh", "-c", psql_in_container(None)])
        slot = f"provision_branch_{random.token_hex(4)}"
        with PsqlSession(argv) as held:
            major = int(held.step("SHOW server_version_num;", timeout=60).strip().splitlines()[-1]) // 10000
            # a temporary slot reserved now keeps every WAL segment from here; it goes with the session anyway
            held.step(f"SELECT pg_create_physical_replication_slot('{slot}', true, true);", timeout=60)
            start = "pg_backup_start('provision branch', true)" if major >= 15 else \
                "pg_start_backup('provision branch', true, false)"
            start_lsn = held.step(f"SELECT {start};", timeout=timeout).strip().splitlines()[-1]
            _copy_tree(source_dir, target_dir, timeout)
            stop = "pg_backup_stop(false)" if major >= 15 else "pg_stop_backup(false, false)"
            row = held.step(f"SELECT translate(encode(convert_to(labelfile, 'UTF8'), 'base64'), E'\\n', ''), "
                            f"translate(encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'base64'), E'\\n', ''), "
                            f"lsn FROM {stop};", timeout=timeout).strip().splitlines()[-1]
            label, tablespaces, stop_lsn = row.split("|")
            owner = (source_dir / "PG_VERSION").stat()
            _write_owned(target_dir / "backup_label", base64.b64decode(label), owner)
            if tablespaces:
                _write_owned(target_dir / "tablespace_map", base64.b64decode(tablespaces), owner)
            segments = sorted(p for p in (source_dir / "pg_wal").iterdir() if _WAL_SEGMENT.fullmatch(p.name))
            _cp([*map(str, segments), str(target_dir / "pg_wal")], timeout)
            held.step(f"SELECT pg_drop_replication_slot('{slot}');", timeout=60)
        return start_lsn, stop_lsn


def own_bytes(directory: Path) -> int:
    """Bytes of the files under `directory` in extents no other file shares (`filefrag -v`, FIEMAP: extents
    not flagged `shared`), in as few runs as the argument list allows."""
    files = [str(p) for p in directory.rglob("*") if p.is_file() and not p.is_symlink()]
    total = 0
    for start in range(0, len(files), 400):
        done = subprocess.run(["filefrag", "-v", "-b4096", "--", *files[start:start + 400]],  # noqa: S603
                              capture_output=True, text=True, timeout=120, check=False)
        for found in _EXTENT.finditer(done.stdout):
            if "shared" not in found.group(2):
                total += int(found.group(1)) * 4096
    return total


def single_user(branch: Target, directory: Path, sql: str, *, timeout: float) -> None:
    """Run `sql` in the copied data directory with PostgreSQL in single-user mode (`postgres --single -j`, in a
    throwaway container of the branch's db image without network, as the data's owner): it first recovers the
    copy to its consistent point, then runs the statements as the bootstrap superuser and shuts down cleanly.
    No client can connect meanwhile. CommandFailed quoting PostgreSQL on any ERROR (the caller wraps `sql` in
    one transaction, so nothing of it is then committed)."""
    owner = (directory / "PG_VERSION").stat()
    argv = ["docker", "run", "--rm", "-i", "--network", "none", "--user", f"{owner.st_uid}:{owner.st_gid}",
            "--label", f"{names.LABEL_MANAGED}=true", "--label", f"{HELPER_LABEL}={branch.env}/{branch.project}",
            "--volume", f"{directory}:/var/lib/postgresql/data", "--entrypoint", "postgres", branch.images.db,
            "--single", "-j", "-D", "/var/lib/postgresql/data", str(branch.spec.variables["db_name"])]
    done = subprocess.run(argv, input=sql.rstrip() + "\n\n", capture_output=True, text=True,  # noqa: S603
                          timeout=timeout, check=False)
    said = done.stdout + done.stderr
    errors = [line.strip() for line in said.splitlines() if re.search(r"\b(ERROR|FATAL|PANIC):", line)]
    if done.returncode != 0 or errors:
        raise CommandFailed(argv[:3] + ["...", "postgres", "--single"], done.returncode,
                            "\n".join(errors[-5:] or said.splitlines()[-5:]),
                            hint="in the branch's copy, before it started: nothing of it was committed")


def _copy_tree(source_dir: Path, target_dir: Path, timeout: float) -> None:
    """The data directory by reflink, without the files the backup documentation leaves out; pg_wal and
    pg_replslot made empty (with the owner and mode of the source's)."""
    entries = sorted(str(p) for p in source_dir.iterdir() if p.name not in _LEFT_OUT)
    _cp([*entries, str(target_dir)], timeout)
    shutil.copystat(source_dir, target_dir)
    owner = source_dir.stat()
    os.chown(target_dir, owner.st_uid, owner.st_gid)
    for empty in ("pg_wal", "pg_wal/archive_status", "pg_replslot"):
        made = target_dir / empty
        made.mkdir(mode=0o700, exist_ok=True)
        os.chown(made, owner.st_uid, owner.st_gid)


def _cp(arguments: list[str], timeout: float) -> None:
    """`cp -a --reflink=always` (never a byte copy); a file that vanished meanwhile (a temporary one, a dropped
    table) is no failure, as for pg_basebackup."""
    done = subprocess.run(["cp", "-a", "--reflink=always", "--", *arguments],  # noqa: S603 - argv list
                          capture_output=True, text=True, timeout=timeout, check=False)
    errors = [line for line in done.stderr.splitlines() if line.strip() and "No such file or directory" not in line]
    if done.returncode != 0 and errors:
        raise CommandFailed(["cp", "-a", "--reflink=always", "..."], done.returncode, "\n".join(errors[-5:]),
                            hint="the copy was removed; the source is untouched")


def _write_owned(path: Path, data: bytes, owner: os.stat_result) -> None:
    path.write_bytes(data)
    os.chown(path, owner.st_uid, owner.st_gid)
    path.chmod(0o600)
