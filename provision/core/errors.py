"""Every error this library raises derives from `ProvisionError`.

    ProvisionError                      catch this to catch everything provision raises
    ├── ConfigError (ValueError)        a file, key or value in envs/ or .env is wrong
    │   └── LimitsRefused               a limit the engine refuses or the host cannot give (the key to change)
    ├── InvalidName (ValueError)        a project or env name is not a valid DNS label
    ├── TemplateError                   the Jinja template failed to render
    ├── StateError                      the state directory is unreadable or inconsistent
    ├── LockTimeout                     another run holds the env+project lock
    ├── LockLost                        the shared lock could not be renewed: the run stopped changing things
    ├── ProjectNotFound (KeyError)      no such project in this env
    ├── ConfirmationRequired            a destructive option was given without --yes
    ├── ProjectConflict                 the name is taken, or the project is in a state that refuses the verb
    ├── Interrupted                     Ctrl-C or SIGTERM stopped the operation
    ├── HookFailed                      a user hook exited non-zero or timed out
    ├── BackendUnavailable              the engine, compose CLI or Coolify cannot be reached or used
    │   └── AmbiguousResult             a create whose answer was lost: it may or may not have happened
    ├── ImageUnavailable                an image neither on the engine nor pullable (image, env-file key, fixes)
    ├── BackendError                    the engine or its SDK failed a call (operation, engine message)
    ├── CommandFailed                   a subprocess exited non-zero (argv, exit code, stderr tail)
    ├── HealthTimeout                   the stack did not become healthy in time (log tail attached)
    │   ├── ContainerCrashed            ...a container exited or restarted during the wait, which ended at once
    │   └── RolledBack                  ...so it was rolled back to what ran before (log tail kept)
    ├── CoolifyAPIError                 Coolify answered with an error (method, URL, status, message)
    │   ├── CoolifyAuthError            401 / 403
    │   ├── CoolifyNotFound             404
    │   ├── CoolifyConflict             409
    │   ├── CoolifyValidationError      422 (field errors)
    │   └── CoolifyResponseError        2xx with a body of an unexpected shape
    └── UnexpectedError                 a bug: a foreign exception that reached an entry point (incident id)

Messages say what is wrong and what to do. They never contain secrets: anything
that might carry one (stderr, HTTP bodies) is passed through `redact` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

_TAIL_LINES = 20
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return `text` with every non-empty secret value replaced by `***`."""
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def strip_ansi(text: str) -> str:
    """`text` without terminal escape sequences (compose emits some even with --no-color)."""
    return _ANSI.sub("", text)


def tail(text: str, lines: int = _TAIL_LINES) -> str:
    """The last `lines` lines of `text`, without terminal escape sequences."""
    return "\n".join(strip_ansi(text).rstrip().splitlines()[-lines:])


class ProvisionError(Exception):
    """Root of all errors raised by provision; `str(exc)` is the message to show the user, and `exit_code`
    the CLI's: 1 the operation failed, 2 usage/config/validation (nothing contacted or changed), 3 the
    backend refused the credentials, 4 a lock was held past --lock-timeout."""

    exit_code = 1


class ConfigError(ProvisionError, ValueError):
    """A configuration file, key or value is invalid."""

    exit_code = 2


class LimitsRefused(ConfigError):
    """A resource limit (resources.<service>.cpus, .memory) that the engine refuses or the host cannot give;
    the message names the env file's key to change. Nothing was created."""


class UndeclaredProject(ConfigError):
    """A project the env file does not declare, to be created without --create."""


class InvalidName(ProvisionError, ValueError):
    """A project or environment name is refused before anything is created."""

    exit_code = 2


class TemplateError(ProvisionError):
    """The compose template could not be rendered."""

    exit_code = 2


class StateError(ProvisionError):
    """The state directory could not be read or written."""


