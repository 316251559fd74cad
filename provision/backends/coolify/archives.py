"""Continuous archiving on Coolify, through its API only: the archive is read, and a restore's report is read, by
one-off scheduled tasks in the stack's `archiver` container (it mounts the repository volume). Each task command is
one short line (Coolify stores at most 255 characters): the reading script itself is in the archiver's environment
(ARCHIVE_READ, rendered for Coolify only), and a restore's report is a file the one-shot `restore` service left in the
repository (core/archiving.py RESTORE_START). A restore drill (verify) runs in the archiver too: one task starts
templates/drill.sh (in the archiver's environment) in the background, short tasks then read its report; the db, the
api and the stack's compose are never touched."""

from __future__ import annotations

import re

from ...core import archive_scripts
from ...core.archive_scripts import DrillReport, DrillRequest
from ...core.archiving import REPOSITORY_PATH, ArchiveFacts, Restored
from ...core.errors import CommandFailed, ProvisionError
from ...core.model import Observed, Target
from .models import Refs
from .tasks import TASK_NAME_MAX, Tasks

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # a lineage or volume key: what may stand unquoted in a task command
# the archiver's environment has ARCHIVE_READ; any other container (a task runs in the only running one, whatever
# it names: app/Jobs/ScheduledTaskJob.php:130-152) is refused before it reads anything
_GUARD = '[ -n "$ARCHIVE_READ" ]||{ echo PROVISION_NO_ARCHIVE_READ;exit 97;};'
NO_REPORT = "PROVISION_NO_RESTORE_REPORT"
READ_TIMEOUT = 60.0
# an archiver rendered before drills ran in it has no DRILL_SCRIPT: refused before anything starts
_DRILL_GUARD = '[ -n "$DRILL_SCRIPT" ]||{ echo PROVISION_NO_DRILL;exit 97;};'
DRILL_RUNNING = "PROVISION_DRILL_RUNNING"
DRILL_STARTED = "PROVISION_DRILL_STARTED"
# seconds between two reads of a running drill's report, growing by half each time up to DRILL_POLL_MAX: each read
# is a task (about 6 requests of the 200 a minute Coolify allows a user), and a long drill needs no second's news
DRILL_POLL, DRILL_POLL_MAX = 2.0, 15.0
_PG_TIME = re.compile(r"^[0-9: .+-]*$")  # recovery_target_time's form (archiving.pg_time), single-quoted below


def read_command(lineage: str) -> str:
    """The task command that prints `lineage`'s facts (archive_scripts.READ_SCRIPT, from the archiver's environment)."""
    return f'{_GUARD}sh -c "$ARCHIVE_READ" read {REPOSITORY_PATH}/{_checked(lineage)}'


def report_command(volume_key: str) -> str:
    """The task command that prints the report of the restore into `volume_key`: `RC <exit code>` and its output,
    or NO_REPORT when it left none."""
    out = f"{archive_scripts.RESTORE_OUTCOME}{_checked(volume_key)}"
    return f'{_GUARD}O={out};[ -f $O.rc ]||{{ echo {NO_REPORT};exit 0;}};echo "RC $(cat $O.rc)";cat $O.log'


def drill_command(request: DrillRequest) -> str:
    """The task command that starts a drill (templates/drill.sh, from the archiver's environment: the guard refuses
    any other container) in the background: its process outlives the task (its output goes to the report files),
    and the task prints DRILL_STARTED. Short names (drill.sh passes them on as restore.sh's): T the token, L the
    lineage, B the base, X the xid or G the target time, W recovery's wait."""
    if not _PG_TIME.match(request.target) or not _NAME.match(request.token):
        raise ProvisionError(f"drill: {request.target!r} is no recovery target time, or {request.token!r} no token")
    goal = f"X={int(request.xid)}" if request.xid is not None else f"G='{request.target}'"
    return (f"{_DRILL_GUARD}T={request.token} L={_checked(request.lineage)} B={_checked(request.base)} {goal} "
            f'W={int(request.wait)} sh -c "$DRILL_SCRIPT">/dev/null 2>&1&echo {DRILL_STARTED}')


def drill_report_command(token: str) -> str:
    """The task command that prints a finished drill's report (`RC <exit code>` and its output) and removes it, or
    DRILL_RUNNING while the drill runs."""
    out = f"{archive_scripts.DRILL_OUTCOME}{_checked(token)}"
    return (f'{_GUARD}O={out};[ -f $O.rc ]||{{ echo {DRILL_RUNNING};exit 0;}};echo "RC $(cat $O.rc)";cat $O.log;'
            f"rm -f $O.rc $O.log")


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ProvisionError(f"{name!r} is no lineage or volume key (letters, digits, '_', '.', '-')")
    return name


