"""The state directory's one map: every file provision keeps there, and who writes it.

Default `.provision/` at the project root; `PROVISION_STATE_DIR` overrides (`state.default_state_dir`)::

    history.jsonl                        every state-changing operation, one JSON line each (history.py)
    incidents/<id>.log                   0600: the traceback of an unexpected error the CLI met (incidents.py)
    backups/<env>/<project>/<time>.dump  0600 pg_dump files (and their .json manifests) (backups.py)
    ports.json, ports.lock               the local backend's port and subnet leases (its LeaseBook)
    <env>/.idempotency/<sha256>.json     the project an HTTP Idempotency-Key created (StateStore)
    <env>/<project>/state.json           the project's record (ProjectRecord, schema_version 2)
    <env>/<project>/secrets.env          0600: generated secrets, kept across destroy
    <env>/<project>/pending.json         0600: data operations begun and not finished
    <env>/<project>/lock, lock.holder    held while an operation runs on this project (and by whom)
    <env>/<project>/                     also the backend's working folder (`BackendFiles`); the local backend
                                         keeps there docker-compose.yml, compose.env (0600, the variables it
                                         gives compose) and adopted.json (the owners `adopt` took over)

Only the service layer writes the records, secrets, locks, history, backups and idempotency keys; a backend
writes only in its working folder and its env-wide files (ports.json).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..infra.fsutil import write_error


@dataclass(frozen=True)
class StateLayout:
    """Where each file of one state directory lives; paths only, nothing is read or created here."""

    root: Path

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def incidents(self) -> Path:
        return self.root / "incidents"

    @property
    def ports(self) -> Path:
        return self.root / "ports.json"

    @property
    def ports_lock(self) -> Path:
        return self.root / "ports.lock"

    def backups(self, env: str, project: str) -> Path:
        return self.root / "backups" / env / project

    def idempotency(self, env: str, key: str) -> Path:
        """The record of an HTTP Idempotency-Key: named by its digest, never by the key itself."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.root / env / ".idempotency" / f"{digest}.json"

    def project(self, env: str, project: str) -> Path:
        return self.root / env / project

    def record(self, env: str, project: str) -> Path:
        return self.project(env, project) / "state.json"

    def secrets(self, env: str, project: str) -> Path:
        return self.project(env, project) / "secrets.env"

    def pending(self, env: str, project: str) -> Path:
        return self.project(env, project) / "pending.json"

    def lock(self, env: str, project: str) -> Path:
        return self.project(env, project) / "lock"

    def work(self, env: str, project: str) -> Path:
        """The backend's working folder for the project: the project's folder, where the local compose file has
        always been."""
        return self.project(env, project)


@dataclass(frozen=True)
class BackendFiles:
    """What a backend is handed of the state directory: its working folder per project and its env-wide files
    to write; of the service's files, only whether a project has a record and where its secrets file is (for
    messages), never their contents."""

    layout: StateLayout

    def work(self, env: str, project: str) -> Path:
        return self.layout.work(env, project)

    def ensure_work(self, env: str, project: str) -> Path:
        """The project's working folder, created 0700 (with the state directory and the env's folder) if missing."""
        work = self.layout.work(env, project)
        try:
            for directory in (self.layout.root, work.parent, work):
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise write_error(directory, exc) from exc
        return work

    @property
    def ports(self) -> Path:
        return self.layout.ports

    @property
    def ports_lock(self) -> Path:
        return self.layout.ports_lock

    def recorded(self, env: str, project: str) -> bool:
        """Whether the service holds a record of the project (resources it made before owner ids are its)."""
        return self.layout.record(env, project).is_file()

    def secrets_path(self, env: str, project: str) -> Path:
        """Where the service keeps the project's secrets: named in messages, never read by a backend."""
        return self.layout.secrets(env, project)
