"""Commands in the db container: one-off scheduled tasks (created disabled, run through POST .../execute, polled,
deleted), the SQL split into commands Coolify stores, and the roles script the db container keeps in its environment."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import re
import secrets
from collections.abc import Sequence

from ...core.errors import DatabaseStarting, HealthTimeout, Interrupted, ProvisionError, StartingTimeout
from ...core.model import Observed, Target
from ...infra.database import not_up_yet, psql_in_container
from .context import Context
from .models import Refs, TaskRun

TASK_FREQUENCY = "0 0 1 1 *"  # a one-off task's cron: it is disabled and only ever run through /execute
TASK_QUEUE_SLACK = 120.0  # seconds a task may wait for a queue worker, on top of its own timeout
TASK_FIRST_POLL = 0.5  # seconds between POST .../execute and the first look at the runs (a queued job)
# scheduled_tasks.command is `$table->string('command')` = varchar(255) on PostgreSQL
# (database/migrations/2023_12_31_173041_create_scheduled_tasks_table.php:19, never altered), and the API's rule has
# no maximum (app/Http/Controllers/Api/ScheduledTasksController.php:62, :138): a longer one is a 500 (SQLSTATE 22001)
TASK_COMMAND_MAX = 255
TASK_NAME_MAX = 255  # `name`: required|string|max:255 (ScheduledTasksController.php:61), varchar(255) (migration :18)
# a task runs in the only running container whatever `container` says (app/Jobs/ScheduledTaskJob.php:130-152): this
# refuses any container without psql, i.e. the api's
_PSQL_GUARD = "command -v psql>/dev/null||{ echo PROVISION_WRONG_CONTAINER;exit 97;};"
_RC = "rc=$?;echo PROVISION_RC=$rc;exit $rc"
# the Docker daemon's answers to an exec into a container that is being removed or was stopped meanwhile
_REPLACED = re.compile(r"cannot exec in a (deleted|stopped) state|No such container: |container [0-9a-f]+ is not running")
# The db container's copy of the script that makes the roles (the template's db environment references it):
# the roles task is then one short command, not the dozen a 5 KB script takes in 255-character pieces
ROLES_ENV = "PROVISION_ROLES"
STALE_ENV = "PROVISION_STALE_ENV"


class StaleRolesEnv(ProvisionError):
    """The db container's PROVISION_ROLES is not the script sent (a container started before the secrets last
    changed): the task ran nothing, and the script is sent in pieces instead."""


class Tasks:
    """One-off scheduled tasks of one env's Coolify."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.client = ctx, ctx.client

    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        """`sql` through psql in the service's db container, as one-off scheduled tasks (POST .../scheduled-tasks,
        POST .../execute, poll .../executions, DELETE: app/Http/Controllers/Api/ScheduledTasksController.php,
        app/Jobs/ScheduledTaskJob.php), each command at most TASK_COMMAND_MAX characters whatever the SQL
        (sql_task_commands); psql connects over the container's local socket as `user` (default POSTGRES_USER).
        The task is named `provision-<project>-<env>-<purpose>` (what Coolify's TaskFailed notification shows).
        Any read token can see a task's command and output, so callers put no plaintext secret in `sql`."""
        refs = observed.handle if isinstance(observed.handle, Refs) else None
        if refs is None or refs.service_uuid is None or not observed.exists:
            raise ProvisionError(f"{target.project!r} has no Coolify service in env {target.env!r}")
        name = f"provision-{target.project}-{target.env}-{purpose}"[:TASK_NAME_MAX]
        output = None
        if purpose == "roles" and user is not None:
            # the container's PROVISION_ROLES runs only when it is this very script (a container started before
            # the secrets last changed holds an older one): else the script is sent in pieces
            try:
                output = self.run_task(refs.service_uuid, "db", [roles_env_command(roles_env_payload(sql, user))],
                                        timeout=timeout, name=name)
            except StaleRolesEnv:
                pass
        if output is None:
            commands = sql_task_commands(sql, user, secrets.token_hex(5))
            output = self.run_task(refs.service_uuid, "db", commands, timeout=timeout, name=name)
        return "\n".join(line for line in output.splitlines() if not line.startswith("PROVISION_RC="))

    def run_task(self, uuid: str, container: str, commands: Sequence[str], *, timeout: float, name: str) -> str:
        """Run `commands` one after the other as one disabled task (never due: it runs only through /execute):
        created with the first, PATCHed to each next one once the previous run finished (ScheduledTaskJob loads
        the task when it runs, so a command is never changed under a queued run), then deleted. Returns the
        last run's output; a failed run raises ProvisionError quoting it, after a best-effort task removes what
        earlier commands wrote (sql_task_commands' directory). A command longer than TASK_COMMAND_MAX is refused
        before any request."""
        for command in commands:
            if len(command) > TASK_COMMAND_MAX:
                raise ProvisionError(
                    f"a scheduled task command of {len(command)} characters is longer than the {TASK_COMMAND_MAX} "
                    f"Coolify stores (scheduled_tasks.command is varchar({TASK_COMMAND_MAX}): "
                    f"database/migrations/2023_12_31_173041_create_scheduled_tasks_table.php:19); nothing was sent")
        if not commands:
            raise ProvisionError("no command to run as a scheduled task")
        self.ctx.check_version()
        body = {"name": name, "command": commands[0], "frequency": TASK_FREQUENCY, "container": container,
                "timeout": max(1, int(timeout)), "enabled": False}
        task = self.client.request_object("POST", f"/services/{uuid}/scheduled-tasks", body=body, keys=("uuid",))
        path = f"/services/{uuid}/scheduled-tasks/{task['uuid']}"
        seen: set[str] = set()  # runs already read: the next run is the one with an unseen uuid
        directory = task_directory(commands[0])
        done = 0
        try:
            message = ""
            for command in commands:
                if done:
                    self.client.request("PATCH", path, body={"command": command})
                try:
                    message = self._execute(path, container, timeout, seen)
                except ProvisionError as exc:
                    if done and directory and directory in str(exc) and not isinstance(exc, HealthTimeout):
                        # a later command found no directory (or no chunks) where the first made it: the
                        # container was replaced meanwhile (a restart); nothing ran, all can be sent again
                        raise DatabaseStarting(f"the {container} container was replaced while the task's commands "
                                               f"ran ({directory} is gone): {exc}") from exc
                    raise
                done += 1
            return message
        except ProvisionError as exc:
            if directory and 0 < done < len(commands) and not isinstance(exc, (HealthTimeout, Interrupted)):
                with contextlib.suppress(ProvisionError):  # best effort: the container's /tmp goes with it anyway
                    self.client.request("PATCH", path, body={"command": f"rm -rf {directory}"})
                    self._execute(path, container, min(timeout, 30.0), seen)
            raise
        finally:
            with contextlib.suppress(ProvisionError):
                self.client.request("DELETE", path)

    def _execute(self, path: str, container: str, timeout: float, seen: set[str]) -> str:
        """POST .../execute, then wait for the run it queued (a run whose uuid is not in `seen`, which it joins)
        to finish; its output, or ProvisionError quoting it. Runs are told apart by uuid, not position: the list
        is ordered by created_at, which has one-second resolution (ScheduledTask.php:73-76)."""
        self.client.request("POST", f"{path}/execute")
        self.ctx.sleep(TASK_FIRST_POLL)  # no worker runs it sooner: a poll at once would be wasted
        finished: list[TaskRun] = []

        def ran() -> str | None:
            listed = map(TaskRun.parse, self.client.request_list("GET", f"{path}/executions"))
            runs = [r for r in listed if r.uuid not in seen]
            over = [r for r in runs if str(r.status) != "running"]
            if over:
                finished.append(over[0])
                return None
            return f"run {runs[0].status}" if runs else "not picked up by a worker yet"

        outcome = self.ctx.wait_for({"task": ran}, timeout=timeout + TASK_QUEUE_SLACK, interval=0.5, max_interval=3.0)
        if not outcome.ok:
            raise StartingTimeout(f"Coolify did not run the task in the {container} container within "
                                f"{timeout + TASK_QUEUE_SLACK:.0f} s ({outcome.failures['task']})")
        run = finished[0]
        seen.add(run.uuid)
        message = run.message
        if run.status != "success" or "PROVISION_WRONG_CONTAINER" in message:
            failed = f"the task in the {container} container failed on Coolify: {message.strip()[-800:]}"
            if STALE_ENV in message:
                raise StaleRolesEnv(failed)
            # Coolify's words, psql's, the exec killed with its container (SIGKILL: 137) by a restart under way, or
            # Docker's for a container being replaced as the exec arrived (seen after a restart under load)
            if "No containers running" in message or not_up_yet(message) or message.rstrip().endswith(
                    "exit code: 137") or _REPLACED.search(message):
                raise DatabaseStarting(failed)
            raise ProvisionError(failed)
        return message


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# Up to 60 s for the server the container keeps: on a first start the image's entrypoint runs a temporary one on
# the socket only (listen_addresses='') and stops it when initdb is done, cutting off whoever connected to it
_AWAIT_SERVER = "i=0;until pg_isready -q -h 127.0.0.1||[ $i -ge 120 ];do i=$((i+1));sleep 0.5;done\n"


