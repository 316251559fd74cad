"""Reading a project's continuous archive in a test, the way a user does: `backups --project=shop --json`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.sandbox import Sandbox


def archive(box: Sandbox, project: str = "shop", *, timeout: float = 300) -> dict[str, Any]:
    """`project`'s one line of `backups --json` (the command given `timeout` seconds)."""
    [found] = box.cli("backups", f"--project={project}", "--json", timeout=timeout).json()["archives"]
    return found  # type: ignore[no-any-return]


def archive_when(box: Sandbox, ready: Callable[[dict[str, Any]], object], timeout: float = 90,
                 interval: float = 1.0, read_timeout: float = 300) -> dict[str, Any]:
    """The archive's line once `ready(line)` holds, read every `interval` seconds (each read given `read_timeout`);
    an assertion naming the last line read after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        status = archive(box, timeout=read_timeout)
        if ready(status):
            return status
        assert time.monotonic() < deadline, f"the archive never got there: {status}"
        time.sleep(interval)
