"""Continuous archiving on the local engine: read a project's archive (the repository volume's status.json and
backup_info files, through a throwaway container of the db image that mounts it read-only), and restore a point in
time into a new data volume with a one-off container of the db image (the repository mounted read-only): the
base backup untarred, recovery.signal, restore_command copying from the archive, recovery_target_time, promotion,
row counts, a clean stop. The container has no network; it is labelled like every helper and removed when it ends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

from ...core import archiving, names
from ...core.archiving import (
    REPOSITORY_PATH,
    REPOSITORY_VOLUME,
    ArchiveFacts,
    Restored,
    RestoreRequest,
    pg_time,
)
from ...core.errors import CommandFailed, ProvisionError
from ...core.model import Observed, Target
from ...core.render import volume_labels_of
from .engine import COMPOSE_PROJECT_LABEL, COMPOSE_VOLUME_LABEL, HELPER_LABEL, Engine
from .facts import exec_not_started
from .volumes import DataVolumes

# reads one lineage of the repository: status.json, then each complete base's backup_info, between markers
_READ = r"""D="$1"
if [ -f "$D/status.json" ]; then echo '=== status'; cat "$D/status.json"; fi
if [ -f "$D/offsite.json" ]; then echo '=== offsite'; cat "$D/offsite.json"; fi
echo '=== df'; df -Pk "${D%/*}" | tail -n 1
for b in $(ls "$D/base" 2>/dev/null | grep -v '^tmp-'); do
  [ -f "$D/base/$b/backup_info" ] && { echo "=== base $b"; cat "$D/base/$b/backup_info"; }
done
exit 0"""

# restores into the volume mounted at $P (empty): see the module's docstring; prints COUNT lines and REACHED
_RESTORE = r"""set -eu
P=/var/lib/postgresql/data; W="/repo/$LINEAGE/wal"
[ -z "$(ls -A "$P" 2>/dev/null)" ] || { echo "the new data volume is not empty" >&2; exit 3; }
tar -xzf "/repo/$LINEAGE/base/$BASE/base.tar.gz" -C "$P"
rm -f "$P/postmaster.pid"; touch "$P/recovery.signal"
mkdir -p /var/run/postgresql
chown -R postgres:postgres "$P" /var/run/postgresql; chmod 700 "$P"
if command -v gosu >/dev/null 2>&1; then as="gosu postgres"
elif command -v su-exec >/dev/null 2>&1; then as="su-exec postgres"
else as="setpriv --reuid=postgres --regid=postgres --init-groups"; fi
rc="if [ -f $W/%f ]; then cp $W/%f %p; elif [ -f $W/%f.partial ]; then cp $W/%f.partial %p; else exit 1; fi"
run() {
  $as postgres -D "$P" -c listen_addresses= -c hot_standby=off -c "restore_command=$rc" "$@" >/tmp/pg.log 2>&1 &
  pid=$!; i=0
  while :; do
    if ! kill -0 $pid 2>/dev/null; then return 1; fi
    s=$($as psql -X -A -t -h /var/run/postgresql -U "$ADMIN" -d "$DB" -c 'SELECT pg_is_in_recovery()' 2>/dev/null || true)
    [ "$s" = f ] && return 0
    i=$((i + 1)); [ $i -gt $((WAIT * 4)) ] && { echo "recovery did not end in $WAIT s" >&2; tail -n 20 /tmp/pg.log >&2; exit 4; }
    sleep 0.25
  done
}
reached=target
if [ -n "$XID" ]; then goal="recovery_target_xid=$XID"; else goal="recovery_target_time=$TARGET"; fi
if [ -n "$TARGET$XID" ]; then
  if ! run -c "$goal" -c recovery_target_action=promote; then
    if grep -q 'recovery ended before configured recovery target was reached' /tmp/pg.log; then
      reached=end  # no commit after the target in the archive: all of it is the state at the target
      run || { tail -n 20 /tmp/pg.log >&2; exit 5; }
    else tail -n 20 /tmp/pg.log >&2; exit 5; fi
  fi
else
  reached=end; run || { tail -n 20 /tmp/pg.log >&2; exit 5; }
fi
if [ "$reached" = end ]; then  # all of the archive was replayed: it must have reached the archive's newest segment
  redo=$(sed -n 's/.*redo done at \([0-9A-F]*\)\/\([0-9A-F]*\).*/\1 \2/p' /tmp/pg.log | tail -n 1)
  newest=$(ls "$W" | sed -n 's/^[0-9A-F]\{8\}\([0-9A-F]\{16\}\).*/\1/p' | sort | tail -n 1)
  if [ -n "$redo" ] && [ -n "$newest" ]; then
    set -- $redo
    seg=$(( (0x$1 * 4294967296 + 0x$2) / 16777216 ))
    last=$(( 0x$(echo "$newest" | cut -c1-8) * 256 + 0x$(echo "$newest" | cut -c9-16) ))
    if [ "$seg" -lt "$last" ]; then
      echo "recovery stopped at $1/$2, before the archive's newest WAL segment: a segment is missing or damaged" >&2
      tail -n 20 /tmp/pg.log >&2; exit 6
    fi
  fi
