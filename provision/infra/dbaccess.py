"""How PostgreSQL's client tools reach one project's database: inside its running db container where the
backend can exec there, else from this machine through the db's published port. Shared by `psql` and the
data verbs (backup, restore, rotate, upgrade-db, move); it reads the backend, and writes nothing."""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

from ..backends.base import Backend, InContainer, refusal
from ..core.errors import ConfigError, NotSupported, ProvisionError
from ..core.model import Handle, Prepared, Target
from ..core.secrets import Secret
from .database import DbAccess
from .shell import ShellCommand


def access(backend: Backend, target: Target, handle: Handle | None, prepared: Prepared) -> DbAccess:
    """The db container's own tools (their major is the server's) where the backend can exec in it, else
    this machine's tools through the published port; NotSupported saying what would work."""
    try:
        return container_access(backend, target, prepared)
    except NotSupported as cannot_exec:
        found = host_access(backend, target, handle, prepared)
        if found is None:
            raise NotSupported(
                f"{cannot_exec} And the db of {target.project!r} is not published to this machine: set "
                f"variables.db_public_port (a port of the server reachable from here) in envs/{target.env}.yml, "
                f"run provision, and PostgreSQL's tools on this machine do it through that port") from None
        return found


def container_access(backend: Backend, target: Target, prepared: Prepared, *, tty: bool = False) -> DbAccess:
    """The tools inside the running db container (`exec_argv`; NotSupported where the backend cannot)."""
    if not isinstance(backend, InContainer):
        raise refusal(backend, InContainer, target.config, target.project)
    environment = _environment(prepared)
    prefix = backend.exec_argv(target, "db", [], env_names=tuple(environment), tty=tty)
    return DbAccess(tuple(prefix), "127.0.0.1", 5432, *_role(target), environment, where="in the db container")


def host_access(backend: Backend, target: Target, handle: Handle | None, prepared: Prepared) -> DbAccess | None:
    """This machine's tools through the db's published port; None when it is not published here."""
    endpoints = backend.endpoints(target, handle, prepared)
    if endpoints.db_url is None or endpoints.db_url_scope not in ("host", "public"):
        return None
    url = urlsplit(endpoints.db_url.reveal())
    host, port = url.hostname or "127.0.0.1", url.port or 5432
    return DbAccess((), host, port, *_role(target), _environment(prepared), where=f"from this machine ({host}:{port})")


def psql_command(backend: Backend, target: Target, handle: Handle | None, prepared: Prepared, *,
                 sql: str | None, via: str, tty: bool) -> ShellCommand:
    """The command that opens psql on the project's database: this machine's psql when there is one and the
    database is published to it (`via` auto or host), else psql inside the db container (auto or container)."""
    if via not in ("auto", "host", "container"):
        raise ConfigError(f"--via {via!r}: use auto, host or container")
    options = ["--dbname", str(target.spec.variables["db_name"]), *(["--command", sql] if sql is not None else [])]
    if via != "container":
        client = shutil.which("psql")
        host = host_access(backend, target, handle, prepared)
        if client is not None and host is not None:
            return ShellCommand(tuple(host.argv("psql", *options)), host.environment, via="this machine's psql")
        if via == "host":
            raise ProvisionError("this machine has no psql (install postgresql-client)" if client is None else
                                 f"the db of {target.project!r} is not published to this machine "
                                 f"(set variables.db_public_port), so only --via=container can reach it")
    inside = container_access(backend, target, prepared, tty=tty)
    return ShellCommand(tuple(inside.argv("psql", *options)), inside.environment, via="psql in the db container")


def _role(target: Target) -> tuple[str, str]:
    return str(target.spec.variables["db_user"]), str(target.spec.variables["db_name"])


def _environment(prepared: Prepared) -> dict[str, Secret]:
    password = prepared.secrets.get("DB_PASSWORD")
    return {"PGPASSWORD": password} if password is not None else {}
