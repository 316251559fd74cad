"""The tasks that change stacks: provision (with --prune), plan, stop/start/restart, destroy, adopt, lock and
unlock, init."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from invoke.context import Context
from invoke.exceptions import Exit

from .flags import (
    ALL_HELP,
    ENV_HELP,
    HOOKS_HELP,
    KEEP_GOING_HELP,
    LOCK_HELP,
    NO_COLOR_HELP,
    PARALLEL_HELP,
    PROJECT_HELP,
    QUIET_HELP,
    SET_HELP,
    WIDE_HELP,
    ProvisionTask,
    number,
    require_project,
    task,
)
from .session import emit, exit_if_failed, provisioner_for, require_env, session, workspace

if TYPE_CHECKING:
    from ..core.model import ControlVerb
    from ..core.results import ProjectResult
    from ..service import Provisioner


@task(
    iterable=["set_"],
    help={
        "env": ENV_HELP,
        "project": "Only this project; default: every project declared in the env",
        "create": "Also create --project when the env file does not declare it (a typo guard)",
        "json": "Print the result as one JSON object on stdout",
        "show_secrets": "Show db_url passwords instead of ***",
        "keep_going": "With several projects: continue after a failure (default: start no new ones)",
        "parallel": "How many projects to provision at once (default 4)",
        "set": SET_HELP,
        "skip_hooks": HOOKS_HELP,
        "prune": "Also destroy (keeping data) projects deployed in the env but no longer declared; needs --yes",
        "yes": "Confirm --prune",
        "lock_timeout": LOCK_HELP,
        "quiet": QUIET_HELP,
        "no_color": NO_COLOR_HELP,
    },
)
def provision(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
              show_secrets: bool = False, keep_going: bool = False, parallel: str = "4", set_: list[str] | None = None,
              skip_hooks: bool = False, prune: bool = False, yes: bool = False, lock_timeout: str | None = None,
              create: bool = False, quiet: bool = False, no_color: bool = False) -> None:
    """Create or update projects' stacks and wait until they answer; summary on stderr, JSON with --json."""
    from . import output

    workers = int(number("parallel", parallel, minimum=1))
    with session(quiet=quiet, color=not no_color) as reporter:
        provisioner = provisioner_for(env, reporter, lock_timeout=lock_timeout, sets=set_, skip_hooks=skip_hooks)
        projects = [project] if project is not None else [p.name for p in provisioner.config.projects]
        if not projects and not prune:
            raise Exit(f"error: {provisioner.config.relpath} declares no projects: pass --project=NAME", code=2)
        summary = provisioner.provision_many(projects, keep_going=keep_going, parallel=workers, create=create)
        if prune:
            summary = summary.extended(provisioner.prune(yes=yes))
    if not quiet:
        sys.stderr.write(output.table(summary.results, ("project", "action", "status", "duration_s", "api_url"),
                                      width=output.terminal_width(), shrink=("project", "status")) + "\n")
    if json:
        emit(output.summary_json(summary, show_secrets=show_secrets))
    exit_if_failed(summary)


@task(iterable=["set_"], help={"env": ENV_HELP, "project": "Only this project", "json": "Print JSON on stdout",
                               "detailed_exitcode": "Exit 0 when nothing would change, 2 when changes are pending, 1 on error",
                               "set": SET_HELP,
                               "offline": "Ask no server (a Coolify env needs no credentials): validate, render and "
                                          "compare with what this machine last applied",
                               "wide": WIDE_HELP})
def plan(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
         detailed_exitcode: bool = False, set_: list[str] | None = None, offline: bool = False,
         wide: bool = False) -> None:
    """Show what provision would do per project (create, update with a diff, no-op, drift, orphan); changes nothing."""
    from . import output

    with session(failure_code=1 if detailed_exitcode else None, read_only=True) as reporter:
        provisioner = provisioner_for(env, reporter, sets=set_, offline=offline)
        items = provisioner.plan_offline(project) if offline else provisioner.plan(project)
    if json:
        emit(output.to_json({"env": require_env(env), "changes": any(i.changes for i in items),
                             "projects": [i.to_dict() for i in items]}))
    else:
        emit(output.plan_text(items, wide=wide))
    if detailed_exitcode and any(i.changes for i in items):
        raise Exit(code=2)


def fleet(env: str | None, project: str | None, all_: bool, parallel: str, keep_going: bool, json: bool,
          quiet: bool, no_color: bool, lock_timeout: str | None, action: str,
          operation: Callable[[Provisioner, str], ProjectResult], *, skip_hooks: bool = False) -> None:
    """One project, or with --all every deployed project of the env (bounded parallelism, a summary table on
    stderr, exit 1 when any failed)."""
    from . import output

    if all_ and project is not None:
        raise Exit("error: --all and --project exclude each other: pass one", code=2)
    if not all_:
        project = require_project(project)
    workers = int(number("parallel", parallel, minimum=1))
    with session(quiet=quiet, color=not no_color) as reporter:
        provisioner = provisioner_for(env, reporter, lock_timeout=lock_timeout, skip_hooks=skip_hooks)
        if project is not None:
            result = operation(provisioner, project)
            if json or not quiet:
                emit(output.to_json(result.to_dict()) if json else
                     output.table([result], ("project", "status", "changed", "api_url", "db_url")))
            return
        summary = provisioner.run_many(provisioner.deployed(), lambda name: operation(provisioner, name),
                                       action=action, keep_going=keep_going, parallel=workers)
    if not quiet:
        sys.stderr.write(output.table(summary.results, ("project", "action", "status", "changed", "duration_s"),
                                      width=output.terminal_width(), shrink=("project", "status")) + "\n")
    if json:
        emit(output.summary_json(summary))
    exit_if_failed(summary)