fi
echo "REACHED $reached"
# the checkpoint that makes the restored data durable (its writes and fsyncs, the untarred files' too) runs beside
# the row counts and the mark, whose reads it overlaps: the clean stop after them has next to nothing left to write
$as psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$ADMIN" -d "$DB" -c CHECKPOINT >/tmp/checkpoint.log 2>&1 &
ckpt=$!
$as psql -X -A -t -F ' ' -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$ADMIN" -d "$DB" -c "$COUNTS" | sed 's/^/COUNT /'
$as psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$ADMIN" -d "$DB" -c "$MARK"
wait $ckpt || { echo "the checkpoint failed: $(tail -n 3 /tmp/checkpoint.log)" >&2; exit 7; }
$as pg_ctl -D "$P" stop -m fast -w -t 120 >/dev/null
grep -E 'redo starts|recovery stopping|last completed transaction|redo done|selected new timeline|ready to accept|checkpoint starting|checkpoint complete|system is shut down' /tmp/pg.log | sed 's/^/LOG /' || true"""

# every table's exact row count (query_to_xml: one statement, no function to create)
_COUNTS = ("SELECT n.nspname || '.' || c.relname, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c "
           "FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text FROM pg_class c JOIN pg_namespace n ON "
           "n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', "
           "'information_schema') AND n.nspname !~ '^pg_toast' ORDER BY 1")


def read_archive(engine: Engine, image: str, repository: str, lineage: str, running: bool, *,
                 label: str, owner: str | None, offsite_running: bool = False) -> ArchiveFacts:
    """The facts of `lineage` in the repository volume `repository` (absent volume: no facts)."""
    argv = ["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", "sh",
            "--label", f"{names.LABEL_MANAGED}=true", "--label", f"{HELPER_LABEL}={label}",
            *(["--label", f"{names.LABEL_OWNER}={owner}"] if owner else []),
            "--volume", f"{repository}:{REPOSITORY_PATH}:ro",
            "--tmpfs", "/var/lib/postgresql/data",  # the image's VOLUME: no anonymous volume made per read
            image, "-c", _READ, "read",
            f"{REPOSITORY_PATH}/{lineage}"]
    result = engine.compose.runner.run(argv, timeout=120)
    if result.returncode != 0:
        raise CommandFailed(argv[:-3], result.returncode, result.stderr, hint=f"read the archive in {repository}")
    return parse_read(result.stdout, lineage, running=running, offsite_running=offsite_running)


def read_running(engine: Engine, container: str, lineage: str, *, offsite_running: bool = False) -> ArchiveFacts:
    """The facts of `lineage` read inside the running archiver `container` (an exec: no container to create)."""
    argv = ["docker", "exec", container, "sh", "-c", _READ, "read", f"{REPOSITORY_PATH}/{lineage}"]
    for _ in range(3):  # an exec that never started ran nothing: it is sent again
        result = engine.compose.runner.run(argv, timeout=60)
        if not exec_not_started(result.returncode, result.stderr):
            break
    if result.returncode != 0:
        raise CommandFailed(argv[:4], result.returncode, result.stderr, hint=f"read the archive in {container}")
    return parse_read(result.stdout, lineage, running=True, offsite_running=offsite_running)


def parse_read(stdout: str, lineage: str, *, running: bool, offsite_running: bool) -> ArchiveFacts:
    """_READ's output (status.json, offsite.json and each base's backup_info between `=== ` markers) as facts."""
    status: str | None = None
    offsite: str | None = None
    space: tuple[int | None, int | None] = (None, None)
    infos: dict[str, str] = {}
    for part in stdout.split("=== ")[1:]:
        head, _, body = part.partition("\n")
        if head == "status":
            status = body.strip()
        elif head == "offsite":
            offsite = body.strip()
        elif head == "df":
            space = archiving.parse_df(body)
        elif head.startswith("base "):
            infos[head.removeprefix("base ").strip()] = body
    return ArchiveFacts(lineage=lineage, running=running, status_text=status, infos=infos,
                        offsite_running=offsite_running, offsite_text=offsite,
                        repository_free_bytes=space[0], repository_size_bytes=space[1])


def create_volume(engine: Engine, project_name: str, key: str, labels: Mapping[str, str], owner: str | None) -> str:
    """Create the project's volume of compose key `key` with the labels compose gives it (so that `up` takes it as
    its own) and the owner's; its name. ProvisionError when it exists already."""
    name = f"{project_name}_{key}"
    if engine.compose.labelled_volumes(f"{COMPOSE_VOLUME_LABEL}={key}", f"{COMPOSE_PROJECT_LABEL}={project_name}"):
        raise ProvisionError(f"volume {name} exists already: nothing was restored into it")
    argv = ["docker", "volume", "create"]
    for label, value in {**labels, COMPOSE_PROJECT_LABEL: project_name, COMPOSE_VOLUME_LABEL: key,
                         **({names.LABEL_OWNER: owner} if owner else {})}.items():
        argv += ["--label", f"{label}={value}"]
    result = engine.compose.runner.run([*argv, "--", name], timeout=60)
    if result.returncode != 0:
        raise CommandFailed([*argv, "--", name], result.returncode, result.stderr, hint=f"create volume {name}")
    return name


