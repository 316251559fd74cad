"""An append-only JSON-lines log of every state-changing operation, in the state directory."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.errors import StateError
from ..infra.clock import utc_now
from ..infra.fsutil import current_user, open_nofollow, write_error
from .layout import StateLayout


@dataclass(frozen=True)
class HistoryRecord:
    time: str  # UTC, ISO 8601
    user: str
    host: str
    env: str
    project: str
    action: str
    config_hash: str | None
    result: str  # ok, failed, rolled back, interrupted, skipped
    duration_s: float
    backend: str = ""
    detail: str = ""


def record(state_dir: Path, *, env: str, project: str, action: str, config_hash: str | None, result: str,
           duration: float, backend: str, detail: str = "") -> HistoryRecord:
    """Append one record; a single O_APPEND write of one line, so concurrent writers never interleave. The
    file is never opened through a symbolic link (StateError), and a write the system refuses (a full disk,
    permissions) raises StateWriteError naming the file, the cause and the fix."""
    entry = HistoryRecord(
        time=utc_now(), user=current_user(), host=socket.gethostname(),
        env=env, project=project, action=action, config_hash=config_hash, result=result,
        duration_s=round(duration, 3), backend=backend, detail=detail.splitlines()[0][:300] if detail else "",
    )
    path = StateLayout(state_dir).history
    line = (json.dumps(asdict(entry), sort_keys=True) + "\n").encode()
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        os.write(fd, line)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        os.close(fd)
    return entry


def read(state_dir: Path, *, env: str | None = None, project: str | None = None) -> Iterator[dict[str, Any]]:
    """Records in the order they were written, optionally only one env and/or project."""
    path = StateLayout(state_dir).history
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc.strerror}") from exc
    with os.fdopen(fd, encoding="utf-8") as handle:
        for line in handle:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash is skipped, the rest still reads
            if (env is None or item.get("env") == env) and (project is None or item.get("project") == project):
                yield item


def last_of(state_dir: Path, *, env: str, action: str) -> dict[str, dict[str, Any]]:
    """The last history line of `action` for each project of `env`: {project: line}."""
    found: dict[str, dict[str, Any]] = {}
    for line in read(state_dir, env=env):
        if line.get("action") == action:
            found[str(line.get("project"))] = line
    return found
