"""Unexpected exceptions (bugs) reaching an entry point: one incident id, the traceback kept out of sight.

The user sees `UnexpectedError` (a ProvisionError naming the id); the traceback goes to the server log
(logger "provision") and, for the CLI, to `<state dir>/incidents/<id>.log` (0600)."""

from __future__ import annotations

import logging
import secrets
import traceback
from pathlib import Path

from ..core.errors import UnexpectedError
from .fsutil import atomic_write

log = logging.getLogger("provision")


def record(exc: BaseException, directory: Path | None = None) -> UnexpectedError:
    """An UnexpectedError for `exc`; its traceback logged under the incident id (and written to `directory`)."""
    incident = secrets.token_hex(6)
    text = "".join(traceback.format_exception(exc))
    where = ""
    if directory is not None:
        path = directory / f"{incident}.log"
        try:
            atomic_write(path, text, mode=0o600)
            where = str(path)
        except OSError:
            where = ""
    else:
        log.error("incident %s: unexpected %s\n%s", incident, type(exc).__name__, text)
    error = UnexpectedError(exc, incident)
    if where:
        error.args = (f"{error} ({where})",)
    return error
