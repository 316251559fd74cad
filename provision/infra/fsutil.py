"""Files written so that a killed run leaves the old or the new one, never half; never through a planted link;
and a refused write named with its cause and its fix."""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.errors import StateError, StateWriteError
from ..core.secrets import Secret


def current_user() -> str:
    """Who runs this process, for history lines and lock holders (the uid when there is no user name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


# what to do when the system refuses a state write, by errno
_WRITE_FIXES = {
    errno.ENOSPC: "free space on the filesystem that holds it, or set PROVISION_STATE_DIR to a directory on "
                  "another filesystem",
    errno.EDQUOT: "free space within your disk quota there, or set PROVISION_STATE_DIR to a directory outside it",
    errno.EROFS: "the filesystem is read-only: remount it read-write, or set PROVISION_STATE_DIR to a writable "
                 "directory",
    errno.EACCES: "give this user ({user}) write permission on {parent} (and the file), or set PROVISION_STATE_DIR "
                  "to a directory this user owns",
    errno.EPERM: "give this user ({user}) write permission on {parent} (and the file), or set PROVISION_STATE_DIR "
                 "to a directory this user owns",
}


def write_error(path: Path, exc: OSError) -> StateWriteError:
    """The StateError for a state write the system refused: the path, the cause and the fix."""
    if isinstance(exc, StateWriteError):
        return exc
    cause = exc.strerror or str(exc)
    code = errno.errorcode.get(exc.errno or 0)
    fix = _WRITE_FIXES.get(exc.errno or 0, "check that {parent} is a writable directory, or set PROVISION_STATE_DIR "
                                           "to another one")
    return StateWriteError(
        f"cannot write {path}: {cause}" + (f" ({code})" if code else "") + ": "
        + fix.format(user=current_user(), parent=path.parent),
        path=str(path), cause=exc,
    )


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """`os.open` that never follows a symbolic link at `path`: a link is refused with a StateError naming it
    (a planted link would redirect the write); other OSErrors are the caller's to translate."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) and path.is_symlink():
            raise StateError(f"{path} is a symbolic link (to {os.readlink(path)}): provision never follows a link "
                             f"for its state files; remove the link and run again") from exc
        raise


def atomic_write(path: Path, data: str | bytes, *, mode: int = 0o600, durable: bool = True,
                 exclusive: bool = False) -> None:
    """Replace `path` with `data` atomically; the file gets `mode` before any byte is written.
    `durable` also flushes it to disk before the rename (skip only for disposable files). `exclusive`: never
    replace what is at `path` (a file, a link): FileExistsError, and nothing was written.
    A write the system refuses (a full disk, a quota, a read-only filesystem, permissions) raises
    StateWriteError naming the path, the cause and the fix."""
    payload = data.encode() if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if exclusive:
            publish_new(Path(tmp), path)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise write_error(path, exc) from exc
        raise


def publish_new(source: Path, path: Path) -> None:
    """Move the finished file `source` to `path` only if nothing is there (not even a link): a hard link and
    an unlink, so a file that appeared meanwhile is never replaced (FileExistsError). Where the filesystem has
    no hard links, a check and a rename."""
    try:
        os.link(source, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from exc
        os.replace(source, path)
        return
    os.unlink(source)


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


# in a double-quoted env-file value, what docker compose reads as interpolation ($NAME, ${...}, $$)
_COMPOSE_INTERPOLATION = re.compile(r"\$[A-Za-z0-9_{$]")
# in a single-quoted value, a backslash python-dotenv reads as an escape (before \ or ') or that escapes the quote
_SINGLE_QUOTE_ESCAPE = re.compile(r"\\(?=[\\']|$)")


def dotenv_quote(value: str, *, name: str = "a value") -> str:
    r"""`value` written for an env file that python-dotenv and `docker compose --env-file` read back unchanged.

    Double quotes, with backslash, double quote, newline and carriage return escaped (both decode exactly
    these); but compose interpolates `$NAME`, `${...}` and `$$` inside double quotes, and python-dotenv (read
    without interpolation) does not, so a value holding one goes in single quotes instead, which both read
    literally except for `\'`. A value that fits neither (such a `$` together with a backslash before `\`, `'`
    or the end, or a carriage return) is refused with a StateError naming `name`, never the value.
    """
    if not _COMPOSE_INTERPOLATION.search(value):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return f'"{escaped}"'
    if "\r" not in value and not _SINGLE_QUOTE_ESCAPE.search(value):
        return "'" + value.replace("'", "\\'") + "'"
    raise StateError(f"{name}: a value holding `$` before a name together with a backslash before \\, ' or its end "
                     f"(or a carriage return) cannot be written so that docker compose and python-dotenv read it "
                     f"alike: choose another value")


def env_file_text(values: Mapping[str, Secret]) -> str:
    """An env file of `values`, sorted, each quoted (`dotenv_quote`) so that python-dotenv and
    `docker compose --env-file` both read back exactly what was written."""
    return "".join(f"{k}={dotenv_quote(v.reveal(), name=k)}\n" for k, v in sorted(values.items()))
