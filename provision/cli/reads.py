"""The tasks that only read: status, outputs, logs, psql, list, render, history, doctor."""

from __future__ import annotations

import sys
from collections.abc import Callable

from invoke.context import Context
from invoke.exceptions import Exit

from .flags import ENV_HELP, PROJECT_HELP, SET_HELP, WIDE_HELP, number, parse_since, require_project, task
from .session import emit, provisioner_for, require_env, session, workspace


@task(help={"env": ENV_HELP, "project": PROJECT_HELP,
            "format": "env or json: for scripts, with the real password (default: env, masked on a terminal)",
            "show_secrets": "On a terminal without --format: print the real db_url password instead of ***"})
def outputs(c: Context, env: str | None = None, project: str | None = None, format: str | None = None,
            show_secrets: bool = False) -> None:
    """Print a project's API_URL and DB_URL (dotenv lines or JSON). With --format, or when stdout is not a
    terminal, the values are the real ones, password included: that is what scripts read them for."""
    from . import output

    project = require_project(project)
    formatters: dict[str, Callable[..., str]] = {"env": output.outputs_env, "json": output.outputs_json}
    if format is not None and format not in formatters:
        raise Exit(f"error: --format must be env or json, not {format!r}", code=2)
    with session(read_only=True) as reporter:
        result = provisioner_for(env, reporter).outputs(project)
    for_machines = format is not None or not sys.stdout.isatty()
    emit(formatters[format or "env"](result, show_secrets=show_secrets or for_machines))


@task(help={"env": ENV_HELP, "project": "Only this project", "json": "Print JSON on stdout",
            "show_secrets": "Show db_url passwords instead of ***",
            "watch": "Refresh every N seconds (default 2) until Ctrl-C; with --json, one JSON line per refresh",
            "wide": WIDE_HELP + "; adds db_url"},
      optional=["watch"])
def status(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
           show_secrets: bool = False, watch: str | bool | None = None, wide: bool = False) -> None:
    """Show each project's state, its services' health, what it costs (memory, CPU, uptime) and its URLs."""
    from ..infra import interrupts
    from . import output

    every = None if watch in (None, False) else (
        2.0 if watch is True else number("watch", str(watch), minimum=0.5, maximum=3600, integer=False))
    with session(read_only=True) as reporter:
        provisioner = provisioner_for(env, reporter)
        try:
            while True:
                emit(output.status_view(provisioner.status(project), json=json, show_secrets=show_secrets,
                                        every=every, wide=wide, clear=sys.stdout.isatty()))
                if every is None:
                    return
                interrupts.sleep(every)
        except (KeyboardInterrupt, interrupts.Interrupted):
            if every is None:
                raise
            # a watch ends with Ctrl-C: that is no failure


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "service": "Only this service (db or api)",
            "tail": "Lines per service (default 100)", "follow": "Keep printing new lines until Ctrl-C",
            "since": "Only lines written since then: 30s, 10m, 2h, 1d, 1h30m, or a time like 2026-11-30T14:00:00Z"},
      aliases=["log"])
def logs(c: Context, env: str | None = None, project: str | None = None, service: str | None = None,
         tail: str = "100", follow: bool = False, since: str | None = None) -> None:
    """Print the last lines of a project's container logs (secrets redacted); --follow keeps printing."""
    project = require_project(project)
    lines = int(number("tail", tail, minimum=1))
    moment = parse_since(since) if since is not None else None
    with session(read_only=True) as reporter:
        chunks = provisioner_for(env, reporter).logs(project, service=service, tail=lines, since=moment, follow=follow)
        try:
            for chunk in chunks:
                sys.stdout.write(chunk if follow else chunk.rstrip("\n") + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            if not follow:
                raise  # following ends with Ctrl-C: that is no failure


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "command": "Run this SQL and exit (psql --command)",
            "via": "host: this machine's psql; container: psql in the db container; auto (default): host when it can"})
def psql(c: Context, env: str | None = None, project: str | None = None, command: str | None = None,
         via: str = "auto") -> None:
    """Open psql on a project's database (the password goes in psql's environment, never on a command line);
    exits 1 when psql fails."""
    from ..infra import shell

    project = require_project(project)
    with session(read_only=True) as reporter:
        interactive = command is None and sys.stdin.isatty() and sys.stdout.isatty()
        psql_command = provisioner_for(env, reporter).psql(project, sql=command, via=via, tty=interactive)
        if interactive:
            sys.stderr.write(f"provision: {psql_command.via} on {project!r} (\\q quits)\n")
        code = shell.run(psql_command)
    if code != 0:
        raise Exit(f"error: psql exited {code}", code=1)


@task(iterable=["set_"], help={"env": ENV_HELP, "project": PROJECT_HELP, "set": SET_HELP,
                               "show_secrets": "Interpolate the project's secrets instead of showing ${VAR} references"})
def render(c: Context, env: str | None = None, project: str | None = None, show_secrets: bool = False,
           set_: list[str] | None = None) -> None:
    """Print the compose file provision would apply; changes nothing and contacts no server (a Coolify env
    needs no credentials for it)."""
    project = require_project(project)
    with session(read_only=True) as reporter:
        from ..core.render import reveal_secrets

        stack, prepared = provisioner_for(env, reporter, sets=set_, offline=True).render(project)
        text = reveal_secrets(stack.text, prepared.secrets) if show_secrets else stack.text
    emit(text)


@task(name="list", help={"env": "Only this env (default: every env in envs/)", "json": "Print JSON",
                         "show_secrets": "Show db_url passwords instead of ***", "wide": WIDE_HELP + "; adds db_url"})
def list_(c: Context, env: str | None = None, json: bool = False, show_secrets: bool = False,
          wide: bool = False) -> None:
    """List projects: declared, provisioned or deployed, with status and URLs."""
    from . import output

    with session(read_only=True) as reporter:
        results = workspace().list_projects(env, reporter=reporter)
    if json:
        emit(output.to_json({"projects": [r.to_dict(show_secrets=show_secrets) for r in results]}))
    else:
        emit(output.list_table(results, show_secrets=show_secrets, wide=wide))


@task(help={"env": ENV_HELP, "json": "Print the checks as JSON on stdout"})
def doctor(c: Context, env: str | None = None, json: bool = False) -> None:
    """Check an env's backend before a first run; exit 0 only when every check passes. Coolify: the API and its
    version, the token's abilities, the servers, and that Coolify accepts what provision sends (a throwaway
    project, lock, service and task, removed again). Local: the Docker Engine and Compose v2. Writes no state."""
    from . import output

    with session(read_only=True) as reporter:
        report = provisioner_for(env, reporter).doctor()
    emit(output.to_json(report.to_dict()) if json else report.text())
    if not report.ok:
        raise Exit(code=1)


@task(help={"env": ENV_HELP, "project": "Only this project", "json": "Print JSON lines",
            "limit": "Last N records (default 50)", "wide": WIDE_HELP + "; adds host, config hash, detail"})
def history(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
            limit: str = "50", wide: bool = False) -> None:
    """Show who changed what and when: every state-changing operation, from the state directory."""
    from . import output

    count = int(number("limit", limit, minimum=1))
    with session(read_only=True):
        records = workspace().history(require_env(env), project)[-count:]
    emit(output.history_lines(records) if json else output.history_table(records, wide=wide))