class StateWriteError(StateError, OSError):
    """A state write the system refused (no space, quota, read-only filesystem, permissions): the message names
    the path, the cause and the fix. Also an OSError (with the cause's errno), so that code tolerating a failed
    write (an incident log, a lock's holder note) still tolerates it."""

    def __init__(self, message: str, *, path: str, cause: OSError) -> None:
        super().__init__(message)
        self.path = path
        self.errno = cause.errno
        self.strerror = cause.strerror

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LockTimeout(ProvisionError):
    """Another run is operating on the same env+project and did not finish in time."""

    exit_code = 4


class LockLost(ProvisionError):
    """The lock every runner sees (Coolify: a shared variable) could not be renewed before it would expire, or
    was broken by someone else: another run may hold it now, so this run sent nothing more that changes anything.
    The next run converges from what is there."""


class ProjectNotFound(ProvisionError, KeyError):
    """The project is neither declared in the env nor known to the backend."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would add quotes
        return str(self.args[0]) if self.args else "project not found"


class ConfirmationRequired(ProvisionError):
    """A destructive operation was requested without explicit confirmation."""

    exit_code = 2


class IdempotencyMismatch(ProvisionError):
    """An Idempotency-Key reused for a request that differs from the one it was first sent with."""

    exit_code = 2


class ProjectConflict(ProvisionError):
    """The name is taken, or the project's state refuses the verb (e.g. start of a destroyed project)."""


class Interrupted(ProvisionError):
    """The run was interrupted (Ctrl-C or SIGTERM) before this operation finished."""


class HookFailed(ProvisionError):
    """A hook exited non-zero or timed out."""


class BackupError(ProvisionError):
    """A dump that cannot be used (not a pg_dump archive, corrupt, from a newer server) or a backup
    whose verification failed."""


class DumpRefused(BackupError):
    """A dump refused before anything changed: not a pg_dump archive, corrupt, or from a newer major."""

    exit_code = 2


class MajorUpgradeRequired(ProvisionError):
    """The db image is another PostgreSQL major than the data directory: `upgrade-db` moves the data."""


class ServersFull(ProvisionError):
    """No server listed in coolify.servers can take a new stack (each named with its capacity); nothing was created."""


class NotSupported(ProvisionError):
    """The backend cannot do this at all; the message says why and what works instead."""


class BackendUnavailable(ProvisionError):
    """The backend (Docker Engine, compose CLI, Coolify server) cannot be used."""


class AmbiguousResult(BackendUnavailable):
    """A non-idempotent request failed in a way that does not tell whether it took effect."""


class ImageUnavailable(ProvisionError):
    """An image the stack needs is neither on the engine nor pullable: names the image, the env file's key that
    sets it, and how to make it available. Raised before anything is created."""

    def __init__(self, image: str, key: str, reason: str) -> None:
        self.image = image
        self.key = key
        self.reason = reason
        super().__init__(
            f"image {image} ({key}) is not on this Docker Engine and could not be pulled: {reason}\n"
            f"Make it available, then run again: `docker pull {image}` where its registry is reachable, "
            f"`docker load --input <file>.tar` (a `docker save {image}` from another machine), or a local build "
            f"tagged {image} (`docker build --tag {image} <dir>`); or name another image in {key}. Nothing was created.")


class BackendError(ProvisionError):
    """The engine refused or failed a call made through its SDK; carries the operation and its message."""

    def __init__(self, operation: str, message: str, *, status: int | None = None, hint: str = "") -> None:
        self.operation = operation
        self.status = status
        self.hint = hint
        text = f"Docker Engine: {operation} failed" + (f" ({status})" if status else "") + f": {message}"
        super().__init__(text + (f"\n{hint}" if hint else ""))


