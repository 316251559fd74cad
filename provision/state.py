"""The state directory: rendered files, 0600 secrets, port leases, and per env+project locks.

Layout (default `.provision/` at the project root; `PROVISION_STATE_DIR` overrides)::

    ports.json                       port leases of every project, guarded by ports.lock
    <env>/<project>/state.json       what was last applied (hashes, images, ports, status)
    <env>/<project>/docker-compose.yml
    <env>/<project>/secrets.env      0600: generated secrets, kept across destroy
    <env>/<project>/backups/         0600 pg_dump files written before data is deleted
    <env>/<project>/lock             held while an operation runs on this project

Every write goes to a temporary file first and is renamed into place, so a killed run
leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from filelock import FileLock, Timeout

from .errors import LockTimeout, StateError
from .secrets import Secret

STATE_DIR_ENV = "PROVISION_STATE_DIR"


def default_state_dir(root: Path, environ: Mapping[str, str] | None = None) -> Path:
    """`$PROVISION_STATE_DIR` if set, else `<root>/.provision`."""
    value = (os.environ if environ is None else environ).get(STATE_DIR_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else root / ".provision"


def atomic_write(path: Path, data: str | bytes, *, mode: int = 0o600, durable: bool = True) -> None:
    """Replace `path` with `data` atomically; the file gets `mode` before any byte is written.
    `durable` also flushes it to disk before the rename (skip only for disposable files)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"{path}: not valid JSON ({exc.msg}); restore it from a backup or delete it") from exc
    if not isinstance(data, dict):
        raise StateError(f"{path}: expected a JSON object")
    return data


def write_json(path: Path, data: Mapping[str, Any], *, mode: int = 0o600) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=mode)


@dataclass(frozen=True)
class ProjectPaths:
    dir: Path

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def compose(self) -> Path:
        return self.dir / "docker-compose.yml"

    @property
    def secrets(self) -> Path:
        return self.dir / "secrets.env"

    @property
    def backups(self) -> Path:
        return self.dir / "backups"

    @property
    def lock(self) -> Path:
        return self.dir / "lock"


class StateStore:
    """Files under one state directory; safe for concurrent processes through file locks."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def paths(self, env: str, project: str) -> ProjectPaths:
        return ProjectPaths(self.root / env / project)

    def ensure_dir(self, env: str, project: str) -> ProjectPaths:
        paths = self.paths(env, project)
        try:
            for directory in (self.root, paths.dir.parent, paths.dir):
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(f"cannot create state directory {paths.dir}: {exc.strerror}") from exc
        return paths

    # --- per-project state -------------------------------------------------------------
    def read_state(self, env: str, project: str) -> dict[str, Any]:
        return read_json(self.paths(env, project).state)

    def write_state(self, env: str, project: str, data: Mapping[str, Any]) -> None:
        write_json(self.ensure_dir(env, project).state, data)

    def read_secrets(self, env: str, project: str) -> dict[str, Secret]:
        """The project's saved secrets ({} if none were ever generated)."""
        path = self.paths(env, project).secrets
        if not path.is_file():
            return {}
        values = dotenv_values(path, interpolate=False)
        return {k: Secret(v) for k, v in values.items() if v}

    def write_secrets(self, env: str, project: str, secrets: Mapping[str, Secret]) -> Path:
        """Write the secrets file (0600); values are hex or URL-safe, so no quoting is needed."""
        path = self.ensure_dir(env, project).secrets
        body = "".join(f"{k}={v.reveal()}\n" for k, v in sorted(secrets.items()))
        atomic_write(path, body, mode=0o600)
        return path

    def delete_secrets(self, env: str, project: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.paths(env, project).secrets.unlink()

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
        with _hold(paths.lock, timeout, what=f"project {project!r} in env {env!r}"):
            yield

    @contextlib.contextmanager
    def ports_lock(self, *, timeout: float = 60.0) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _hold(self.root / "ports.lock", timeout, what="the port registry"):
            yield

    # --- port leases ---------------------------------------------------------------------
    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    def read_leases(self) -> dict[str, dict[str, Any]]:
        """env/project -> {"api": port, "db": port[, "subnet": cidr]}."""
        data = read_json(self.ports_file)
        return {k: dict(v) for k, v in data.get("leases", {}).items()}

    def write_leases(self, leases: Mapping[str, Mapping[str, Any]]) -> None:
        write_json(self.ports_file, {"leases": {k: dict(v) for k, v in sorted(leases.items())}})


@contextlib.contextmanager
def _hold(path: Path, timeout: float, *, what: str) -> Iterator[None]:
    info = path.with_name(path.name + ".holder")
    lock = FileLock(str(path), mode=0o600)
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(info.read_text())
            holder = f" (held by {data['user']}@{data['host']} pid {data['pid']} since {data['since']})"
        raise LockTimeout(
            f"another run is operating on {what}{holder}; waited {timeout:g} s. "
            f"Wait for it to finish or raise --lock-timeout."
        ) from exc
    try:
        with contextlib.suppress(OSError):  # who holds the lock: informative only, never worth an fsync
            atomic_write(info, json.dumps(_holder_record()), mode=0o644, durable=False)
        yield
    finally:
        lock.release()


def _holder_record() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {
        "user": user,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