class CoolifyArchives:
    """`Archives` and `RestoresInStack` of the Coolify backend."""

    def __init__(self, tasks: Tasks) -> None:
        self.tasks = tasks

    def _run(self, target: Target, observed: Observed, command: str, purpose: str) -> str:
        refs = observed.handle if isinstance(observed.handle, Refs) else None
        if refs is None or refs.service_uuid is None or not observed.exists:
            raise ProvisionError(f"{target.project!r} has no Coolify service in env {target.env!r}")
        name = f"provision-{target.project}-{target.env}-{purpose}"[:TASK_NAME_MAX]
        try:
            return self.tasks.run_task(refs.service_uuid, "archiver", [command], timeout=READ_TIMEOUT, name=name)
        except ProvisionError as exc:
            if "PROVISION_NO_ARCHIVE_READ" in str(exc) or "PROVISION_NO_DRILL" in str(exc):
                raise ProvisionError(f"the archiver of {target.project!r} in env {target.env!r} has no ARCHIVE_READ "
                                     f"or DRILL_SCRIPT "
                                     f"(its stack was rendered by an earlier provision, or the task ran in another "
                                     f"container): provision it again, then retry") from exc
            raise

    def facts(self, target: Target, observed: Observed, lineage: str) -> ArchiveFacts:
        """`Archives.archive_facts`: a task in the archiver prints the lineage's files; an archiver that does not run
        is said so (no task: nothing else mounts the repository)."""
        running = bool((archiver := observed.services.get("archiver")) and archiver.running)
        offsite_running = bool((offsite := observed.services.get("offsite")) and offsite.running)
        if not running:
            return ArchiveFacts(lineage=lineage, running=False, status_text=None, offsite_running=offsite_running)
        output = self._run(target, observed, read_command(lineage), "backups")
        return archive_scripts.parse_read(output, lineage, running, offsite_running=offsite_running)

    def outcome(self, target: Target, observed: Observed, volume_key: str) -> Restored:
        """`RestoresInStack.restore_outcome`: the restore's report read by a task in the archiver."""
        output = self._run(target, observed, report_command(volume_key), "restore-report")
        if NO_REPORT in output:
            raise ProvisionError(f"the restore into {volume_key} of {target.project!r} left no report in the "
                                 f"repository: it did not run")
        log = _reported(output, f"the restore report of {volume_key}", ["restore", volume_key],
                        "the one-shot restore service of the stack (PostgreSQL's log above)")
        reached, counts, lines = archive_scripts.parse_restored(log)
        return Restored(volume=volume_key, reached=reached, row_counts=counts, log=tuple(lines))

    def drill(self, target: Target, observed: Observed, request: DrillRequest, *, timeout: float) -> DrillReport:
        """`DrillsInStack.drill_archive`: one task starts the drill in the archiver, short tasks read its report
        (after DRILL_POLL seconds, then less often) until it is there (removed as it is read), within `timeout`
        seconds; CommandFailed with its output when it failed, ProvisionError when the archiver does not run or no
        report came."""
        archiver = observed.services.get("archiver")
        if archiver is None or not archiver.running:
            raise ProvisionError(f"the archiver of {target.project!r} in env {target.env!r} does not run: a drill runs "
                                 f"in it")
        started = self._run(target, observed, drill_command(request), "verify")
        if DRILL_STARTED not in started:
            raise ProvisionError(f"the drill did not start in the archiver: {started.strip()[-300:]!r}")
        clock, sleep = self.tasks.ctx.clock, self.tasks.ctx.sleep
        deadline, pause = clock() + timeout, DRILL_POLL
        while True:
            sleep(pause)
            pause = min(DRILL_POLL_MAX, pause * 1.5)
            output = self._run(target, observed, drill_report_command(request.token), "verify-report")
            if DRILL_RUNNING not in output:
                break
            if clock() > deadline:
                raise ProvisionError(f"the drill in the archiver of {target.project!r} left no report within "
                                     f"{timeout:.0f} s (its scratch directory is removed by the next drill)")
        return archive_scripts.parse_drill(_reported(output, "the drill's report", ["drill", request.token],
                                                     "the drill in the archiver (restore.sh and PostgreSQL's log above)"))


def _reported(output: str, what: str, argv: list[str], hint: str) -> str:
    """The log of a report read back by a task (`RC <exit code>` then the log); ProvisionError when it is unreadable,
    CommandFailed with the log's tail when the code is not 0."""
    head, _, log = output.partition("\n")
    code = head.removeprefix("RC ").strip()
    if not head.startswith("RC ") or not code.lstrip("-").isdigit():
        raise ProvisionError(f"{what} is unreadable: {output[:200]!r}")
    if int(code) != 0:
        raise CommandFailed(argv, int(code), log[-4000:], hint=hint)
    return log
