"""Continuous archiving's scripts and what they print (pure): the restore script (templates/restore.sh, the local
one-off container's and the Coolify stack's one-shot `restore` service's), the script that reads a lineage of the
repository, the row counts a restore reads, the one-shot service's command and where it leaves its report, and the
parsing of their output into facts (core/archiving.py reads those into a window and a health)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# --- restore drills in the archiver (Coolify's verify) -------------------------------------------------------------
# the drill script (templates/drill.sh), started in the background in the archiver by one short task; its report is
# left as DRILL_OUTCOME + token + .log/.rc in the repository
DRILL_SCRIPT = Path(__file__).resolve().parent.parent / "templates" / "drill.sh"
DRILL_OUTCOME = f"{REPOSITORY_PATH}/.provision/drill-"
# the drill's checks in the restored copy (psql -A -t, variables `token` and `owner`), one prefixed line each: FOUND
# (the marker rows of the token), SAMPLE (each table the marker's sample names, read again as the owner role by the
# same function: service/drills.py _MARK), AMCHECK (btree indexes checked), HEAP (heap problems amcheck found)
DRILL_CHECKS = r"""SELECT to_regclass('provision_drill.marks') IS NOT NULL AS has_marks \gset
\if :has_marks
SELECT 'FOUND ' || count(*) FROM provision_drill.marks WHERE token = :'token';
SET ROLE :"owner";
SELECT 'SAMPLE ' || e.k || ' ' || provision_drill.sample(e.k::regclass, (e.v->>'pct')::float8)::text
  FROM provision_drill.marks m, jsonb_each(m.sample) AS e(k, v) WHERE m.token = :'token' ORDER BY e.k;
RESET ROLE;
\else
SELECT 'FOUND 0';
\endif
CREATE EXTENSION IF NOT EXISTS amcheck;
SELECT 'AMCHECK ' || count(bt_index_check(c.oid)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence = 'p' AND i.indisvalid
  AND i.indisready;
SELECT 'HEAP ' || count(*) FROM pg_class c, LATERAL verify_heapam(c.oid)
  WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence = 'p';"""


@dataclass(frozen=True)
class DrillRequest:
    """A drill's restore in the archiver: `token` (the marker's, also the scratch directory's and report's name),
    from `base` of `lineage`, up to and including transaction `xid` or to `target` (recovery_target_time's form; both
    empty: the archive's end), recovery given `wait` seconds."""

    token: str
    lineage: str
    base: str
    xid: int | None
    target: str
    wait: int


@dataclass(frozen=True)
class DrillReport:
    """What a drill in the archiver found in its restored copy: how recovery ended, every table's row count, how
    many marker rows of the token (None: not checked), each sampled table's sample read again, btree indexes
    checked and heap problems amcheck reported (None: not reported), recovery's log lines."""

    reached: str
    row_counts: Mapping[str, int]
    found: int | None
    samples: Mapping[str, Mapping[str, Any]]
    indexes_checked: int | None
    heap_problems: int | None
    log: tuple[str, ...] = ()


def parse_drill(text: str) -> DrillReport:
    """A drill's report (drill.sh's log): restore.sh's lines and the checks' (DRILL_CHECKS)."""
    reached, counts, log = parse_restored(text)
    found: int | None = None
    indexes: int | None = None
    heap: int | None = None
    samples: dict[str, Mapping[str, Any]] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "FOUND" and rest.strip().isdigit():
            found = int(rest)
        elif kind == "AMCHECK" and rest.strip().isdigit():
            indexes = int(rest)
        elif kind == "HEAP" and rest.strip().isdigit():
            heap = int(rest)
        elif kind == "SAMPLE" and " " in rest:
            table, _, sample = rest.rpartition(" {")
            with suppress(ValueError):
                samples[table] = json.loads("{" + sample)
    return DrillReport(reached=reached, row_counts=counts, found=found, samples=samples, indexes_checked=indexes,
                       heap_problems=heap, log=tuple(log))
