"""Continuous archiving's scripts and what they print (pure): the restore script (templates/restore.sh, the local
one-off container's and the Coolify stack's one-shot `restore` service's), the script that reads a lineage of the
repository, the row counts a restore reads, the one-shot service's command and where it leaves its report, and the
parsing of their output into facts (core/archiving.py reads those into a window and a health)."""

from __future__ import annotations

from pathlib import Path

from .archiving import REPOSITORY_PATH, ArchiveFacts, parse_df

# the restore script (the local one-off container's and the Coolify stack's one-shot `restore` service's)
RESTORE_SCRIPT = Path(__file__).resolve().parent.parent / "templates" / "restore.sh"
# reads one lineage of the repository (its directory: $1): status.json, offsite.json, then each complete base's
# backup_info, between `=== ` markers (parse_read)
READ_SCRIPT = r"""D="$1"
if [ -f "$D/status.json" ]; then echo '=== status'; cat "$D/status.json"; fi
if [ -f "$D/offsite.json" ]; then echo '=== offsite'; cat "$D/offsite.json"; fi
echo '=== df'; df -Pk "${D%/*}" | tail -n 1
for b in $(ls "$D/base" 2>/dev/null | grep -v '^tmp-'); do
  [ -f "$D/base/$b/backup_info" ] && { echo "=== base $b"; cat "$D/base/$b/backup_info"; }
done
exit 0"""
# every table's exact row count (query_to_xml: one statement, no function to create)
COUNTS_SQL = ("SELECT n.nspname || '.' || c.relname, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c "
           "FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text FROM pg_class c JOIN pg_namespace n ON "
           "n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', "
           "'information_schema') AND n.nspname !~ '^pg_toast' ORDER BY 1")

# the one-shot `restore` service's command (Coolify's restore --to-time, rendered while the record asks for it): the
# restore script once into the empty new data volume, its output and exit code kept in the repository beside the
# lineages (RESTORE_OUTCOME), where a task in the archiver reads them; a volume restored already is left alone (a
# restart of the stack before the service is dropped runs it again)
RESTORE_OUTCOME = f"{REPOSITORY_PATH}/.provision/restore-"  # + the new volume's key: .log, .rc, .done
RESTORE_START = (f'O="{RESTORE_OUTCOME}$RESTORE_KEY"; mkdir -p {REPOSITORY_PATH}/.provision; '
                 'if [ -f "$O.done" ] && [ -f /var/lib/postgresql/data/PG_VERSION ]; then '
                 'echo "restored already ($O.done)"; exit 0; fi; rm -f "$O.rc" "$O.done"; '
                 'sh -c "$RESTORE_SCRIPT" >"$O.log" 2>&1; rc=$?; cat "$O.log"; echo "$rc" >"$O.rc"; '
                 'if [ "$rc" -eq 0 ]; then touch "$O.done"; fi; exit "$rc"')


def parse_read(text: str, lineage: str, running: bool, *, offsite_running: bool = False) -> ArchiveFacts:
    """The facts READ_SCRIPT printed for `lineage` (`running`: whether the archiver container runs now)."""
    status: str | None = None
    offsite: str | None = None
    space: tuple[int | None, int | None] = (None, None)
    infos: dict[str, str] = {}
    for part in text.split("=== ")[1:]:
        head, _, body = part.partition("\n")
        if head == "status":
            status = body.strip()
        elif head == "offsite":
            offsite = body.strip()
        elif head == "df":
            space = parse_df(body)
        elif head.startswith("base "):
            infos[head.removeprefix("base ").strip()] = body
    return ArchiveFacts(lineage=lineage, running=running, status_text=status, infos=infos,
                        offsite_running=offsite_running, offsite_text=offsite,
                        repository_free_bytes=space[0], repository_size_bytes=space[1])


def parse_restored(text: str) -> tuple[str, dict[str, int], list[str]]:
    """What the restore script printed: how recovery ended (REACHED), the row counts (COUNT), recovery's log (LOG)."""
    counts: dict[str, int] = {}
    reached, log = "", []
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "COUNT" and " " in rest:
            table, _, number = rest.rpartition(" ")
            counts[table] = int(number) if number.isdigit() else 0
        elif kind == "REACHED":
            reached = rest.strip()
        elif kind == "LOG":
            log.append(rest.strip())
    return reached, counts, log