def _psql_script(sql: str, user: str | None, tag: str) -> str:
    """A shell script that waits for the container's lasting server, then runs `sql` with psql as `user` (the
    SQL in a quoted here-document)."""
    delimiter = f"PROVISION_SQL_{tag}"
    while delimiter in sql.splitlines():
        delimiter += "_"
    return f"{_AWAIT_SERVER}{psql_in_container(user)} <<'{delimiter}'\n{sql}\n{delimiter}\n"


def _packed(script: str) -> str:
    return base64.b64encode(gzip.compress(script.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def roles_env_payload(sql: str, user: str) -> str:
    """What PROVISION_ROLES holds: a psql script running `sql` as `user`, gzip-compressed and base64-encoded
    (one line of [A-Za-z0-9+/=]: nothing in it for a .env file or a shell to interpret)."""
    return _packed(_psql_script(sql, user, "ROLES"))


def roles_env_command(payload: str) -> str:
    """One task command (at most TASK_COMMAND_MAX characters) that runs the container's PROVISION_ROLES when
    it is `payload` (its sha256 compared), and otherwise fails at once, naming STALE_ENV, having run nothing."""
    digest = hashlib.sha256((payload + "\n").encode()).hexdigest()[:32]
    return (f'E=${ROLES_ENV};[ "$(echo "$E"|sha256sum|cut -c1-32)" = {digest} ]||{{ echo {STALE_ENV};exit 96;}};'
            f'echo "$E"|base64 -d|gunzip|sh;{_RC}')


def sql_task_commands(sql: str, user: str | None, tag: str) -> list[str]:
    """Shell commands, each at most TASK_COMMAND_MAX characters, that run `sql` (any text) with psql as `user` in
    the db container when run in order as scheduled tasks; the last prints psql's output and PROVISION_RC=<exit>.

    SQL that fits runs in one command (`echo <base64>|base64 -d|psql`). Else a psql script (the SQL in a quoted
    here-document) travels gzip-compressed and base64-encoded in chunks as large as fit: the first command (psql
    guard) makes the directory /tmp/provision.<tag> with mode 0700 (mkdir fails if it exists: nothing another
    process prepared is used, and no other user can add to it) and writes chunk 0; each next one writes one chunk
    (and fails in any other container, where the directory does not exist); the last (psql guard) joins them,
    checks them (gunzip verifies CRC and length: with a chunk lost or cut short nothing runs; a chunk written
    twice is the same file), runs the script and removes the directory, whatever psql did. `tag`: hex, unique
    per call."""
    psql = psql_in_container(user)
    single = f"{_PSQL_GUARD}echo {b64(sql)}|base64 -d|{psql};{_RC}"
    if len(single) <= TASK_COMMAND_MAX:
        return [single]
    payload = _packed(_psql_script(sql, user, tag))
    directory = f"/tmp/provision.{tag}"
    run = (f"D={directory};{_PSQL_GUARD}cat $D/[0-9]*|base64 -d|gunzip>$D/s&&sh $D/s;rc=$?;rm -rf $D;"
           f"echo PROVISION_RC=$rc;exit $rc")
    width = 1
    while True:  # the chunk names' width (equal for all: the glob sorts them) sets the room left for a chunk
        first = f"{_PSQL_GUARD}mkdir -m700 {directory}&&echo >{directory}/{0:0{width}}"
        first_room = (TASK_COMMAND_MAX - len(first)) // 4 * 4  # whole base64 quanta: each line decodes alone
        room = (TASK_COMMAND_MAX - len(f"echo >{directory}/{0:0{width}}")) // 4 * 4
        if first_room < 4:
            raise ProvisionError(f"the scheduled task directory {directory!r} leaves no room for the SQL")
        chunks = [payload[:first_room]] + [payload[i:i + room] for i in range(first_room, len(payload), room)]
        if len(str(len(chunks) - 1)) <= width:
            break
        width += 1
    commands = [f"{_PSQL_GUARD}mkdir -m700 {directory}&&echo {chunks[0]}>{directory}/{0:0{width}}"]
    commands += [f"echo {chunk}>{directory}/{n:0{width}}" for n, chunk in enumerate(chunks[1:], start=1)]
    return [*commands, run]


def task_directory(first_command: str) -> str | None:
    """The directory the first of sql_task_commands makes (None for a single command)."""
    found = re.search(r"mkdir -m700 (/tmp/provision\.[0-9a-f]+)&&", first_command)
    return found.group(1) if found else None

