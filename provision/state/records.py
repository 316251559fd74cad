"""The service's files in the state directory: project records, 0600 secrets, pending data operations,
HTTP idempotency keys and per env+project locks. Where each lives is `layout.StateLayout`'s to say.

Every write goes to a temporary file first and is renamed into place, so a killed run
leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from ..core.errors import LockTimeout, StateError
from ..core.secrets import Secret
from ..infra.clock import utc_now
from ..infra.fsutil import (
    atomic_write,
    current_user,
    env_file_text,
    open_nofollow,
    read_json,
    write_error,
    write_json,
)
from .layout import StateLayout

STATE_DIR_ENV = "PROVISION_STATE_DIR"
SCHEMA_VERSION = 2


def holder_record() -> dict[str, Any]:
    """Who holds a lock taken now: user, host, pid and since."""
    return {"user": current_user(), "host": socket.gethostname(), "pid": os.getpid(), "since": utc_now()}


@dataclass(frozen=True)
class ProjectRecord:
    """What the service knows of one project in one env; `state.json`, written only by the service layer.

    status: requested (accepted over HTTP), applying, provisioned, interrupted, failed, rolled back,
    destroyed. `handle` is the backend's handle (`Handle.to_dict()`), opaque here.
    """

    project: str
    env: str
    backend: str = ""
    status: str = ""
    config_hash: str | None = None
    service_hashes: Mapping[str, str] = field(default_factory=dict)
    images: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] | None = None
    handle: Mapping[str, Any] = field(default_factory=dict)
    created_via: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    requested_at: str | None = None
    destroyed_at: str | None = None
    # set by upgrade-db until --finalize or --rollback: the data kept aside (label, volume, image, major,
    # backup) so that --rollback can return to it
    kept_data: Mapping[str, Any] = field(default_factory=dict)
    # the compose key of the db's data volume when it is not the template's default (after a major upgrade
    # on a backend that cannot copy volumes: Coolify)
    db_volume: str = ""
    # a digest of the database roles provision last made (roles.digest): names, passwords and data volume
    roles: str = ""
    # set when the project is a branch of another (core.branches.BranchMark.to_dict): parent, taken_at, expires_at
    branch: Mapping[str, Any] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> ProjectRecord:
        return replace(self, **changes)

    @property
    def live(self) -> bool:
        """Provisioned or on its way there: the name is taken (destroyed or failed projects may be re-created)."""
        return self.status not in ("", "destroyed", "failed")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for item in fields(self):
            value = getattr(self, item.name)
            data[item.name] = dict(value) if isinstance(value, Mapping) else value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, env: str, project: str, source: Path) -> ProjectRecord:
        """A record from its JSON; today's files (no schema_version: version 1) are migrated on read."""
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise StateError(f"{source}: schema_version {version!r} is newer than this provision understands "
                             f"({SCHEMA_VERSION}): upgrade provision")
        if version == 1:
            data = _migrate_v1(data)
        known = {item.name for item in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values.update(env=env, project=project)
        try:
            return cls(**values)
        except TypeError as exc:
            raise StateError(f"{source}: not a project record ({exc}); restore it from a backup or delete it") from exc


def _migrate_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """Version 1 kept backend facts at the top level: `coolify` (uuids) and `compose_hashes` (local)."""
    migrated = {k: v for k, v in data.items() if k not in ("coolify", "compose_hashes")}
    if isinstance(data.get("coolify"), Mapping):
        migrated["handle"] = {k: v for k, v in data["coolify"].items() if v is not None}
    elif data.get("compose_hashes"):
        migrated["handle"] = {"compose_hashes": dict(data["compose_hashes"]),
                              "service_hashes": dict(data.get("service_hashes") or {})}
    return migrated


def default_state_dir(root: Path, environ: Mapping[str, str] | None = None) -> Path:
    """`$PROVISION_STATE_DIR` from the process environment, else from `<root>/.env` (a relative path there is
    relative to `root`), else `<root>/.provision`."""
    value = (os.environ if environ is None else environ).get(STATE_DIR_ENV, "").strip()
    if value:
        return Path(value).expanduser().resolve()
    dotenv = root / ".env"
    with contextlib.suppress(OSError, UnicodeDecodeError):  # an unreadable .env is reported where secrets are read
        value = (dotenv_values(dotenv).get(STATE_DIR_ENV) or "").strip() if dotenv.is_file() else ""
    return (root / Path(value).expanduser()).resolve() if value else root / ".provision"


@dataclass(frozen=True)
class ProjectPaths:
    """The service's files of one project (`StateLayout`'s names)."""

    dir: Path
    state: Path
    secrets: Path
    lock: Path


class StateStore:
    """Files under one state directory; safe for concurrent processes through file locks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = StateLayout(root)

    def paths(self, env: str, project: str) -> ProjectPaths:
        layout = self.layout
        return ProjectPaths(layout.project(env, project), layout.record(env, project), layout.secrets(env, project),
                            layout.lock(env, project))

    def ensure_dir(self, env: str, project: str) -> ProjectPaths:
        paths = self.paths(env, project)
        try:
            for directory in (self.root, paths.dir.parent, paths.dir):
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise write_error(directory, exc) from exc
        return paths

    # --- per-project records ------------------------------------------------------------
    def read_record(self, env: str, project: str) -> ProjectRecord | None:
        """The project's record, migrated to the current schema; None when it has none."""
        path = self.paths(env, project).state
        data = read_json(path)
        return ProjectRecord.from_dict(data, env=env, project=project, source=path) if data else None

    def write_record(self, record: ProjectRecord) -> None:
        write_json(self.ensure_dir(record.env, record.project).state, record.to_dict())

    def delete_record(self, env: str, project: str) -> None:
        self.paths(env, project).state.unlink(missing_ok=True)

    # --- idempotency keys of HTTP requests ------------------------------------------------
    def read_idempotency(self, env: str, key: str) -> dict[str, Any]:
        """{"project": name, "fingerprint": ..., "at": time} for a key seen before, else {}."""
        return read_json(self.layout.idempotency(env, key))

    def write_idempotency(self, env: str, key: str, data: Mapping[str, Any]) -> None:
        write_json(self.layout.idempotency(env, key), data)

    def delete_idempotency(self, env: str, key: str) -> None:
        self.layout.idempotency(env, key).unlink(missing_ok=True)

    def read_secrets(self, env: str, project: str) -> dict[str, Secret]:
        """The project's saved secrets ({} if none were ever generated)."""
        path = self.paths(env, project).secrets
        if not path.is_file():
            return {}
        values = dotenv_values(path, interpolate=False)
        return {k: Secret(v) for k, v in values.items() if v}

    def write_secrets(self, env: str, project: str, secrets: Mapping[str, Secret]) -> Path:
        """Write the secrets file (0600), every value quoted (`dotenv_quote`) so that python-dotenv and
        `docker compose --env-file` both read back exactly what was written."""
        path = self.ensure_dir(env, project).secrets
        atomic_write(path, env_file_text(secrets), mode=0o600)
        return path

    def delete_secrets(self, env: str, project: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.paths(env, project).secrets.unlink()

    # --- data operations under way (a kill leaves them here for the next run to finish or undo) -------
    def read_pending(self, env: str, project: str) -> dict[str, Any]:
        """{operation: facts} for the data operations begun and not finished ({} when none)."""
        return read_json(self.layout.pending(env, project))

    def write_pending(self, env: str, project: str, operation: str, facts: Mapping[str, Any] | None) -> None:
        """Record `operation` as under way (0600: a rotation's facts hold the new password) before it starts,
        or, with None, as finished."""
        pending = self.read_pending(env, project)
        if facts is None:
            if operation not in pending:
                return
            pending.pop(operation)
        else:
            pending[operation] = dict(facts)
        self.ensure_dir(env, project)
        path = self.layout.pending(env, project)
        if pending:
            write_json(path, pending)
        else:
            path.unlink(missing_ok=True)

    def known_projects(self, env: str | None = None) -> list[tuple[str, str]]:
        """(env, project) pairs that have a state file, sorted."""
        if not self.root.is_dir():
            return []
        envs = [env] if env else sorted(p.name for p in self.root.iterdir() if p.is_dir())
        found: list[tuple[str, str]] = []
        for env_name in envs:
            env_dir = self.root / env_name
            if env_dir.is_dir():
                found.extend((env_name, p.name) for p in sorted(env_dir.iterdir()) if (p / "state.json").is_file())
        return found

    # --- locks ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, env: str, project: str, *, timeout: float) -> Iterator[None]:
        """Hold the env+project lock; waits up to `timeout` seconds, then raises LockTimeout.

        The lock is an OS file lock: it is released when the holder exits, even by SIGKILL.
        """
        paths = self.ensure_dir(env, project)
        with hold_lock(paths.lock, timeout, what=f"project {project!r} in env {env!r}"):
            yield


@contextlib.contextmanager
def hold_lock(path: Path, timeout: float, *, what: str) -> Iterator[None]:
    """Hold an exclusive flock(2) on `path` (created 0600, never through a symbolic link: StateError), waiting
    up to `timeout` seconds (forever when negative), then LockTimeout naming the holder. The kernel releases
    it when the holder exits, even by SIGKILL."""
    info = path.with_name(path.name + ".holder")
    try:
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if 0 <= timeout and time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another run is operating on {what}{_holder(info)}; waited {timeout:g} s. "
                        f"Wait for it to finish or raise --lock-timeout."
                    ) from None
                time.sleep(0.05)
            except OSError as exc:  # a filesystem without flock (some network mounts)
                raise StateError(f"{path}: cannot be locked ({exc.strerror}): set PROVISION_STATE_DIR to a "
                                 f"directory on a local filesystem") from exc
        try:
            with contextlib.suppress(OSError):  # who holds the lock: informative only, never worth an fsync
                atomic_write(info, json.dumps(holder_record()), mode=0o644, durable=False)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(info: Path) -> str:
    """ (held by user@host pid N since T)" from the lock's holder note, or "" (read without following a link)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, StateError):
        fd = open_nofollow(info, os.O_RDONLY)
        with os.fdopen(fd, encoding="utf-8") as handle:
            data = json.loads(handle.read(4096))
        return f" (held by {data['user']}@{data['host']} pid {data['pid']} since {data['since']})"
    return ""