def restore(engine: Engine, request: RestoreRequest, *, repository: str, volume: str, label: str,
            owner: str | None) -> Restored:
    """Run the one-off restore of `request` into `volume` (empty, made by `create_volume`), the repository
    `repository` mounted read-only; what it reached and the row counts. CommandFailed with PostgreSQL's log tail
    when recovery fails; the container is removed in any case."""
    container = f"{volume}-restore-{int(time.time())}"
    argv = ["docker", "run", "--rm", "--name", container, "--network", "none", "--user", "0:0",
            "--entrypoint", "sh", "--label", f"{names.LABEL_MANAGED}=true", "--label", f"{HELPER_LABEL}={label}",
            *(["--label", f"{names.LABEL_OWNER}={owner}"] if owner else []),
            "--volume", f"{volume}:/var/lib/postgresql/data", "--volume", f"{repository}:{REPOSITORY_PATH}:ro",
            "-e", f"LINEAGE={request.lineage}", "-e", f"BASE={request.base}", "-e", f"TARGET={pg_time(request.target)}",
            "-e", f"XID={request.target_xid or ''}",
            "-e", f"ADMIN={request.admin}", "-e", f"DB={request.dbname}", "-e", f"MARK={request.mark_sql}",
            "-e", f"COUNTS={_COUNTS}", "-e", f"WAIT={int(request.timeout)}", request.image, "-c", _RESTORE]
    started = time.monotonic()
    try:
        result = engine.compose.runner.run(argv, timeout=request.timeout + 120)
    finally:
        with contextlib.suppress(ProvisionError):  # a run that timed out leaves its container: it goes
            engine.compose.runner.run(["docker", "rm", "-f", container], timeout=60)
    if result.returncode != 0:
        raise CommandFailed(["docker", "run", "...", request.image, "restore"], result.returncode,
                            result.stdout[-2000:] + result.stderr[-4000:],
                            hint="restore the archive into a new volume (PostgreSQL's log above)")
    counts: dict[str, int] = {}
    reached, log = "", []
    for line in result.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "COUNT" and " " in rest:
            table, _, number = rest.rpartition(" ")
            counts[table] = int(number) if number.isdigit() else 0
        elif kind == "REACHED":
            reached = rest.strip()
        elif kind == "LOG":
            log.append(rest.strip())
    return Restored(volume=volume, reached=reached, row_counts=counts, log=tuple(log),
                    duration=time.monotonic() - started)


def facts(engine: Engine, data: DataVolumes, target: Target, observed: Observed, lineage: str, *,
          archiver: str | None = None) -> ArchiveFacts:
    """`Archives.archive_facts` on the local engine: read inside the running `archiver` container when there is
    one, else the repository volume read with a throwaway container of the db image."""
    running = bool((service := observed.services.get("archiver")) and service.running)
    offsite_running = bool((offsite := observed.services.get("offsite")) and offsite.running)
    if archiver is not None:
        return read_running(engine, archiver, lineage, offsite_running=offsite_running)
    repository = data.find(REPOSITORY_VOLUME)
    if repository is None:
        return ArchiveFacts(lineage=lineage, running=running, status_text=None, offsite_running=offsite_running)
    return read_archive(engine, target.images.db, repository, lineage, running,
                        label=f"{target.env}/{target.project}", owner=target.config.owner,
                        offsite_running=offsite_running)


def restore_into(engine: Engine, data: DataVolumes, into: DataVolumes, target: Target, volume_key: str,
                 request: RestoreRequest) -> Restored:
    """`Archives.restore_archive` on the local engine: a new labelled volume of `into` (the project `target`), then
    the one-off restore from the archive of `data`'s project."""
    repository = data.find(REPOSITORY_VOLUME)
    if repository is None:
        raise ProvisionError(f"the archive volume ({REPOSITORY_VOLUME}) of {data.project_name} is missing: is "
                             f"backup.continuous on?")
    volume = create_volume(engine, into.project_name, volume_key, volume_labels_of(target.config, target.spec),
                           target.config.owner)
    return restore(engine, request, repository=repository, volume=volume, label=f"{target.env}/{target.project}",
                   owner=target.config.owner)
