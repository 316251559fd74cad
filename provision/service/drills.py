"""`verify`: restore drills of the continuous archive (issue 22). A drill proves end to end that a project's archive
restores, and never says ok for less:

1. a marker row is written into the running database (`provision_drill.marks`, a schema of its own, which the API's
   schemas do not expose; the owner role's, so that its dumps read it), with a sample read in the same transaction:
   up to three tables, each locked against writes for that moment, their exact row counts and the checksum of a
   page sample; the marker is then awaited in the archive (its latest recoverable moment passes the marker's commit);
2. the archive is restored into a throwaway project with a stack of its own (clone --at's path, archiving off), up
   to and including the marker's transaction (or to `at`), which must start and answer: PostgreSQL promoted, the
   API probed by provision's own wait;
3. in it, the marker must be there (unless `at` is before it), the sample must match exactly (the copy stopped at
   the marker's commit, while the sampled tables took no writes), every table must read to its end (exact row
   counts), and amcheck must report nothing in any btree index or table (`bt_index_check`, `verify_heapam`);
4. the throwaway is removed with its data, whatever happened.

On Coolify (DrillsInStack: no one-off container, and a changed compose recreates every container of the stack) the
drill runs in the stack's archiver instead, started by one short task: steps 2-4 happen there, on a scratch directory
of the repository volume and a server on a socket of its own (templates/drill.sh), beside the running db and api,
which it never touches; what it found is compared here with what was sampled.

The result, with its duration and the restore's share, is the project's history line (action `verify`, result
ok or failed with the reason); `backups` shows the last one, or that none ran."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..backends.base import DrillsInStack, RestoresArchive
from ..core import archiving
from ..core.archive_scripts import DrillRequest
from ..core.errors import CommandFailed, ConfigError, ProvisionError
from ..core.model import Observed, Target
from ..core.results import ProjectResult
from ..core.roles import Roles
from ..infra.clock import utc_stamp
from ..infra.database import quote_literal
from ..infra.probes import http_probe
from ..state import history

if TYPE_CHECKING:
    from . import Provisioner

ACTION = "verify"
NO_ARCHIVING = {"backup": "{continuous: false}"}  # the throwaway's env override: it archives nothing
# the marker, written as the owner role with a sample of the database beside it: up to SAMPLED_TABLES tables (a
# random pick among those of at most SAMPLE_TABLE_PAGES pages, else the smallest), each locked against writes
# (SHARE, lock_timeout 2 s; one that cannot be locked is left out) while its exact row count and the checksum of
# a page sample (TABLESAMPLE SYSTEM, a fixed seed: the same pages in a physical copy) are read; the marker's
# transaction id is where the drill's restore stops, so the copy must hold exactly what was sampled
SAMPLED_TABLES = 3
SAMPLE_TABLE_PAGES = 8192  # 64 MiB: a table locked for its count no longer than a moment
_MARK = """CREATE SCHEMA IF NOT EXISTS provision_drill;
CREATE TABLE IF NOT EXISTS provision_drill.marks (token text PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
ALTER TABLE provision_drill.marks ADD COLUMN IF NOT EXISTS xid bigint, ADD COLUMN IF NOT EXISTS sample jsonb;
CREATE OR REPLACE FUNCTION provision_drill.sample(t regclass, pct float8) RETURNS jsonb LANGUAGE plpgsql AS $f$
DECLARE n bigint; h text;
BEGIN
  EXECUTE format('SELECT count(*) FROM %s', t) INTO n;
  EXECUTE format('SELECT md5(coalesce(string_agg(r::text, chr(10) ORDER BY r::text), '''')) '
                 'FROM %s AS r TABLESAMPLE SYSTEM (%s) REPEATABLE (22)', t, pct) INTO h;
  RETURN jsonb_build_object('rows', n, 'pct', pct, 'md5', h);
END $f$;
CREATE OR REPLACE FUNCTION provision_drill.mark(p_token text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE r record; taken jsonb := '{}'; stamp timestamptz;
BEGIN
  PERFORM set_config('lock_timeout', '2s', true);
  FOR r IN SELECT c.oid::regclass AS t, greatest(c.relpages, 1) AS pages FROM pg_class c
      JOIN pg_namespace s ON s.oid = c.relnamespace
      WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND s.nspname NOT IN ('information_schema', 'provision_drill')
        AND s.nspname !~ '^pg_' AND has_table_privilege(c.oid, 'SELECT, UPDATE')
      ORDER BY c.relpages > __PAGES__, CASE WHEN c.relpages > __PAGES__ THEN c.relpages END, random()
      LIMIT __TABLES__ LOOP
    BEGIN
      EXECUTE format('LOCK TABLE %s IN SHARE MODE', r.t);
    EXCEPTION WHEN lock_not_available THEN CONTINUE;
    END;
    taken := taken || jsonb_build_object(r.t::text, provision_drill.sample(r.t, least(100, 4000.0 / r.pages)));
  END LOOP;
  INSERT INTO provision_drill.marks (token, xid, sample) VALUES (p_token, txid_current() % 4294967296, taken)
    RETURNING marks.at INTO stamp;
  RETURN jsonb_build_object('at', to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                            'xid', txid_current() % 4294967296, 'sample', taken)::text;
END $f$;
DELETE FROM provision_drill.marks WHERE at < now() - interval '30 days';
SELECT provision_drill.mark('{token}');
""".replace("__PAGES__", str(SAMPLE_TABLE_PAGES)).replace("__TABLES__", str(SAMPLED_TABLES))
# the same sample read in the restored copy: one `<table> <json>` line per sampled table
_RESAMPLE = "SELECT provision_drill.sample({table}, {pct});\n"
_FOUND = "SELECT count(*) FROM provision_drill.marks WHERE token = '{token}';\n"
# amcheck on every permanent btree index and table: one line per problem found (none: a clean database)
_AMCHECK = ("CREATE EXTENSION IF NOT EXISTS amcheck;\n"
            "SELECT count(bt_index_check(c.oid)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence = 'p' "
            "AND i.indisvalid AND i.indisready;\n"
            "SELECT count(*) FROM pg_class c, LATERAL verify_heapam(c.oid) "
            "WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence = 'p';\n")


class Drills:
    """Restore drills of `source`'s projects into throwaway projects of `throwaway` (the same env, archiving
    off); `wall`/`sleep`: the clock the marker is awaited on."""

    def __init__(self, source: Provisioner, throwaway: Provisioner, *,
                 wall: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.source = source
        self.throwaway = throwaway
        self.wall = wall
        self.sleep = sleep

    def verify(self, project: str, *, at: str | None = None) -> ProjectResult:
        """One drill of `project` (see the module); its result, also written as the project's history line.
        ConfigError, before anything runs, when archiving is off for it or `at` does not parse."""
        engine = self.source.engine
        target = engine.known_target(project)
        if not target.spec.backup.continuous:
            raise ConfigError(f"verify: {project!r} in env {target.env!r} has no continuous archive to drill: set "
                              f"{target.spec.key('backup.continuous')}: true in {engine.config.relpath}")
        # a drill restores into a throwaway project (local), or in the stack's archiver (Coolify): refused first
        in_stack = None if isinstance(engine.backend, RestoresArchive) else engine.capability(DrillsInStack, target)
        moment = None
        if at is not None:
            try:
                moment = archiving.parse_time(at, datetime.now(UTC))
            except ValueError as exc:
                raise ConfigError(f"--at: {exc}") from None
        started = self.wall()
        name = f"{project}-drill-{utc_stamp().lower()}"[:63]
        found: dict[str, object] = {}
        try:
            if in_stack is None:
                found = self._drill(project, name, moment)
                where, answered = "into a throwaway stack", ", api answered"
            else:
                found = self._drill_in_stack(project, in_stack, moment)
                where, answered = "in the archiver's scratch directory", ""
            result, detail = "ok", (f"restored {found['to']} {where} in {found['restore_s']:.1f} s "
                                    f"and checked it: marker {found['marker']}, {found['tables']} tables, "
                                    f"{found['rows']} rows, amcheck clean{answered}")
        except ProvisionError as exc:
            result, detail = "failed", str(exc).splitlines()[0]
        finally:
            removed = self._remove(name) if in_stack is None else True
        duration = self.wall() - started
        history.record(engine.store.root, env=target.env, project=project, action=ACTION, config_hash=None,
                       result=result, duration=duration, backend=engine.backend.name, detail=detail)
        messages = (f"drill {result}: {detail}", "the drill removed its scratch copy in the archiver"
                    if in_stack is not None else f"the throwaway {name!r} was removed" if removed else
                    f"the throwaway {name!r} could not be removed: destroy it with --delete-data")
        return ProjectResult(project=project, env=target.env, backend=engine.backend.name,
                             status="verified" if result == "ok" else "failed", changed=True, action=ACTION,
                             declared=target.spec.declared, messages=messages, duration=duration,
                             details={"result": result, "detail": detail,
                                      "throwaway": name if in_stack is None else None, **found})

    def _mark(self, project: str, moment: datetime | None
              ) -> tuple[str, dict[str, Any], datetime | None, bool, int | None]:
        """Step 1: the marker and the sample written, then awaited in the archive; its token, what it wrote, its
        commit's time, whether the restore must find it, and the xid to stop at (None: `moment`)."""
        engine = self.source.engine
        target = engine.known_target(project)
        token = secrets.token_hex(8)
        observed = engine.observe(target, engine.record(project))
        # as the owner role: its schema is then the owner's, so its own dumps (backup, clone) can read it
        written = engine.sql(target).run_sql(target, observed, _MARK.replace("{token}", token),
                                             user=Roles.of(target.spec.variables).owner,
                                             purpose="verify").strip().splitlines()
        mark = json.loads(written[-1]) if written else {}
        marked = datetime.fromisoformat(str(mark["at"]).replace("Z", "+00:00")) if mark else None
        wanted = marked is not None and (moment is None or moment >= marked)
        if wanted and marked is not None:
            self._await_archive(project, marked)
        # no time asked: up to and including the marker's commit, where the sample was read
        xid = int(mark["xid"]) if mark and moment is None else None
        return token, mark, marked, wanted, xid

    def _drill_in_stack(self, project: str, drills: DrillsInStack, moment: datetime | None) -> dict[str, object]:
        """Steps 2-4 in the stack's archiver (DrillsInStack), its findings compared here with the marker's sample."""
        engine = self.source.engine
        target = engine.known_target(project)
        token, mark, marked, wanted, xid = self._mark(project, moment)
        goal = moment if xid is None else marked
        status = self.source.archive.status(project).status
        base = archiving.base_for(goal, status.bases) if status is not None else None
        if status is None or base is None:
            raise ProvisionError(f"no base backup of {project!r} ends before {archiving.iso(goal) or 'now'}")
        shown = archiving.iso(moment) or (f"to the marker's commit (xid {xid})" if xid is not None else "to its end")
        engine.reporter.step(project, f"restoring its archive ({shown}) in its archiver, into a scratch directory")
        request = DrillRequest(token=token, lineage=status.lineage, base=base.name, xid=xid,
                               target="" if xid is not None else archiving.pg_time(moment),
                               wait=int(max(600.0, engine.config.health.timeout)))
        started = self.wall()
        try:
            report = drills.drill_archive(target, engine.observe(target, engine.record(project)), request,
                                          timeout=request.wait + 300.0)
        except CommandFailed as exc:  # the history line says the drill's own last words, not only its exit code
            said = [line.strip() for line in exc.stderr_tail.splitlines() if line.strip()]
            raise ProvisionError(f"the drill in the archiver failed (exit {exc.returncode}): "
                                 f"{said[-1] if said else 'it said nothing'}") from exc
        took = self.wall() - started
        if wanted and report.found != 1:
            raise ProvisionError(f"the marker written at {archiving.iso(marked)} is not in the restored database: "
                                 f"the archive does not reach what it says it does")
        if not report.row_counts or (wanted and "provision_drill.marks" not in report.row_counts):
            # restore.sh's row counts are one statement: a table that does not read leaves none at all
            raise ProvisionError("the restored database's tables did not all read to their end: no row counts")
        sampled = dict(mark.get("sample") or {}) if xid is not None else {}
        mismatch = _compare(sampled, report.samples)
        if mismatch:
            raise ProvisionError(f"the restored database differs from what was sampled at the marker: {mismatch}")
        if report.indexes_checked is None or report.heap_problems != 0:
            raise ProvisionError(f"amcheck found corruption in the restored database: {report.heap_problems} heap "
                                 f"problems reported" if report.heap_problems else
                                 "amcheck reported nothing: the drill's checks did not run to their end")
        return {"to": (f"the marker's commit (xid {xid})" if xid is not None else archiving.iso(moment))
                or "the archive's end", "marker": "found" if wanted else "not asked",
                "sampled_tables": len(sampled), "sampled_rows": sum(int(v["rows"]) for v in sampled.values()),
                "tables": len(report.row_counts), "rows": sum(report.row_counts.values()),
                "restore_s": round(took, 3), "indexes_checked": report.indexes_checked}

    def _drill(self, project: str, name: str, moment: datetime | None) -> dict[str, object]:
        engine = self.source.engine
        target = engine.known_target(project)
        wanted_roles = Roles.of(target.spec.variables)
        admin, owner = wanted_roles.admin, wanted_roles.owner
        token, mark, marked, wanted, xid = self._mark(project, moment)
        shown = archiving.iso(moment) or (f"to the marker's commit (xid {xid})" if xid is not None else "to its end")
        engine.reporter.step(project, f"restoring its archive ({shown}) into the throwaway project {name!r}")
        at = archiving.iso(moment) or (archiving.iso(marked) if xid is not None else None) or "latest"
        made = self.source.archive.clone(project, at, name,
                                         lambda copy: self.throwaway.provision(copy, create=True),
                                         lambda copy: self.throwaway.destroy(copy, delete_data=True, yes=True,
                                                                             backup=False), xid=xid)
        copy = self.throwaway.engine.known_target(name)
        api = self.throwaway.outputs(name).api_url or ""
        failure = http_probe(api, timeout=10)() if api else "no api_url"
        if failure is not None:
            raise ProvisionError(f"the restored stack's api does not answer: {failure}")
        seen = self.throwaway.engine.observe(copy, self.throwaway.engine.record(name))
        runs = self.throwaway.engine.sql(copy)
        present = runs.run_sql(copy, seen, _FOUND.format(token=token), user=admin, purpose="verify").split()
        if wanted and present != ["1"]:
            raise ProvisionError(f"the marker written at {archiving.iso(marked)} is not in the restored database: "
                                 f"the archive does not reach what it says it does")
        sampled = dict(mark.get("sample") or {}) if xid is not None else {}
        mismatch = self._resample(copy, seen, sampled, owner)
        if mismatch:
            raise ProvisionError(f"the restored database differs from what was sampled at the marker: {mismatch}")
        problems = runs.run_sql(copy, seen, _AMCHECK, user=admin, timeout=1800, purpose="verify").split()
        if len(problems) != 2 or problems[1] != "0":
            raise ProvisionError(f"amcheck found corruption in the restored database: {' '.join(problems)[:200]}")
        counts = dict(made.details.get("row_counts") or {})
        return {"to": (f"the marker's commit (xid {xid})" if xid is not None else made.details.get("at"))
                or "the archive's end", "marker": "found" if wanted else "not asked",
                "sampled_tables": len(sampled), "sampled_rows": sum(int(v["rows"]) for v in sampled.values()),
                "tables": len(counts), "rows": sum(int(n) for n in counts.values()),
                "restore_s": round(made.duration, 3), "indexes_checked": int(problems[0])}

    def _resample(self, copy: Target, seen: Observed, sampled: Mapping[str, Any], owner: str) -> str | None:
        """The sample read again in the restored copy (row counts, the page sample's checksum); a phrase naming
        the first table that differs, None when all match."""
        if not sampled:
            return None
        runs = self.throwaway.engine.sql(copy)
        sql = "".join(_RESAMPLE.format(table=quote_literal(table), pct=float(found["pct"]))
                      for table, found in sampled.items())
        lines = runs.run_sql(copy, seen, sql, user=owner, timeout=1800, purpose="verify").strip().splitlines()
        for (table, recorded), line in zip(sampled.items(), lines, strict=False):
            again = json.loads(line)
            if int(again["rows"]) != int(recorded["rows"]):
                return f"{table} has {again['rows']} rows, {recorded['rows']} were sampled"
            if again["md5"] != recorded["md5"]:
                return f"{table}'s page sample has checksum {again['md5']}, {recorded['md5']} was sampled"
        if len(lines) != len(sampled):
            return f"{len(lines)} of {len(sampled)} sampled tables could be read"
        return None

    def _await_archive(self, project: str, marked: datetime) -> None:
        """Until the archive's latest recoverable moment passes the marker's commit (its max_lag plus a minute)."""
        spec = self.source.engine.known_target(project).spec
        deadline = self.wall() + spec.backup.max_lag + 60
        while True:
            status = self.source.archive.status(project).status
            latest = status.window.latest if status is not None and status.window else None
            if latest is not None and latest >= marked + timedelta(microseconds=1):
                return
            if self.wall() > deadline:
                raise ProvisionError(f"the archive did not reach the marker written at {archiving.iso(marked)} "
                                     f"within {spec.backup.max_lag + 60:.0f} s (latest {archiving.iso(latest)})")
            self.sleep(1.0)

    def _remove(self, name: str) -> bool:
        if self.throwaway.record(name) is None and self.source.record(name) is None:
            return True
        with suppress(ProvisionError):
            self.throwaway.destroy(name, delete_data=True, yes=True, backup=False)
            return True
        return False



def _compare(sampled: Mapping[str, Any], again: Mapping[str, Any]) -> str | None:
    """The marker's sample against the same read in the restored copy: a phrase naming the first table that
    differs, or that could not be read; None when all match."""
    for table, recorded in sampled.items():
        found = again.get(table)
        if found is None:
            return f"{table} could not be read in the copy ({len(again)} of {len(sampled)} sampled tables were)"
        if int(found["rows"]) != int(recorded["rows"]):
            return f"{table} has {found['rows']} rows, {recorded['rows']} were sampled"
        if found["md5"] != recorded["md5"]:
            return f"{table}'s page sample has checksum {found['md5']}, {recorded['md5']} was sampled"
    return None