_CONTROL_HELP = {"env": ENV_HELP, "project": PROJECT_HELP, "lock_timeout": LOCK_HELP, "json": "Print JSON",
                 "quiet": QUIET_HELP, "no_color": NO_COLOR_HELP, "all": ALL_HELP, "parallel": PARALLEL_HELP,
                 "keep_going": KEEP_GOING_HELP}


def _control_task(verb: ControlVerb, summary: str) -> ProvisionTask:
    """The task `verb` (stop, start, restart): one project's containers, or with --all every deployed project's."""

    def body(c: Context, env: str | None = None, project: str | None = None, lock_timeout: str | None = None,
             json: bool = False, quiet: bool = False, no_color: bool = False, all: bool = False, parallel: str = "4",
             keep_going: bool = False) -> None:
        fleet(env, project, all, parallel, keep_going, json, quiet, no_color, lock_timeout, verb,
              lambda provisioner, name: provisioner.control(name, verb))

    body.__name__ = body.__qualname__ = verb
    body.__doc__ = summary
    return task(help=_CONTROL_HELP)(body)


stop = _control_task("stop", "Stop a project's containers (or every project's, --all); data and configuration are kept.")
start = _control_task("start", "Start a stopped project (or every project, --all) and wait until it answers.")
restart = _control_task("restart", "Restart a project's containers (or every project's, --all) and wait until it answers.")


@task(help={"env": ENV_HELP, "project": PROJECT_HELP,
            "delete_data": "Also delete the database volume (needs --yes); a pg_dump is written first",
            "yes": "Confirm --delete-data", "backup": "With --delete-data: write a pg_dump first (default)",
            "skip_hooks": HOOKS_HELP, "lock_timeout": LOCK_HELP, "json": "Print JSON", "quiet": QUIET_HELP,
            "no_color": NO_COLOR_HELP, "all": ALL_HELP + " (needs --yes; data is kept)", "parallel": PARALLEL_HELP,
            "keep_going": KEEP_GOING_HELP,
            "leave_branches": "Destroy a parent that has live branches (they are copies: they keep running)"})
def destroy(c: Context, env: str | None = None, project: str | None = None, delete_data: bool = False,
            yes: bool = False, backup: bool = True, skip_hooks: bool = False, lock_timeout: str | None = None,
            json: bool = False, quiet: bool = False, no_color: bool = False, all: bool = False, parallel: str = "4",
            keep_going: bool = False, leave_branches: bool = False) -> None:
    """Remove a project's containers and network (or every project's, --all --yes); its data volume is kept
    unless --delete-data --yes (one project at a time)."""
    from . import output

    if all:
        if delete_data:
            raise Exit("error: --delete-data deletes one project's data at a time: it does not go with --all", code=2)
        if not yes:
            raise Exit("error: destroy --all removes the stack of every project in the env (their data is kept): "
                       "add --yes to confirm", code=2)
        fleet(env, project, True, parallel, keep_going, json, quiet, no_color, lock_timeout, "destroy",
              lambda provisioner, name: provisioner.destroy(name, leave_branches=True), skip_hooks=skip_hooks)
        return
    project = require_project(project)
    with session(quiet=quiet, color=not no_color) as reporter:
        provisioner = provisioner_for(env, reporter, lock_timeout=lock_timeout, skip_hooks=skip_hooks)
        result = provisioner.destroy(project, delete_data=delete_data, yes=yes, backup=backup,
                                     leave_branches=leave_branches)
    if json:
        emit(output.to_json(result.to_dict()))
    elif not quiet:
        emit(output.table([result], ("project", "status", "changed")))


@task(help={"env": "The env file to create when missing (default dev)",
            "backend": "Its backend: local (default) or coolify"})
def init(c: Context, env: str = "dev", backend: str = "local") -> None:
    """Make this directory a provision project, or complete it: an env file, an owner id in every env file,
    .gitignore entries, example hooks. Never overwrites a file; run twice, the second run changes nothing."""

    with session(live=False):
        result = workspace(for_init=True).init(env, backend=backend)
    for action in result.actions:
        emit(action)
    if not result.changed:
        emit("nothing to do: this is a provision project already")


@task(help={"env": ENV_HELP, "json": "Print JSON"})
def lock(c: Context, env: str | None = None, json: bool = False) -> None:
    """Show who holds the env's project locks on the backend (Coolify: every runner's changing runs)."""
    from . import output

    with session(read_only=True) as reporter:
        held = provisioner_for(env, reporter).locks()
    if json:
        emit(output.to_json({"locks": [info.to_dict() for info in held]}))
    else:
        emit(output.locks_table(held))


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "yes": "Confirm: break the lock even if its holder runs"})
def unlock(c: Context, env: str | None = None, project: str | None = None, yes: bool = False) -> None:
    """Break a project's stale lock on the backend (its holder died); needs --yes."""
    project = require_project(project)
    with session() as reporter:
        broken = provisioner_for(env, reporter).unlock(project, yes=yes)
    emit(f"broke the lock of {project}" if broken else f"{project} holds no lock")


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "yes": "Confirm the take-over", "lock_timeout": LOCK_HELP,
            "json": "Print JSON"})
def adopt(c: Context, env: str | None = None, project: str | None = None, yes: bool = False,
          lock_timeout: str | None = None, json: bool = False) -> None:
    """Take over a same-named stack (Coolify service, local compose project) that carries no or another owner id;
    needs --yes."""
    from . import output

    project = require_project(project)
    with session() as reporter:
        result = provisioner_for(env, reporter, lock_timeout=lock_timeout).adopt(project, yes=yes)
    if json:
        emit(output.to_json(result.to_dict()))
    else:
        emit(output.table([result], ("project", "status", "changed")))