class CommandFailed(ProvisionError):
    """A subprocess exited non-zero; carries its argv, exit code and the tail of its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, *, hint: str = "") -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr_tail = tail(stderr)
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        command = " ".join(self.argv)
        message = f"command failed (exit {self.returncode}): {command}"
        if self.stderr_tail:
            message += "\n" + self.stderr_tail
        if self.hint:
            message += "\n" + self.hint
        return message


class HealthTimeout(ProvisionError):
    """The stack did not become healthy within the timeout."""

    def __init__(self, message: str, *, logs: str = "") -> None:
        self.message = message
        self.logs = logs
        super().__init__(message + (f"\n--- log tail ---\n{logs}" if logs else ""))

    def with_note(self, note: str) -> HealthTimeout:
        """The same error (same class, same log tail) with `note` added to its message."""
        return type(self)(f"{self.message}\n{note}", logs=self.logs)


class ContainerCrashed(HealthTimeout):
    """A container exited or restarted while the stack was awaited: the wait ended at once (log tail attached)."""


class RolledBack(HealthTimeout):
    """The new version failed; the previous one was restored and is serving again."""


class DatabaseStarting(ProvisionError):
    """The project's database is not up yet: its container starting, stopped or just replaced, PostgreSQL not
    accepting connections yet, or the old server of a stack moving to a new data volume still answering. The same
    statement may succeed a moment later. Raised by the backend that saw it, with what it saw as the message."""


class StartingCommandFailed(CommandFailed, DatabaseStarting):
    """A command in the db container failed because its database is not up yet (a CommandFailed all the same)."""


class StartingTimeout(HealthTimeout, DatabaseStarting):
    """Nothing ran in the db container in time (it may be starting): a HealthTimeout all the same."""


class CoolifyAPIError(ProvisionError):
    """Coolify answered an API call with an error status."""

    def __init__(
        self,
        method: str,
        url: str,
        status: int | None,
        message: str,
        *,
        errors: Mapping[str, object] | Sequence[object] | None = None,
        hint: str = "",
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.message = message
        self.errors = errors
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        status = f" -> {self.status}" if self.status is not None else ""
        text = f"Coolify API {self.method} {self.url}{status}: {self.message}"
        if self.errors:
            text += "\n" + _format_field_errors(self.errors)
        if self.hint:
            text += "\n" + self.hint
        return text


class CoolifyAuthError(CoolifyAPIError):
    """401 or 403: the token is invalid, lacks an ability, or the API is disabled."""

    exit_code = 3


class CoolifyNotFound(CoolifyAPIError):
    """404: the resource does not exist (or belongs to another team)."""


class CoolifyConflict(CoolifyAPIError):
    """409: the resource exists already or a domain conflicts."""


class CoolifyValidationError(CoolifyAPIError):
    """422: Coolify rejected fields; `errors` holds its per-field messages."""


class CoolifyResponseError(CoolifyAPIError):
    """Coolify answered 2xx with a body this tool cannot read (wrong shape, missing uuid)."""


class UnexpectedError(ProvisionError):
    """A foreign exception reached an entry point: a bug. `incident` is also in the log with the traceback."""

    def __init__(self, exc: BaseException, incident: str) -> None:
        self.incident = incident
        super().__init__(f"unexpected error {type(exc).__name__} (incident {incident}): this is a bug in provision; "
                         f"the traceback is in the log under that id")


def with_note(exc: ProvisionError, note: str) -> ProvisionError:
    """`exc` with `note` added, keeping its class and context where the class allows (HealthTimeout keeps
    its log tail); other classes become a ProvisionError chained to `exc` by the caller."""
    if isinstance(exc, HealthTimeout):
        return exc.with_note(note)
    return ProvisionError(f"{exc}\n{note}")


def _format_field_errors(errors: Mapping[str, object] | Sequence[object]) -> str:
    if isinstance(errors, Mapping):
        lines = []
        for field, problems in errors.items():
            if isinstance(problems, (list, tuple)):
                problems = "; ".join(str(p) for p in problems)
            lines.append(f"  {field}: {problems}")
        return "\n".join(lines)
    return "\n".join(f"  {problem}" for problem in errors)
